"""Timing the inference paths: ultralytics' PyTorch and ONNX predict, and the edge runtime per precision.

Every path is loaded and called once before timing (lazy initialisation is not a per-frame
cost), then timed in rounds (a pass over the frames each, after `warmup` untimed frames per
path) taken in turns of a few frames per path (after one untimed frame: the switch between
paths costs cold caches and waking thread pools), the order flipped every turn: load on a shared
machine changes within seconds, and turns of ~a second spread it over all paths alike where
whole passes per path did not. The other processes' CPU share during each round is recorded.
The edge paths keep the pre / session.run / post split of every timed frame. It times; it does
not judge (see `report`).
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
ULTRA_SAME_FILE_PATH = "ultralytics ONNX predict (FP32, edge's file)"
EDGE_NO_SPIN_PATH = "edge FP32 (no ORT spin-wait)"


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
            self.skip -= 1  # an untimed warm-up call
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

    def warm(self, frames: Sequence[np.ndarray], n: int) -> None:
        """`n` untimed calls."""
        for i in range(n):
            if self.call is not None:
                self.call(frames[i % len(frames)])
            else:
                assert self.recorder is not None
                self.recorder.skip += 1
                self.recorder.detect_timed(frames[i % len(frames)])

    def time_turn(self, frames: Sequence[np.ndarray]) -> list[float]:
        """Per-frame milliseconds over `frames`, also kept in `samples`."""
        if self.kind == "edge":
            from edge.bench import measure

            r = self.recorder
            assert r is not None
            before = len(r.run)
            measure(r, frames, warmup=0, repeat=1)  # type: ignore[arg-type]
            own = [p + q + s for p, q, s in zip(r.pre[before:], r.run[before:], r.post[before:], strict=True)]
        else:
            assert self.call is not None
            own = []
            for f in frames:
                t0 = time.perf_counter()
                self.call(f)
                own.append((time.perf_counter() - t0) * 1e3)
        self.samples.extend(own)
        return own

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


def _ultralytics_onnx_lane(name: str, path: Path, threads: int, torch_threads: int, frame: np.ndarray) -> Lane:
    """`YOLO(path).predict` with its ONNX Runtime session rebuilt at `threads` intra-op threads."""
    import onnxruntime as ort
    from ultralytics import YOLO

    from vision.export import onnx_input_hw

    model = YOLO(str(path), task="detect")
    hw = list(onnx_input_hw(path))  # a static export runs only its own input size

    def call(f: np.ndarray) -> Any:
        return model.predict(f, imgsz=hw, device="cpu", verbose=False)

    lane = Lane(name, "callable", call=call, torch_threads=torch_threads)
    lane.notes.append(f"{path.name}: a {hw[1]}x{hw[0]} input")
    call(frame)  # builds the predictor and its ONNX Runtime session (default threads)
    try:
        backend = model.predictor.model.backend
        default_threads = _ort_threads_of(backend.session)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        backend.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        lane.notes.append(
            f"YOLO(onnx).predict builds its ONNX Runtime session with default options (intra_op_num_threads "
            f"{default_threads}, i.e. ORT's choice: one per physical core) and has no argument for it; "
            f"the session was rebuilt here with {threads} intra-op threads "
            f"(predictor.model.backend.session); its torch side ran with {torch_threads} thread(s), "
            "ultralytics' own choice (min(8, cpu_count - 1))"
        )
    except AttributeError as exc:  # ultralytics changed its internals: time it as it comes
        lane.notes.append(f"ORT threads NOT controlled ({exc}); ORT default threads used")
    return lane


def build_paths(models: dict[str, Path], imgsz: int, threads: int, frames: Sequence[np.ndarray]) -> list[Lane]:
    """The inference paths at `threads` threads, each loaded and run once.

    ultralytics' ONNX predict runs `models["ultralytics_fp32"]` (ultralytics' own square export)
    where given, else the edge's FP32 file; with both, the edge's file through ultralytics is
    timed too, for information.
    """
    from ultralytics import YOLO
    from ultralytics.utils import NUM_THREADS

    from edge.detector import Detector

    pt = YOLO(str(models["pt"]), task="detect")

    def pt_call(f: np.ndarray) -> Any:
        return pt.predict(f, imgsz=imgsz, device="cpu", verbose=False)

    paths = [Lane(PYTORCH_PATH, "callable", call=pt_call, torch_threads=threads)]
    # ultralytics' own setting for its torch-side pre/post work: select_device() sets
    # min(8, cpu_count - 1) torch threads; more than that oversubscribes the cores (torch's
    # OpenMP pool beside ORT's), so the baseline keeps ultralytics' choice, capped at n.
    ultra_torch = max(1, min(threads, NUM_THREADS))
    ultra_file = models.get("ultralytics_fp32", models["fp32"])
    onnx_path = _ultralytics_onnx_lane(ULTRA_ONNX_PATH, ultra_file, threads, ultra_torch, frames[0])
    paths.append(onnx_path)
    if ultra_torch < threads:  # informational: the same path with torch also at n threads
        paths.append(
            Lane(
                f"ultralytics ONNX predict (FP32, torch {threads} thr)",
                "callable",
                call=onnx_path.call,
                torch_threads=threads,
                notes=["info only: torch's and ORT's thread pools share the cores"],
            )
        )
    if ultra_file != models["fp32"]:  # informational: ultralytics on the very file the edge runs
        same = _ultralytics_onnx_lane(ULTRA_SAME_FILE_PATH, models["fp32"], threads, ultra_torch, frames[0])
        same.notes.insert(0, "info only: the edge's own FP32 file, so both run the same graph and input")
        paths.append(same)
    for precision in ("fp32", "int8", "fp16"):
        if precision in models:
            det = Detector(models[precision], threads=threads)
            paths.append(Lane(f"edge {precision.upper()}", "edge", recorder=_Recorder(det), torch_threads=threads))
    if threads > 1:  # informational: the setting for cores shared with other work
        det = Detector(models["fp32"], threads=threads, spin_wait=False)
        note = "info only: ONNX Runtime workers block instead of spin-waiting (ORT's default, used by the other paths)"
        paths.append(Lane(EDGE_NO_SPIN_PATH, "edge", recorder=_Recorder(det), torch_threads=threads, notes=[note]))
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
    turn_frames: int = 8,
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
    turns = range(0, len(frames), turn_frames)
    bar = tqdm(total=rounds * len(turns), desc=f"timing {threads} thread(s)", unit="turn", file=sys.stderr)
    for r in range(rounds):
        watch.start()
        for p in paths:
            torch.set_num_threads(p.torch_threads)
            p.warm(frames, warmup)
        own: dict[str, list[float]] = {p.name: [] for p in paths}
        seen: dict[str, set[int]] = {p.name: set() for p in paths}  # torch threads after its calls
        for k, start in enumerate(turns):
            order = paths if k % 2 == 0 else list(reversed(paths))  # alternate: no path always goes first
            for p in order:
                torch.set_num_threads(p.torch_threads)
                turn = frames[start : start + turn_frames]
                p.warm(turn, 1)  # untimed: the switch from another path (cold caches, idle pools) is not its cost
                own[p.name] += p.time_turn(turn)
                seen[p.name].add(torch.get_num_threads())
            bar.update()
        cpu = watch.stop()
        load.append(cpu.get("others_cpu_share"))
        for p in paths:
            p.rounds.append({**stats(own[p.name]), "torch_threads": max(seen[p.name]), "cpu": cpu, "round": r})
        bar.set_postfix_str(", ".join(f"{p.name}: {p.rounds[-1]['median_ms']:.1f}" for p in paths[:2]))
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
