"""Turn a registered version into edge-ready ONNX variants, each with its measured worth.

Every variant (FP32, optionally INT8 and FP16) is scored on the validation split beside
FP32 and timed with the edge runtime on this machine; one is marked preferred only when it
is faster here and within tolerance of FP32's mAP50. On AVX2 CPUs without VNNI, INT8 is
often no faster than FP32, and then FP32 stays preferred.

The export also writes the version's input reference (`reference.json` beside the ONNX
files, logged to MLflow under `reference/`): histograms of the frame-quality features of the
training images, `{feature: {"edges": [...], "counts": [...]}}` over the device's fixed bins
(`edge.quality.QUALITY_EDGES`), which devices compare their recent frames with.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from shared.config import Settings
from vision.export import convert_fp16, export_onnx, quantize_int8, typical_frame_hw
from vision.registry import ModelRegistry
from vision.training import model_dir, quiet_ultralytics
from vision.validation import evaluate_detector
from vision.yolo_env import prepare_ultralytics

log = logging.getLogger(__name__)
REFERENCE_FILE = "reference.json"
REFERENCE_IMAGES = 500  # training images the input reference is counted over, at most
MAP_TOLERANCE = 0.01  # one mAP50 point
SPEEDUP_NEEDED = 0.95  # a variant must take under 95% of FP32's time to be preferred


@dataclass(frozen=True)
class Step:
    """A step of an export, reported as it starts (`seconds` None) and as it ends."""

    n: int  # 1-based
    total: int
    name: str
    seconds: float | None = None
    result: str = ""  # what the step found ("mAP50 0.412", "2.31 ms/image"), once it ended


class _Steps:
    """Numbers the steps of one export and reports their start and end to `on_step`."""

    def __init__(self, on_step: Callable[[Step], None] | None, total: int) -> None:
        self.on_step = on_step
        self.total = total
        self.n = 0

    @contextmanager
    def __call__(self, name: str) -> Iterator[list[str]]:
        """Run one step; append to the yielded list to report what it found."""
        self.n += 1
        step = Step(self.n, self.total, name)
        if self.on_step:
            self.on_step(step)
        found: list[str] = []
        t0 = time.perf_counter()
        yield found
        if self.on_step:
            self.on_step(replace(step, seconds=time.perf_counter() - t0, result=", ".join(found)))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _val_images(data_yaml: Path, split: str = "val") -> list[Path]:
    """Image paths of a split of a YOLO data.yaml (folder or list file)."""
    import yaml

    cfg = yaml.safe_load(data_yaml.read_text())
    root = Path(cfg.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    entry = cfg.get(split) or cfg.get("val")
    target = Path(entry) if Path(entry).is_absolute() else root / entry
    if target.is_file():
        lines = [ln.strip() for ln in target.read_text().splitlines() if ln.strip()]
        return [Path(ln) if Path(ln).is_absolute() else (root / ln) for ln in lines]
    exts = {".jpg", ".jpeg", ".png", ".bmp"}
    return sorted(p for p in target.rglob("*") if p.suffix.lower() in exts)


def time_variant(model: Path, images: list[Path], *, threads: int | None = None, repeats: int = 3) -> float:
    """Median end-to-end edge latency (ms) per image, measured as `loopline edge bench` does."""
    import cv2

    from edge.bench import measure
    from edge.detector import Detector

    frames = [f for f in (cv2.imread(str(p)) for p in images[:20]) if f is not None]
    return measure(Detector(model, threads=threads), frames, warmup=2, repeat=repeats).median_ms


@quiet_ultralytics()
def export_version(
    settings: Settings,
    registry: ModelRegistry,
    version: str,
    *,
    int8: bool = False,
    fp16: bool = False,
    data_yaml: Path | None = None,
    calibration_count: int = 64,
    square_input: bool = False,
    on_step: Callable[[Step], None] | None = None,
) -> dict:
    """Export, score, time and record the variants; `on_step` hears each step start and end.

    The input is shaped like the training frames (imgsz on their long side, see
    `vision.export.frame_input_hw`) unless `square_input`, or when no training image is readable.
    """
    prepare_ultralytics(settings.home, settings.train_threads)
    mv = registry.get(version)
    folder = model_dir(settings, mv.version)
    weights = folder / "best.pt"
    if not weights.exists():
        weights = registry.download(mv.version, "weights/best.pt", folder)
    imgsz = int(mv.tags.get("imgsz", 160))
    data_yaml = data_yaml or _data_of(registry, mv.version)
    variants = 1 + int8 + fp16
    step = _Steps(on_step, total=variants * 3 + 2)  # make, score and time each; reference; choose and record
    train_images = _val_images(data_yaml, "train")  # listed once: input shape, calibration, reference
    frame_hw = None if square_input else typical_frame_hw(train_images)
    shape = f", shaped like {frame_hw[1]}x{frame_hw[0]} frames" if frame_hw and frame_hw[0] != frame_hw[1] else ""
    with step(f"export FP32 ONNX ({imgsz} px{shape})"):
        onnx: dict[str, Path] = {
            "fp32": export_onnx(weights, folder / "model.fp32.onnx", imgsz=imgsz, frame_hw=frame_hw)
        }
    if int8:
        calib = train_images[:calibration_count]
        with step(f"quantize INT8 (static QDQ, calibrated on {len(calib)} training images)"):
            onnx["int8"] = quantize_int8(onnx["fp32"], calib, folder / "model.int8.onnx")
    if fp16:
        with step("convert to FP16"):
            onnx["fp16"] = convert_fp16(onnx["fp32"], folder / "model.fp16.onnx")

    val = _val_images(data_yaml, "val")
    report: dict[str, dict] = {}
    for precision, path in onnx.items():
        with step(f"score {precision.upper()} on val") as found:
            acc = evaluate_detector(path, data_yaml, split="val", imgsz=imgsz)
            found.append(f"mAP50 {acc['mAP50']:.3f}, mAP50-95 {acc['mAP50-95']:.3f}")
        with step(f"time {precision.upper()} with the edge runtime") as found:
            latency = round(time_variant(path, val), 2) if val else None
            found.append(f"{latency} ms/image" if latency is not None else "no val images: not timed")
        report[precision] = {
            "path": str(path),
            "sha256": sha256_of(path),
            "size": path.stat().st_size,
            "mAP50": acc["mAP50"],
            "mAP50-95": acc["mAP50-95"],
            "latency_ms": latency,
        }
    train = train_images[:: max(1, math.ceil(len(train_images) / REFERENCE_IMAGES))]  # spread over the whole split
    with step(f"count the input reference (frame quality of {len(train)} training images)") as found:
        reference_path, used = write_reference(folder, train)
        if reference_path is not None:
            registry.log_artifact(mv.version, reference_path, artifact_path="reference")
            found.append(f"{used} images")
        else:  # devices then get no reference and their input-drift rule stays off
            found.append("no readable training image: no reference")
    with step("choose the preferred variant and record it") as found:
        preferred = choose_preferred(report)
        found.append(f"preferred {preferred}")
        for precision, r in report.items():
            registry.log_artifact(mv.version, Path(r["path"]), artifact_path="onnx")
            registry.set_tags(
                mv.version,
                {f"onnx.{precision}.{k}": v for k, v in r.items() if k != "path"},
            )
        registry.set_tags(mv.version, {"preferred_precision": preferred, "precisions": ",".join(onnx)})
    log.info("version %s exported: %s; preferred %s", mv.version, {p: r["mAP50"] for p, r in report.items()}, preferred)
    return {
        "version": mv.version,
        "onnx": {p: str(x) for p, x in onnx.items()},
        "variants": report,
        "preferred": preferred,
        "reference": str(reference_path) if reference_path else None,
    }


def input_reference(images: list[Path]) -> tuple[dict[str, dict[str, list[float]]], int]:
    """({feature: {"edges", "counts"}}, images counted): frame quality of `images` (unreadable
    ones skipped) over the device's fixed bins, as `edge.quality.FixedHistograms` counts them."""
    import cv2

    from edge.quality import QUALITY_EDGES, FixedHistograms, frame_quality

    counts = FixedHistograms(QUALITY_EDGES)
    used = 0
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("input reference: %s is not a readable image; skipped", path)
            continue
        counts.add(frame_quality(image))
        used += 1
    return {name: {"edges": list(counts.edges[name]), "counts": c} for name, c in counts.counts.items()}, used


def write_reference(folder: Path, images: list[Path]) -> tuple[Path | None, int]:
    """Count the input reference of `images` into `folder`/reference.json: (its path, images
    counted); (None, 0) and no file when no image was readable."""
    reference, used = input_reference(images)
    path = folder / REFERENCE_FILE
    if not used:
        path.unlink(missing_ok=True)
        return None, 0
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(reference))
    tmp.replace(path)  # the API reads it while devices poll: never half a file
    return path, used


def read_reference(folder: Path) -> dict | None:
    """The input reference export wrote in a version's model folder; None when there is none
    (exported before references existed) or it is unreadable."""
    path = folder / REFERENCE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("input reference %s is unreadable (%s); devices get none", path, exc)
        return None
    return data if isinstance(data, dict) else None


def choose_preferred(report: dict[str, dict]) -> str:
    """FP32 unless another variant is faster here and within tolerance of its mAP50."""
    base = report["fp32"]
    best = "fp32"
    for precision, r in report.items():
        if precision == "fp32" or r["latency_ms"] is None or base["latency_ms"] is None:
            continue
        accurate = r["mAP50"] >= base["mAP50"] - MAP_TOLERANCE
        faster = r["latency_ms"] < SPEEDUP_NEEDED * report[best]["latency_ms"]
        if accurate and faster:
            best = precision
    return best


def _data_of(registry: ModelRegistry, version: str) -> Path:
    run = registry.client.get_run(registry.get(version).run_id)
    data = run.data.params.get("data")
    if not data or not Path(data).exists():
        raise FileNotFoundError(f"version {version} was trained on {data!r}, which is not here: pass --data DATA.yaml")
    return Path(data)
