"""`loopline vision …`: datasets, training, export, evaluation, promotion.

Names and JSON fields here are a contract used by outside checks. Stdout carries the result
only; progress (training epochs, export steps) goes to stderr, when stderr is a terminal or
`--progress` asks for it (`--json` does not silence it: stdout stays one JSON object).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shared.config import Settings
from vision.frame_cli import consume_frames
from vision.registry import fleet_alias

if TYPE_CHECKING:
    from vision.release import Step
    from vision.training import EpochReport

log = logging.getLogger(__name__)

progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr (default: when stderr is a terminal).",
)


def _progress_wanted(flag: bool | None) -> bool:
    """As asked; by default when stderr is a terminal (a person watches), --json or not."""
    return sys.stderr.isatty() if flag is None else flag


def _echo(obj: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(obj, default=str) if as_json else text)


def _epoch_printer() -> Callable[[EpochReport], None]:
    """One stderr line per finished epoch: losses, mAP on val, its time and the time left."""
    seconds: list[float] = []

    def show(r: EpochReport) -> None:
        seconds.append(r.seconds)
        losses = "  ".join(f"{k} {v:.3f}" for k, v in r.losses.items())
        if r.map50 is None or r.map50_95 is None:
            scores = "mAP50 -  mAP50-95 -"
        else:
            scores = f"mAP50 {r.map50:.3f}  mAP50-95 {r.map50_95:.3f}"
        left = (r.epochs - r.epoch) * sum(seconds) / len(seconds)
        eta = f", {_duration(left)} left" if r.epoch < r.epochs else ""
        width = len(str(r.epochs))
        click.echo(f"epoch {r.epoch:>{width}}/{r.epochs}  {losses}  {scores}  ({r.seconds:.1f}s{eta})", err=True)

    return show


def _print_step(step: Step) -> None:
    head = f"[{step.n}/{step.total}] {step.name}"
    if step.seconds is None:
        click.echo(f"{head} …", err=True)
    else:
        click.echo(f"{head}: {step.result or 'done'} ({step.seconds:.1f}s)", err=True)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """ultralytics prints progress to stdout; keep stdout for the result (JSON contract)."""
    with redirect_stdout(sys.stderr):
        yield


def _stores(settings: Settings):  # noqa: ANN202
    from shared.metadata import MetadataStore
    from vision.registry import ModelRegistry

    settings.ensure_home()
    return MetadataStore(settings.resolved_database_url), ModelRegistry.from_settings(settings)


@click.group()
def vision() -> None:
    """Detectors: datasets, training from scratch, ONNX export (FP32/INT8/FP16), promotion."""


vision.add_command(consume_frames)


@vision.group()
def dataset() -> None:
    """Make, import and version datasets (YOLO format)."""


@dataset.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--train", "n_train", default=200, show_default=True, help="Training images.")
@click.option("--val", "n_val", default=50, show_default=True, help="Validation images.")
@click.option("--imgsz", default=160, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--shift", default=None, help="Distribution shift, e.g. 'brightness=40,blur=1.5,contrast=0.7,defect_look=1'."
)
def synth(out: Path, n_train: int, n_val: int, imgsz: int, seed: int, shift: str | None) -> None:
    """Write a synthetic inspection dataset (plates with scratch/spot/crack defects)."""
    from vision.datasets.synth import Shift, generate

    try:
        parsed = Shift.parse(shift)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shift") from exc
    data = generate(out, train=n_train, val=n_val, imgsz=imgsz, seed=seed, shift=parsed)
    click.echo(str(data))


@dataset.command("import-voc")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def import_voc_cmd(src: Path, out: Path, as_json: bool) -> None:
    """Convert a Pascal VOC dataset to YOLO format, keeping its ImageSets splits."""
    from vision.datasets.voc import import_voc

    report = import_voc(src, out)
    data = report.to_json() if hasattr(report, "to_json") else report.__dict__
    _echo(data, as_json, json.dumps(data, indent=2, default=str))


@dataset.command("snapshot")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def snapshot_cmd(data: Path, as_json: bool) -> None:
    """Record a dataset version (manifest of files and label hashes); bad files are dead-lettered."""
    from vision.datasets.versions import snapshot

    store, _ = _stores(Settings())
    v = snapshot(data, store)
    out = v.to_json() if hasattr(v, "to_json") else {"version": v.version, "data_yaml": str(v.data_yaml)}
    _echo(out, as_json, f"dataset {getattr(v, 'name', '')} version {v.version} → {v.data_yaml}")


@vision.command()
@click.option(
    "--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="YOLO data.yaml."
)
@click.option("--model", default="yolov8n.yaml", show_default=True, help="Architecture to train from scratch (*.yaml).")
@click.option("--epochs", default=20, show_default=True)
@click.option("--imgsz", default=160, show_default=True)
@click.option("--batch", default=16, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--from", "from_version", default=None, help="Fine-tune this registered version (number or alias).")
@click.option("--json", "as_json", is_flag=True, help="Print {version, weights, metrics}.")
@progress_option
def train(
    data: Path,
    model: str,
    epochs: int,
    imgsz: int,
    batch: int,
    seed: int,
    from_version: str | None,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Train a detector, record the run in MLflow and register a new version (alias candidate).

    Each epoch's mean losses (box, cls, dfl) and mAP50 / mAP50-95 on val go to stderr as it ends.
    """
    from vision.training import train_detector

    settings = Settings()
    store, registry = _stores(settings)
    click.echo(f"training {from_version and 'v' + from_version or model} for {epochs} epochs at {imgsz}px …", err=True)
    with _stdout_to_stderr():
        res = train_detector(
            settings,
            store,
            registry,
            data=data,
            model=model,
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            from_version=from_version,
            seed=seed,
            on_epoch=_epoch_printer() if _progress_wanted(progress) else None,
        )
    _echo(
        res.to_json(),
        as_json,
        f"version {res.version}: mAP50 {res.metrics['mAP50']:.3f}, mAP50-95 {res.metrics['mAP50-95']:.3f} "
        f"({res.seconds:.0f}s) → {res.weights}",
    )


@vision.command("export")
@click.argument("version")
@click.option("--int8", is_flag=True, help="Also an INT8 (static, QDQ) model calibrated on training images.")
@click.option("--fp16", is_flag=True, help="Also an FP16 model.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="data.yaml (default: the one it was trained on).",
)
@click.option(
    "--square-input",
    is_flag=True,
    help="A square imgsz x imgsz input instead of one shaped like the training frames (e.g. 320x256 for 4:3).",
)
@click.option("--json", "as_json", is_flag=True, help="Print {version, onnx: {precision: path}, …}.")
@progress_option
def export_cmd(
    version: str, int8: bool, fp16: bool, data: Path | None, square_input: bool, as_json: bool, progress: bool | None
) -> None:
    """Export VERSION to ONNX; each variant is scored and timed, the preferred one marked.

    The input is shaped like the training frames: imgsz on their long side, the short side the
    smallest stride multiple that holds them, so devices compute no padding rows.
    Each step (export, quantize, convert, score, time, choose) goes to stderr as it starts and ends.
    """
    from vision.release import export_version

    settings = Settings()
    _, registry = _stores(settings)
    try:
        with _stdout_to_stderr():
            out = export_version(
                settings,
                registry,
                version,
                int8=int8,
                fp16=fp16,
                data_yaml=data,
                square_input=square_input,
                on_step=_print_step if _progress_wanted(progress) else None,
            )
    except (LookupError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    lines = [f"version {out['version']} (preferred: {out['preferred']})"]
    for p, r in out["variants"].items():
        lines.append(f"  {p:<5} mAP50 {r['mAP50']:.3f}  {r['latency_ms']} ms  {r['path']}")
    _echo(out, as_json, "\n".join(lines))


@vision.command("eval")
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", default="val", type=click.Choice(["train", "val", "test"]), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(model: str, data: Path, split: str, as_json: bool) -> None:
    """mAP50, mAP50-95 and per-class figures of MODEL (a version, or a .pt/.onnx file)."""
    from vision.validation import evaluate_detector, resolve_model
    from vision.yolo_env import prepare_ultralytics

    settings = Settings()
    prepare_ultralytics(settings.home, settings.train_threads)
    try:
        resolved = resolve_model(settings, model)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    path, imgsz = resolved.path, resolved.imgsz
    with _stdout_to_stderr():
        res = evaluate_detector(path, data, split=split, imgsz=imgsz)
    per = ", ".join(f"{k} {v['ap50']:.3f}" for k, v in res["per_class"].items())
    _echo(res, as_json, f"{path} on {split}: mAP50 {res['mAP50']:.3f}, mAP50-95 {res['mAP50-95']:.3f} ({per})")


@vision.command()
@click.argument("version")
@click.option("--fleet", default=None, help="Promote for one fleet only (alias production-FLEET).")
def promote(version: str, fleet: str | None) -> None:
    """Make VERSION the production model that devices download."""
    _, registry = _stores(Settings())
    try:
        mv = registry.promote(version, fleet)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"version {mv.version} is now {fleet_alias(fleet)}")


@vision.command()
@click.option("--fleet", default=None)
def rollback(fleet: str | None) -> None:
    """Put the previous production version back."""
    _, registry = _stores(Settings())
    try:
        mv = registry.rollback(fleet)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{fleet_alias(fleet)} rolled back to version {mv.version}")


@vision.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json: bool) -> None:
    """Registered versions with their aliases, dataset versions and metrics."""
    _, registry = _stores(Settings())
    rows = []
    for mv in registry.versions():
        m = registry.run_metrics(mv.version)
        rows.append(
            {
                "version": mv.version,
                "aliases": mv.aliases,
                "dataset_version": mv.tags.get("dataset_version"),
                "mAP50": m.get("mAP50"),
                "preferred_precision": mv.tags.get("preferred_precision"),
            }
        )
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        click.echo(
            f"v{r['version']:<4} mAP50 {r['mAP50'] or 0:.3f}  data {r['dataset_version']}  {','.join(r['aliases'])}"
        )
