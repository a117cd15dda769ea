"""Benchmark the edge detector against ultralytics' own inference paths, on one machine, in one run.

    python -m evaluation.bench_vision BCCD_DIR [--out DIR] [--epochs E] [--imgsz S] [--weights BEST.pt] [--json]

BCCD_DIR is a Pascal VOC tree (Annotations/, JPEGImages/, ImageSets/Main/{train,val,test}.txt).
One run:

1. imports it as a YOLO dataset under OUT/dataset (`vision.datasets.voc.import_voc`);
2. trains yolov8n from scratch on it (`vision.training.train_detector`), or registers --weights;
3. exports FP32, INT8 and FP16 ONNX (`vision.release.export_version`);
4. scores the .pt and the three ONNX variants on the TEST split (`evaluation.vision.evaluate_detector`);
5. times, at 1 and 2 threads, on the test images decoded once beforehand (warm-up excluded):
   (a) ultralytics PyTorch predict, (b) ultralytics' ONNX predict, (c/d/e) the edge runtime
   FP32 / INT8 / FP16 end to end (`edge.bench.measure`), plus bare `session.run` for FP32 and
   INT8 and the share of pre+post processing relative to session.run;
6. checks the targets: edge end-to-end ≤ 0.5× PyTorch predict at 2 threads, ≤ 0.8× ultralytics'
   ONNX predict, pre+post ≤ 10% of session.run, INT8 within 1 mAP50 point of FP32.

Paths are timed in interleaved rounds (every path once per round, in turn) so a change of
load on a shared machine hits them all alike; the other processes' CPU use during each round is
recorded. `n threads` means: ONNX Runtime intra-op threads n (the ultralytics ONNX session is
rebuilt with n threads, since `YOLO(onnx).predict` has no knob for it), cv2.setNumThreads(n), and
torch.set_num_threads(n) for the PyTorch path (re-applied before every round: ultralytics resets
it to min(8, cpu_count - 1) when a predictor is set up). The ultralytics ONNX path keeps
ultralytics' own torch setting for its torch-side pre/post (capped at n); the same path with
torch at n threads is timed too, for information, where that differs.

Everything (machine, versions, command line, per-round figures) goes to OUT/bench_vision.json,
a readable table to stdout (or the JSON with --json), progress to stderr. The registry and
metadata live in a LOOPLINE_HOME under OUT/home; nothing outside OUT is written. It does not
tune models or pick a production variant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

log = logging.getLogger("evaluation.bench_vision")

TARGET_VS_PYTORCH = 0.5  # edge end-to-end / ultralytics PyTorch predict, at 2 threads
TARGET_VS_ULTRA_ONNX = 0.8  # edge end-to-end / ultralytics ONNX predict
TARGET_PREPOST_SHARE = 0.10  # (pre + post) / session.run
TARGET_INT8_MAP50_DROP = 0.01  # one mAP50 point
DEFAULT_EPOCHS = (
    35  # 22-30 s/epoch at 320 on 2 shared cores (ultralytics trains with 1 torch thread there): ~20 min in all
)
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
VERSIONED = (
    "torch",
    "torchvision",
    "ultralytics",
    "onnxruntime",
    "onnx",
    "onnxslim",
    "numpy",
    "opencv-python",
    "opencv-python-headless",
    "mlflow",
)


# --- machine ---------------------------------------------------------------------------


def machine_info() -> dict:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = (s.strip() for s in line.split(":", 1))
                fields.setdefault(k, v)
        flags = set(fields.get("flags", "").split())
        info["cpu_model"] = fields.get("model name")
        info["cpu_flags"] = {f: f in flags for f in CPU_FLAGS}
        info["hypervisor"] = "hypervisor" in flags
        info["int8_note"] = (
            "VNNI present: ONNX Runtime can use int8 dot-product instructions"
            if {"avx512_vnni", "avx_vnni"} & flags
            else "no VNNI: INT8 convolutions often no faster than FP32 here"
        )
    except OSError:
        info["cpu_model"] = platform.processor() or None
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
        info["mem_total_gb"] = round(int(mem[1]) / 1e6, 1)
    except (OSError, IndexError, ValueError):
        pass
    return info


def versions() -> dict:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


class CpuWatch:
    """How busy the machine was with *other* processes between start() and stop()."""

    def __init__(self) -> None:
        self._t = self._busy = self._own = 0.0

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            parts = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
            vals = [int(x) for x in parts]
        except (OSError, ValueError):
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._t, self._busy = time.perf_counter(), self._machine_busy_s()
        t = os.times()
        self._own = t.user + t.system

    def stop(self) -> dict:
        wall = time.perf_counter() - self._t
        busy = self._machine_busy_s()
        t = os.times()
        own = t.user + t.system - self._own
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        out = {"wall_s": round(wall, 2), "own_cpu_s": round(own, 2)}
        if busy is not None and self._busy is not None and wall > 0:
            out["others_cpu_share"] = round(max(0.0, (busy - self._busy - own)) / (wall * (os.cpu_count() or cpus)), 3)
        out["loadavg_1m"] = round(os.getloadavg()[0], 2)
        return out


def wait_for_quiet(max_wait_s: float, *, threshold: float = 0.10, window_s: float = 3.0) -> dict:
    """Wait (up to max_wait_s) until other processes use at most `threshold` of the CPUs."""
    t0 = time.perf_counter()
    shares: list[float | None] = []
    while True:
        watch = CpuWatch()
        watch.start()
        time.sleep(window_s)
        share = watch.stop().get("others_cpu_share")
        shares.append(share)
        if share is None or share <= threshold or time.perf_counter() - t0 >= max_wait_s:
            break
    return {
        "waited_s": round(time.perf_counter() - t0, 1),
        "others_cpu_share_last": share,
        "quiet": share is not None and share <= threshold,
        "threshold": threshold,
    }


# --- dataset helpers --------------------------------------------------------------------


def split_images(data_yaml: Path, split: str) -> list[Path]:
    """Image files of a split of a YOLO data.yaml (a folder or a list file)."""
    import yaml

    cfg = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(cfg.get("path") or Path(data_yaml).parent)
    if not root.is_absolute():
        root = (Path(data_yaml).parent / root).resolve()
    entry = cfg.get(split)
    if not entry:
        raise ValueError(f"{data_yaml} has no '{split}' split; the benchmark times and scores on it")
    target = Path(entry) if Path(entry).is_absolute() else root / entry
    if target.is_file():
        lines = [ln.strip() for ln in target.read_text().splitlines() if ln.strip()]
        return [Path(ln) if Path(ln).is_absolute() else root / ln for ln in lines]
    exts = {".jpg", ".jpeg", ".png", ".bmp"}
    return sorted(p for p in target.rglob("*") if p.suffix.lower() in exts)


def decode(paths: Sequence[Path]) -> list[np.ndarray]:
    import cv2

    frames = [f for f in (cv2.imread(str(p)) for p in paths) if f is not None]
    if not frames:
        raise ValueError("none of the test images could be decoded")
    return frames


# --- timing -----------------------------------------------------------------------------


def stats(ms: Sequence[float]) -> dict:
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

    paths = [Lane("ultralytics PyTorch predict", "callable", call=pt_call, torch_threads=threads)]
    # ultralytics' own setting for its torch-side pre/post work: select_device() sets
    # min(8, cpu_count - 1) torch threads; more than that oversubscribes the cores (torch's
    # OpenMP pool beside ORT's), so the baseline keeps ultralytics' choice, capped at n.
    ultra_torch = max(1, min(threads, NUM_THREADS))
    onnx_path = Lane("ultralytics ONNX predict (FP32)", "callable", call=onnx_call, torch_threads=ultra_torch)
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


# --- the pipeline -----------------------------------------------------------------------


def register_weights(settings: Any, registry: Any, weights: Path, data_yaml: Path, imgsz: int) -> str:
    """Record given weights as a registry version so export_version can work on them."""
    from vision.registry import code_version
    from vision.training import model_dir

    mv = registry.record_training(
        params={"model": str(weights), "imgsz": imgsz, "data": str(data_yaml), "epochs": "external"},
        metrics={},
        weights=weights,
        tags={"imgsz": str(imgsz), "base": "external weights", "code_version": code_version()},
    )
    target = model_dir(settings, mv.version)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, target / "best.pt")
    return mv.version


def training_curve(home: Path) -> dict | None:
    """Per-epoch validation figures and seconds from ultralytics' results.csv, if any."""
    import csv

    found = sorted(home.glob("runs/train-*/results.csv"))
    if not found:
        return None
    with found[-1].open() as fh:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(fh)]
    if not rows:
        return None
    pick = ("epoch", "time", "metrics/mAP50(B)", "metrics/mAP50-95(B)")
    curve = [{k: float(r[k]) for k in pick if k in r and r[k] not in ("", None)} for r in rows]
    times = [c["time"] for c in curve if "time" in c]
    return {
        "csv": str(found[-1]),
        "epochs": len(curve),
        "seconds_per_epoch": round(times[-1] / len(times), 1) if times else None,
        "curve": curve,
    }


def check_targets(timing: dict[int, dict], accuracy: dict) -> list[dict]:
    rows = []
    for n, t in sorted(timing.items()):
        p = t["paths"]
        pt = p["ultralytics PyTorch predict"]["median_ms"]
        uo = p["ultralytics ONNX predict (FP32)"]["median_ms"]
        for variant in ("edge FP32", "edge INT8"):
            if variant not in p:
                continue
            e = p[variant]
            r1, r2 = e["median_ms"] / pt, e["median_ms"] / uo
            rows.append(
                {
                    "check": f"{variant} / PyTorch predict",
                    "threads": n,
                    "value": round(r1, 3),
                    "target": f"<= {TARGET_VS_PYTORCH}",
                    "binding": n == 2,
                    "pass": r1 <= TARGET_VS_PYTORCH,
                }
            )
            rows.append(
                {
                    "check": f"{variant} / ultralytics ONNX predict",
                    "threads": n,
                    "value": round(r2, 3),
                    "target": f"<= {TARGET_VS_ULTRA_ONNX}",
                    "binding": True,
                    "pass": r2 <= TARGET_VS_ULTRA_ONNX,
                }
            )
            share = e["prepost_share_of_run"]
            rows.append(
                {
                    "check": f"{variant} (pre+post) / session.run",
                    "threads": n,
                    "value": round(share, 3),
                    "target": f"<= {TARGET_PREPOST_SHARE}",
                    "binding": True,
                    "pass": share <= TARGET_PREPOST_SHARE,
                }
            )
    if "fp32" in accuracy and "int8" in accuracy:
        drop = accuracy["fp32"]["mAP50"] - accuracy["int8"]["mAP50"]
        rows.append(
            {
                "check": "mAP50 FP32 - INT8 (test)",
                "threads": None,
                "value": round(drop, 4),
                "target": f"<= {TARGET_INT8_MAP50_DROP}",
                "binding": True,
                "pass": drop <= TARGET_INT8_MAP50_DROP,
            }
        )
    return rows


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(c) for c in r] for r in [head, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    return lines + ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells[1:]]


def render(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f for f, on in m.get("cpu_flags", {}).items() if on)
    out = [
        f"machine: {m.get('cpu_model')} x{m.get('cpu_count')} ({flags}); {m.get('int8_note', '')}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        (
            f"dataset: {report['dataset']['images']} images; test frames timed: {report['frames']['count']} "
            f"({report['frames']['shape']}), imgsz {report['imgsz']}"
        ),
    ]
    tr = report.get("training")
    if tr:
        out.append(
            f"training: {tr.get('epochs')} epochs in {tr.get('seconds')} s "
            f"({(tr.get('curve') or {}).get('seconds_per_epoch')} s/epoch incl. per-epoch val); val mAP50 {tr.get('val_mAP50')}"
        )
    out += ["", "accuracy on the test split:"]
    acc = report["accuracy"]
    out += _table(
        ["model", "mAP50", "mAP50-95", "precision", "recall", "size MB"],
        [[k, a["mAP50"], a["mAP50-95"], a["precision"], a["recall"], a.get("size_mb", "")] for k, a in acc.items()],
    )
    for n, t in sorted(report["timing"].items(), key=lambda kv: int(kv[0])):
        frames = t["paths"][next(iter(t["paths"]))]["frames"]
        title = (
            f"latency per frame, {n} thread(s) (ms; {frames} timed frames per path; "
            f"others' CPU share max {t.get('others_cpu_share_max')}):"
        )
        out += ["", title]
        rows = []
        for name, p in t["paths"].items():
            rows.append(
                [
                    name,
                    ",".join(map(str, p.get("torch_threads", []))),
                    p["median_ms"],
                    p["p95_ms"],
                    p["fps"],
                    p.get("pre_median_ms", ""),
                    p.get("run_median_ms", ""),
                    p.get("post_median_ms", ""),
                    f"{p['prepost_share_of_run'] * 100:.1f}%" if "prepost_share_of_run" in p else "",
                ]
            )
        out += _table(["path", "torch thr", "median", "p95", "fps", "pre", "session.run", "post", "pre+post/run"], rows)
        for prec, b in t["bare_session_run"].items():
            out.append(f"  bare session.run {prec}: median {b['median_ms']} ms, p95 {b['p95_ms']} ms")
    out += ["", "targets:"]
    out += _table(
        ["check", "threads", "value", "target", "pass"],
        [
            [
                c["check"],
                c["threads"] if c["threads"] is not None else "-",
                c["value"],
                c["target"],
                ("PASS" if c["pass"] else "MISS") + ("" if c["binding"] else " (info)"),
            ]
            for c in report["targets"]
        ],
    )
    notes = report.get("notes", [])
    if notes:
        out += ["", "notes:"] + [f"- {n}" for n in notes]
    out.append("")
    out.append(f"phase seconds: {report['seconds']}; JSON: {report['json']}")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.bench_vision",
        description="Train (or take) a YOLO detector on a VOC dataset, export it and time the edge runtime "
        "against ultralytics' PyTorch and ONNX predict paths at 1 and 2 threads.",
    )
    p.add_argument(
        "bccd", type=Path, metavar="BCCD_DIR", help="Pascal VOC tree (Annotations/, JPEGImages/, ImageSets/Main/)."
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "loopline-bench-vision",
        help="output folder: dataset, LOOPLINE_HOME, models, bench_vision.json (default: %(default)s)",
    )
    p.add_argument(
        "--epochs", type=int, default=DEFAULT_EPOCHS, help="training epochs from scratch (default: %(default)s)"
    )
    p.add_argument("--imgsz", type=int, default=320, help="train/export/inference size (default: %(default)s)")
    p.add_argument("--batch", type=int, default=16, help="training batch size (default: %(default)s)")
    p.add_argument("--weights", type=Path, default=None, help="trained best.pt: skip training and benchmark these")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts to time (default: %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=3, help="timed passes over the test frames per path (default: %(default)s)"
    )
    p.add_argument(
        "--warmup", type=int, default=10, help="untimed frames per path before each pass (default: %(default)s)"
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=60.0,
        help="before timing at each thread count, wait up to this many seconds for other processes "
        "to leave the CPUs (0: do not wait; default: %(default)s)",
    )
    p.add_argument("--no-fp16-timing", action="store_true", help="score FP16 but do not time it")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    args = p.parse_args(argv)
    if not (args.bccd / "Annotations").is_dir():
        p.error(f"{args.bccd}: no Annotations/ folder; pass the root of a VOC tree (e.g. .../bccd/BCCD)")
    if args.weights is not None and not args.weights.is_file():
        p.error(f"--weights {args.weights}: no such file")
    try:
        args.thread_counts = sorted({int(x) for x in args.threads.split(",") if x.strip()})
    except ValueError:
        p.error(f"--threads {args.threads!r}: expected comma-separated integers such as 1,2")
    if not args.thread_counts or min(args.thread_counts) < 1:
        p.error("--threads needs at least one count >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose == 0 else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    home = out / "home"
    t_all = time.perf_counter()
    from vision.yolo_env import prepare_ultralytics

    prepare_ultralytics(home)  # before torch/ultralytics are imported anywhere
    from shared.config import Settings
    from shared.metadata import MetadataStore
    from vision.datasets.voc import import_voc
    from vision.registry import ModelRegistry

    settings = Settings(home=home)
    settings.ensure_home()
    argv_used = argv if argv is not None else sys.argv[1:]
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, "-m", "evaluation.bench_vision", *argv_used]),
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "versions": versions(),
        "imgsz": args.imgsz,
        "out": str(out),
        "home": str(home),
        "seconds": {},
        "notes": [],
    }
    seconds = report["seconds"]

    def phase(name: str, t0: float) -> None:
        seconds[name] = round(time.perf_counter() - t0, 1)
        log.info("%s done in %.1fs", name, seconds[name])

    # 1. dataset
    t0 = time.perf_counter()
    imp = import_voc(args.bccd, out / "dataset", overwrite=True)
    data_yaml = Path(imp.data_yaml)
    report["dataset"] = {
        "src": str(args.bccd.resolve()),
        "data_yaml": str(data_yaml),
        "classes": imp.classes,
        "images": imp.images,
        "boxes": imp.boxes,
        "issues": imp.counts(),
    }
    phase("import", t0)

    # 2. model
    store = MetadataStore(settings.resolved_database_url)
    registry = ModelRegistry.from_settings(settings)
    t0 = time.perf_counter()
    if args.weights is None:
        from vision.training import train_detector

        log.info("training yolov8n from scratch: %d epochs at %d (this is the long part)", args.epochs, args.imgsz)
        res = train_detector(
            settings,
            store,
            registry,
            data=data_yaml,
            model="yolov8n.yaml",
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
        )
        version, weights = res.version, res.weights
        report["training"] = {
            "version": version,
            "epochs": args.epochs,
            "batch": args.batch,
            "seconds": round(res.seconds, 1),
            "val_mAP50": res.metrics["mAP50"],
            "val_mAP50-95": res.metrics["mAP50-95"],
            "curve": training_curve(home),
        }
    else:
        version = register_weights(settings, registry, args.weights.resolve(), data_yaml, args.imgsz)
        weights = args.weights.resolve()
        report["training"] = None
        report["weights"] = str(weights)
    phase("train" if args.weights is None else "register", t0)

    # 3. export
    from vision.release import export_version

    t0 = time.perf_counter()
    exported = export_version(settings, registry, version, int8=True, fp16=True, data_yaml=data_yaml)
    models: dict[str, Path] = {"pt": Path(weights), **{k: Path(v) for k, v in exported["onnx"].items()}}
    report["export"] = {"version": version, "variants_on_val": exported["variants"], "preferred": exported["preferred"]}
    phase("export", t0)

    # 4. accuracy on test
    from evaluation.vision import evaluate_detector

    t0 = time.perf_counter()
    accuracy = {}
    for key in tqdm(("pt", "fp32", "fp16", "int8"), desc="mAP on test", unit="model", file=sys.stderr):
        a = evaluate_detector(models[key], data_yaml, split="test", imgsz=args.imgsz)
        a["size_mb"] = round(models[key].stat().st_size / 1e6, 2)
        accuracy[key] = a
    report["accuracy"] = accuracy
    phase("accuracy", t0)

    # 5. latency
    t0 = time.perf_counter()
    test_paths = split_images(data_yaml, "test")
    frames = decode(test_paths)
    shapes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    report["frames"] = {"count": len(frames), "shape": ",".join(shapes), "rounds": args.rounds, "warmup": args.warmup}
    timed_models = {k: v for k, v in models.items() if not (k == "fp16" and args.no_fp16_timing)}
    timing = {}
    for n in args.thread_counts:
        timing[n] = time_paths(
            timed_models, args.imgsz, n, frames, rounds=args.rounds, warmup=args.warmup, wait_idle_s=args.wait_idle
        )
    report["timing"] = timing
    phase("latency", t0)

    # 6. targets, notes, output
    report["targets"] = check_targets(timing, accuracy)
    flags = report["machine"].get("cpu_flags", {})
    if 2 in timing and "edge INT8" in timing[2]["paths"]:
        f32, i8 = timing[2]["paths"]["edge FP32"]["median_ms"], timing[2]["paths"]["edge INT8"]["median_ms"]
        vnni = flags.get("avx512_vnni") or flags.get("avx_vnni")
        report["notes"].append(
            f"INT8 vs FP32 end-to-end at 2 threads: {i8 / f32:.2f}x the time "
            f"({'VNNI present' if vnni else 'no VNNI'} on this CPU)"
        )
    for t in timing.values():
        for name, p in t["paths"].items():
            for note in p.get("notes", []):
                text = f"{name} @ {t['threads']} thread(s): {note}"
                report["notes"].append(text)
    if any(t.get("others_cpu_share_max") and t["others_cpu_share_max"] > 0.1 for t in timing.values()):
        report["notes"].append("other processes used >10% of the CPUs during some timing rounds: latencies are noisier")
    report["notes"].append(
        "ultralytics PyTorch predict letterboxes to the smallest stride-multiple rectangle (e.g. 320x256 for 640x480) "
        "while the static ONNX exports (ultralytics ONNX predict and edge) always run a 320x320 input"
    )
    seconds["total"] = round(time.perf_counter() - t_all, 1)
    json_path = out / "bench_vision.json"
    report["json"] = str(json_path)
    json_path.write_text(json.dumps(report, indent=2, default=str))
    (out / "bench_vision.txt").write_text(render(report) + "\n")
    print(json.dumps(report, indent=2, default=str) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
