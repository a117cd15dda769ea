"""Timing the inference paths: ultralytics' PyTorch and ONNX predict, and the edge runtime per precision.

Every path is loaded and called once before timing (lazy initialisation is not a per-frame
cost), then timed in interleaved rounds (every path once per round, in turn, the order
flipped every round) so a change of load on a shared machine hits them all alike; the other
processes' CPU share during each round is recorded. The edge paths keep the pre / session.run
/ post split of every timed frame. It times; it does not judge (see `report`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.benchmarks.machine import CpuWatch, wait_for_quiet

log = logging.getLogger(__name__)

PYTORCH_PATH = "ultralytics PyTorch predict"
ULTRA_ONNX_PATH = "ultralytics ONNX predict (FP32)"


def stats(ms: Sequence[float]) -> dict:
    """Frames, median, p95, mean (ms) and fps of per-frame latencies."""
    a = np.asarray(ms, dtype=float)
    return {
        "frames": int(a.size),
        "median_ms": round(float(np.median(a)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "fps": round(float(a.size / (a.sum() / 1e3)), 2),
    }


class _Recorder:
    """Stands in for a Detector inside edge.bench.measure and keeps every timed frame's split."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.skip = 0
        self.pre: list[float] = []
        self.run: list[float] = []
        self.post: list[float] = []

    def detect_timed(self, frame: np.ndarray) -> tuple[list, Any]:
        detections, t = self.detector.detect_timed(frame)
        if self.skip:
            self.skip -= 1  # measure()'s warm-up calls
        else:
            self.pre.append(t.pre_ms)
            self.run.append(t.run_ms)
            self.post.append(t.post_ms)
        return detections, t


@dataclass
class Lane:
    """One inference path under test at one thread count."""

    name: str
    kind: str  # "callable" (timed here) or "edge" (timed by edge.bench.measure)
    torch_threads: int = 1  # torch.set_num_threads before each of its rounds
    call: Callable[[np.ndarray], Any] | None = None
    recorder: _Recorder | None = None
    samples: list[float] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def time_round(self, frames: Sequence[np.ndarray], warmup: int) -> dict:
        if self.kind == "edge":
            from edge.bench import measure

            assert self.recorder is not None
            before = len(self.recorder.run)
            self.recorder.skip = warmup
            res = measure(self.recorder, frames, warmup=warmup, repeat=1)  # type: ignore[arg-type]
            r = self.recorder
            self.samples.extend(
                p + q + s for p, q, s in zip(r.pre[before:], r.run[before:], r.post[before:], strict=True)
            )
            return res.to_json()
        assert self.call is not None
        for i in range(warmup):
            self.call(frames[i % len(frames)])
        own = []
        for f in frames:
            t0 = time.perf_counter()
            self.call(f)
            own.append((time.perf_counter() - t0) * 1e3)
        self.samples.extend(own)
        return stats(own)

    def summary(self) -> dict:
        out = {**stats(self.samples), "rounds": self.rounds, "notes": self.notes}
        if self.recorder is not None:
            r = self.recorder
            prepost = [p + s for p, s in zip(r.pre, r.post, strict=True)]
            run_med = float(np.median(r.run))
            out.update(
                {
                    "pre_median_ms": round(float(np.median(r.pre)), 3),
                    "run_median_ms": round(run_med, 3),
                    "post_median_ms": round(float(np.median(r.post)), 3),
                    "prepost_median_ms": round(float(np.median(prepost)), 3),
                    "prepost_share_of_run": round(float(np.median(prepost)) / run_med, 4),
                }
            )
        return out


def bare_session_run(detector: Any, frames: Sequence[np.ndarray], warmup: int, repeat: int) -> dict:
    """`session.run` alone, back to back, on tensors preprocessed beforehand."""
    from edge.preprocess import preprocess

    tensors = [preprocess(f, detector.imgsz)[0] for f in frames]
    for i in range(warmup):
        detector.infer(tensors[i % len(tensors)])
    ms = []
    for _ in range(repeat):
        for t in tensors:
            t0 = time.perf_counter()
            detector.infer(t)
            ms.append((time.perf_counter() - t0) * 1e3)
    return stats(ms)


def _ort_threads_of(session: Any) -> int | None:
    try:
        return int(session.get_session_options().intra_op_num_threads)
    except Exception:  # noqa: BLE001 - informational only
        return None


def build_paths(models: dict[str, Path], imgsz: int, threads: int, frames: Sequence[np.ndarray]) -> list[Lane]:
    """The inference paths at `threads` threads, each loaded and run once."""
    import onnxruntime as ort
    from ultralytics import YOLO

    from edge.detector import Detector

    pt = YOLO(str(models["pt"]), task="detect")
    ultra_onnx = YOLO(str(models["fp32"]), task="detect")

    def pt_call(f: np.ndarray) -> Any:
        return pt.predict(f, imgsz=imgsz, device="cpu", verbose=False)

    def onnx_call(f: np.ndarray) -> Any:
        return ultra_onnx.predict(f, imgsz=imgsz, device="cpu", verbose=False)

    from ultralytics.utils import NUM_THREADS

    paths = [Lane(PYTORCH_PATH, "callable", call=pt_call, torch_threads=threads)]
    # ultralytics' own setting for its torch-side pre/post work: select_device() sets
    # min(8, cpu_count - 1) torch threads; more than that oversubscribes the cores (torch's
    # OpenMP pool beside ORT's), so the baseline keeps ultralytics' choice, capped at n.
    ultra_torch = max(1, min(threads, NUM_THREADS))
    onnx_path = Lane(ULTRA_ONNX_PATH, "callable", call=onnx_call, torch_threads=ultra_torch)
    onnx_call(frames[0])  # builds the predictor and its ONNX Runtime session (default threads)
    try:
        backend = ultra_onnx.predictor.model.backend
        default_threads = _ort_threads_of(backend.session)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        backend.session = ort.InferenceSession(str(models["fp32"]), options, providers=["CPUExecutionProvider"])
        onnx_path.notes.append(
            f"YOLO(onnx).predict builds its ONNX Runtime session with default options (intra_op_num_threads "
            f"{default_threads}, i.e. ORT's choice: one per physical core) and has no argument for it; "
            f"the session was rebuilt here with {threads} intra-op threads "
            f"(predictor.model.backend.session); its torch side ran with {ultra_torch} thread(s), "
            "ultralytics' own choice (min(8, cpu_count - 1))"
        )
    except AttributeError as exc:  # ultralytics changed its internals: time it as it comes
        onnx_path.notes.append(f"ORT threads NOT controlled ({exc}); ORT default threads used")
    paths.append(onnx_path)
    if ultra_torch < threads:  # informational: the same path with torch also at n threads
        paths.append(
            Lane(
                f"ultralytics ONNX predict (FP32, torch {threads} thr)",
                "callable",
                call=onnx_call,
                torch_threads=threads,
                notes=["info only: torch's and ORT's thread pools share the cores"],
            )
        )
    for precision in ("fp32", "int8", "fp16"):
        if precision in models:
            det = Detector(models[precision], threads=threads)
            paths.append(Lane(f"edge {precision.upper()}", "edge", recorder=_Recorder(det), torch_threads=threads))
    for p in paths:  # one untimed call each: lazy initialisation is not a per-frame cost
        p.call(frames[0]) if p.call else p.recorder.detector.detect_timed(frames[0])  # type: ignore[union-attr]
    return paths


def time_paths(
    models: dict[str, Path],
    imgsz: int,
    threads: int,
    frames: Sequence[np.ndarray],
    *,
    rounds: int,
    warmup: int,
    wait_idle_s: float = 0.0,
) -> dict:
    import cv2
    import torch

    cv2.setNumThreads(threads)
    paths = build_paths(models, imgsz, threads, frames)
    # Set per lane before every round: ultralytics' select_device() (run when a predictor is set
    # up) resets torch to min(8, cpu_count - 1) threads, i.e. 1 on a 2-core machine.
    quiet = wait_for_quiet(wait_idle_s) if wait_idle_s > 0 else None
    if quiet and not quiet["quiet"]:
        log.warning(
            "other processes still use %.0f%% of the CPUs after %.0fs; timing anyway",
            100 * (quiet["others_cpu_share_last"] or 0),
            quiet["waited_s"],
        )
    watch = CpuWatch()
    load = []
    bar = tqdm(total=rounds * len(paths), desc=f"timing {threads} thread(s)", unit="path", file=sys.stderr)
    for r in range(rounds):
        order = paths if r % 2 == 0 else list(reversed(paths))  # alternate order: no path always goes first
        for p in order:
            torch.set_num_threads(p.torch_threads)
            watch.start()
            res = p.time_round(frames, warmup)
            res["torch_threads"] = torch.get_num_threads()
            res["cpu"] = watch.stop()
            res["round"] = r
            p.rounds.append(res)
            load.append(res["cpu"].get("others_cpu_share"))
            bar.set_postfix_str(f"{p.name}: {res['median_ms']:.1f} ms")
            bar.update()
    bar.close()
    out: dict[str, Any] = {"threads": threads, "wait_idle": quiet, "paths": {}}
    for p in paths:
        out["paths"][p.name] = {**p.summary(), "torch_threads": sorted({r["torch_threads"] for r in p.rounds})}
    bare = {}
    for p in paths:
        if p.recorder is not None and p.name in ("edge FP32", "edge INT8"):
            bare[p.name.split()[-1]] = bare_session_run(p.recorder.detector, frames, warmup, rounds)
    out["bare_session_run"] = bare
    shares = [x for x in load if x is not None]
    out["others_cpu_share_max"] = max(shares) if shares else None
    return out
