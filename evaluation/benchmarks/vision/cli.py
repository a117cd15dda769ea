"""`python -m evaluation.benchmarks.vision`: the command, and the phases of one run in order.

Import, train (or register --weights), export, score on the test split, time, check the
targets, write OUT/bench_vision.json and OUT/bench_vision.txt. The timing is in `timing`,
the verdict and the table in `report`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from evaluation.benchmarks.command import given_args
from evaluation.benchmarks.machine import machine_info, package_versions
from evaluation.benchmarks.vision.report import check_targets, render
from evaluation.benchmarks.vision.steps import decode, register_weights, split_images, training_curve
from evaluation.benchmarks.vision.timing import time_paths

log = logging.getLogger(__name__)

MODULE = "evaluation.benchmarks.vision"
DEFAULT_EPOCHS = 35  # 22-30 s/epoch at 320 on 2 shared cores (ultralytics trains with 1 torch thread there): ~20 min
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


def _thread_counts(value: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in value.split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: expected comma-separated integers such as 1,2", param_hint="--threads"
        ) from None
    if not counts or min(counts) < 1:
        raise click.BadParameter("needs at least one count >= 1", param_hint="--threads")
    return counts


@click.command("vision", short_help="The edge runtime against ultralytics' predict paths.")
@click.argument("bccd", metavar="BCCD_DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(tempfile.gettempdir()) / "loopline-bench-vision",
    show_default=True,
    help="Output folder: dataset, LOOPLINE_HOME, models, bench_vision.json and .txt.",
)
@click.option(
    "--epochs", type=click.IntRange(1), default=DEFAULT_EPOCHS, show_default=True, help="Training epochs from scratch."
)
@click.option(
    "--imgsz",
    type=click.IntRange(32),
    default=320,
    show_default=True,
    help="Training size, and the long side of the exported input.",
)
@click.option(
    "--input-shape",
    type=click.Choice(["frames", "square"]),
    default="frames",
    show_default=True,
    help="Exported input: shaped like the training frames (e.g. 320x256 for 640x480 at 320) or imgsz x imgsz.",
)
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True, help="Training batch size.")
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A trained best.pt: skip training and benchmark these.",
)
@click.option(
    "--threads",
    default="1,2",
    show_default=True,
    help="Comma-separated thread counts to time.",
)
@click.option(
    "--rounds", type=click.IntRange(1), default=3, show_default=True, help="Timed passes over the test frames per path."
)
@click.option(
    "--warmup", type=click.IntRange(0), default=10, show_default=True, help="Untimed frames per path before each pass."
)
@click.option(
    "--turn-frames",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Frames each path times in its turn before the next path's (paths alternate within a pass).",
)
@click.option(
    "--wait-idle",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Before timing at each thread count, wait up to this many seconds for other processes to leave "
    "the CPUs (0: do not wait).",
)
@click.option("--no-fp16-timing", is_flag=True, help="Score FP16 but do not time it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.pass_context
def bench_vision(
    ctx: click.Context,
    bccd: Path,
    out: Path,
    epochs: int,
    imgsz: int,
    input_shape: str,
    batch: int,
    weights: Path | None,
    threads: str,
    rounds: int,
    warmup: int,
    turn_frames: int,
    wait_idle: float,
    no_fp16_timing: bool,
    as_json: bool,
    verbose: int,
) -> None:
    """Train (or take) a YOLO detector on a VOC dataset (BCCD_DIR), export it and time the edge runtime
    against ultralytics' PyTorch and ONNX predict paths at 1 and 2 threads."""
    thread_counts = _thread_counts(threads)
    if not (bccd / "Annotations").is_dir():
        raise click.BadParameter(
            f"{bccd}: no Annotations/ folder; pass the root of a VOC tree (e.g. .../bccd/BCCD)", param_hint="BCCD_DIR"
        )
    logging.basicConfig(
        level=logging.INFO if verbose == 0 else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    out = out.resolve()
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
    report: dict[str, Any] = {
        "command": shlex.join([sys.executable, "-m", MODULE, *given_args(ctx)]),
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "versions": package_versions(VERSIONED, keep_missing=False),
        "imgsz": imgsz,
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
    imp = import_voc(bccd, out / "dataset", overwrite=True)
    data_yaml = Path(imp.data_yaml)
    if not imp.images.get("test"):
        raise click.ClickException(
            f"{bccd}: no images imported into the test split (ImageSets/Main/test.txt); "
            "the benchmark scores and times on it"
        )
    report["dataset"] = {
        "src": str(bccd.resolve()),
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
    if weights is None:
        version, weights_used = _train(settings, store, registry, data_yaml, epochs, imgsz, batch, home, report)
    else:
        weights_used = weights.resolve()
        version = register_weights(settings, registry, weights_used, data_yaml, imgsz)
        report["training"] = None
        report["weights"] = str(weights_used)
    phase("train" if weights is None else "register", t0)

    # 3. export
    from vision.export import onnx_input_hw
    from vision.release import export_version

    t0 = time.perf_counter()
    exported = export_version(
        settings, registry, version, int8=True, fp16=True, data_yaml=data_yaml, square_input=input_shape == "square"
    )
    models: dict[str, Path] = {"pt": Path(weights_used), **{k: Path(v) for k, v in exported["onnx"].items()}}
    report["export"] = {
        "version": version,
        "input_shape": input_shape,
        "input_hw": {k: list(onnx_input_hw(Path(v))) for k, v in exported["onnx"].items()},
        "variants_on_val": exported["variants"],
        "preferred": exported["preferred"],
    }
    h, w = report["export"]["input_hw"]["fp32"]
    if h != w:  # ultralytics' ONNX predict runs what ultralytics exports by default: a square input
        models["ultralytics_fp32"] = _square_export(Path(weights_used), out / "ultralytics-export", imgsz)
        report["export"]["ultralytics_fp32"] = {"path": str(models["ultralytics_fp32"]), "input_hw": [imgsz, imgsz]}
    phase("export", t0)

    # 4. accuracy on test
    t0 = time.perf_counter()
    report["accuracy"] = accuracy = _accuracy(models, data_yaml, imgsz)
    phase("accuracy", t0)

    # 5. latency
    t0 = time.perf_counter()
    frames = decode(split_images(data_yaml, "test"))
    shapes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    report["frames"] = {
        "count": len(frames),
        "shape": ",".join(shapes),
        "rounds": rounds,
        "warmup": warmup,
        "turn_frames": turn_frames,
    }
    timed_models = {k: v for k, v in models.items() if not (k == "fp16" and no_fp16_timing)}
    timing = {
        n: time_paths(
            timed_models, imgsz, n, frames, rounds=rounds, warmup=warmup, wait_idle_s=wait_idle, turn_frames=turn_frames
        )
        for n in thread_counts
    }
    report["timing"] = timing
    phase("latency", t0)

    # 6. targets, notes, output
    report["targets"] = check_targets(timing, accuracy)
    report["notes"] += _notes(report["machine"], timing, imgsz, report["export"], frames)
    seconds["total"] = round(time.perf_counter() - t_all, 1)
    json_path = out / "bench_vision.json"
    report["json"] = str(json_path)
    json_path.write_text(json.dumps(report, indent=2, default=str))
    (out / "bench_vision.txt").write_text(render(report) + "\n")
    click.echo(json.dumps(report, indent=2, default=str) if as_json else render(report))


def _train(
    settings: Any,
    store: Any,
    registry: Any,
    data_yaml: Path,
    epochs: int,
    imgsz: int,
    batch: int,
    home: Path,
    report: dict,
) -> tuple[str, Path]:
    """Train yolov8n from scratch; record the run in report["training"]; (version, weights)."""
    from vision.training import train_detector

    log.info("training yolov8n from scratch: %d epochs at %d (this is the long part)", epochs, imgsz)
    res = train_detector(
        settings, store, registry, data=data_yaml, model="yolov8n.yaml", epochs=epochs, imgsz=imgsz, batch=batch
    )
    report["training"] = {
        "version": res.version,
        "epochs": epochs,
        "batch": batch,
        "seconds": round(res.seconds, 1),
        "val_mAP50": res.metrics["mAP50"],
        "val_mAP50-95": res.metrics["mAP50-95"],
        "curve": training_curve(home),
    }
    return res.version, Path(res.weights)


def _square_export(weights: Path, folder: Path, imgsz: int) -> Path:
    """The FP32 ONNX ultralytics makes by default (`export(format="onnx", imgsz=imgsz)`: square)."""
    import shutil

    from vision.export import export_onnx
    from vision.training import quiet_ultralytics

    folder.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copy(weights, folder / "best.pt"))  # ultralytics writes its .onnx beside the weights
    with quiet_ultralytics():
        return export_onnx(copy, folder / "model.fp32.onnx", imgsz=imgsz)


def _accuracy(models: dict[str, Path], data_yaml: Path, imgsz: int) -> dict[str, dict]:
    """mAP, precision and recall of each model on the test split, and its file size."""
    from tqdm import tqdm

    from vision.validation import evaluate_detector

    accuracy = {}
    for key in tqdm(("pt", "fp32", "fp16", "int8"), desc="mAP on test", unit="model", file=sys.stderr):
        a = evaluate_detector(models[key], data_yaml, split="test", imgsz=imgsz)
        a["size_mb"] = round(models[key].stat().st_size / 1e6, 2)
        accuracy[key] = a
    return accuracy


def _notes(machine: dict, timing: dict[int, dict], imgsz: int, export: dict, frames: list[np.ndarray]) -> list[str]:
    """What a reader needs to interpret the latencies."""
    notes = []
    flags = machine.get("cpu_flags", {})
    if 2 in timing and "edge INT8" in timing[2]["paths"]:
        f32, i8 = timing[2]["paths"]["edge FP32"]["median_ms"], timing[2]["paths"]["edge INT8"]["median_ms"]
        vnni = flags.get("avx512_vnni") or flags.get("avx_vnni")
        notes.append(
            f"INT8 vs FP32 end-to-end at 2 threads: {i8 / f32:.2f}x the time "
            f"({'VNNI present' if vnni else 'no VNNI'} on this CPU)"
        )
    for t in timing.values():
        for name, p in t["paths"].items():
            for note in p.get("notes", []):
                notes.append(f"{name} @ {t['threads']} thread(s): {note}")
    if any(t.get("others_cpu_share_max") and t["others_cpu_share_max"] > 0.1 for t in timing.values()):
        notes.append("other processes used >10% of the CPUs during some timing rounds: latencies are noisier")
    from vision.export import frame_input_hw

    h, w = export["input_hw"]["fp32"]
    pytorch = ", ".join(f"{pw}x{ph}" for ph, pw in sorted({frame_input_hw(imgsz, f.shape[:2]) for f in frames}))
    ultra = export.get("ultralytics_fp32")
    if ultra:
        ultra_input = f"{ultra['input_hw'][1]}x{ultra['input_hw'][0]} (ultralytics' default export at this imgsz; "
        ultra_input += "the edge's own file is timed through it too, for information)"
    else:
        ultra_input = f"{w}x{h} (the edge's own file)"
    notes.append(
        f"inputs: edge {w}x{h} (--input-shape {export['input_shape']}); ultralytics PyTorch predict {pytorch} "
        f"(it letterboxes each frame to the smallest stride-multiple rectangle); ultralytics ONNX predict {ultra_input}"
    )
    return notes
