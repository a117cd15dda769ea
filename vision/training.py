"""Train a YOLO detector from scratch (a `*.yaml` model) or fine-tune a registered version.

Offline by construction (see vision.yolo_env). The data is snapshotted first: the dataset
version is recorded and only its valid images are trained on. The run is recorded in the
metadata store and in MLflow (parameters, dataset and code versions, metrics, weights) and
registered as a new model version, so every production model can be rebuilt from its record.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.config import Settings
from shared.metadata import MetadataStore
from vision.registry import ModelRegistry, code_version
from vision.yolo_env import prepare_ultralytics

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    version: str
    weights: Path
    metrics: dict
    dataset_version: str
    seconds: float

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "weights": str(self.weights),
            "metrics": self.metrics,
            "dataset_version": self.dataset_version,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class EpochReport:
    """One finished training epoch, as ultralytics' trainer knows it at `on_fit_epoch_end`."""

    epoch: int  # 1-based
    epochs: int
    losses: dict[str, float]  # mean training losses of the epoch: box, cls, dfl
    map50: float | None  # on the validation split (None when the epoch was not validated)
    map50_95: float | None
    seconds: float


def epoch_report(trainer) -> EpochReport:  # noqa: ANN001
    """Read an EpochReport off an ultralytics trainer (its running losses and last metrics)."""
    losses = {k.removesuffix("_loss"): float(v) for k, v in (trainer.tloss or {}).items()}
    metrics = trainer.metrics or {}
    m50, m5095 = metrics.get("metrics/mAP50(B)"), metrics.get("metrics/mAP50-95(B)")
    return EpochReport(
        epoch=trainer.epoch + 1,
        epochs=trainer.epochs,
        losses=losses,
        map50=None if m50 is None else float(m50),
        map50_95=None if m5095 is None else float(m5095),
        seconds=float(getattr(trainer, "epoch_time", None) or 0.0),
    )


@contextmanager
def quiet_ultralytics() -> Iterator[None]:
    """Keep ultralytics' per-batch bars and metric tables off the console, as YOLO_VERBOSE says.

    prepare_ultralytics sets YOLO_VERBOSE=False, but ultralytics reads it once, on its first
    import: imported earlier (a test session, a notebook), it would draw every batch. Its bars
    and info lines also follow its logger's level, which is set here; warnings still show.
    """
    if os.environ.get("YOLO_VERBOSE", "").lower() in {"1", "true"}:
        yield
        return
    logger = logging.getLogger("ultralytics")
    before = logger.level
    logger.setLevel(max(before, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(before)


def model_dir(settings: Settings, version: str) -> Path:
    """Where a version's weights and exported models live under LOOPLINE_HOME."""
    return settings.home / "models" / f"v{version}"


@quiet_ultralytics()
def train_detector(
    settings: Settings,
    store: MetadataStore,
    registry: ModelRegistry,
    *,
    data: Path,
    model: str = "yolov8n.yaml",
    epochs: int = 20,
    imgsz: int = 160,
    batch: int = 16,
    from_version: str | None = None,
    seed: int = 0,
    patience: int = 100,
    on_epoch: Callable[[EpochReport], None] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train, evaluate on val, record and register; `on_epoch` hears of each finished epoch."""
    prepare_ultralytics(settings.home, settings.train_threads)
    import torch

    if settings.train_threads:
        torch.set_num_threads(settings.train_threads)
    from ultralytics import YOLO

    from vision.datasets.versions import snapshot, verify
    from vision.validation import evaluate_detector

    t0 = time.perf_counter()
    run_id = store.start_run(f"train:{Path(data).resolve()}", kind="train")
    try:
        dataset = snapshot(Path(data), store)
        changed = verify(dataset.record)
        if changed:
            raise RuntimeError(f"dataset files changed during the snapshot: {changed[:3]}; snapshot again")
        if from_version:
            start = registry.get(from_version)
            start_weights = model_dir(settings, start.version) / "best.pt"
            if not start_weights.exists():
                start_weights = registry.download(start.version, "weights/best.pt", model_dir(settings, start.version))
            base, base_desc = str(start_weights), f"v{start.version}"
        else:
            if model.endswith(".pt") and not Path(model).exists():
                raise ValueError(
                    f"'{model}' would be downloaded: train from scratch with a *.yaml model "
                    "(e.g. yolov8n.yaml) or fine-tune with --from VERSION"
                )
            base, base_desc = model, model
        runs = settings.home.resolve() / "runs"  # ultralytics puts relative projects under its own runs/
        name = f"train-{int(time.time())}"
        yolo = YOLO(base, task="detect")
        threads = settings.train_threads or os.cpu_count() or 1

        def use_all_threads(_trainer) -> None:  # noqa: ANN001
            # ultralytics resets torch to cpu_count - 1 threads (1 on 2 cores) when it picks
            # the device; put the configured count back once training is set up.
            torch.set_num_threads(threads)

        yolo.add_callback("on_pretrain_routine_end", use_all_threads)
        yolo.add_callback("on_train_epoch_start", use_all_threads)
        if on_epoch is not None:
            _report_epochs(yolo, on_epoch)
        yolo.train(
            data=str(dataset.data_yaml),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            workers=0,
            device="cpu" if not torch.cuda.is_available() else 0,
            amp=False,
            seed=seed,
            deterministic=False,
            patience=patience,
            plots=False,
            project=str(runs),
            name=name,
            exist_ok=True,
            verbose=False,
        )
        best = runs / name / "weights" / "best.pt"
        if not best.exists():
            best = runs / name / "weights" / "last.pt"
        metrics = evaluate_detector(best, dataset.data_yaml, split="val", imgsz=imgsz)
        flat = {
            "mAP50": metrics["mAP50"],
            "mAP50-95": metrics["mAP50-95"],
            "precision": metrics["precision"],
            "recall": metrics["recall"],
        }
        for cls, m in metrics["per_class"].items():
            flat[f"ap50.{cls}"] = m["ap50"]
        params = {
            "model": base_desc,
            "epochs": epochs,
            "imgsz": imgsz,
            "batch": batch,
            "seed": seed,
            "data": str(Path(data).resolve()),
        }
        tags = {
            "dataset_version": dataset.ref,
            "dataset_name": dataset.name,
            "code_version": code_version(),
            "imgsz": str(imgsz),
            "base": base_desc,
            **(extra_tags or {}),  # the caller's lineage, registered with the version itself
        }
        mv = registry.record_training(params=params, metrics=flat, weights=best, tags=tags)
        target = model_dir(settings, mv.version)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, target / "best.pt")
        seconds = time.perf_counter() - t0
        store.finish_run(run_id, status="succeeded", added=1)
        log.info("trained version %s in %.0fs: mAP50 %.3f", mv.version, seconds, metrics["mAP50"])
        return TrainResult(mv.version, target / "best.pt", metrics, dataset.ref, seconds)
    except BaseException as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}", failed=1)
        raise


def _report_epochs(yolo, on_epoch: Callable[[EpochReport], None]) -> None:  # noqa: ANN001
    """Call `on_epoch` once per training epoch, from ultralytics' own callbacks.

    `on_fit_epoch_end` also fires once more after training, for the final validation of
    best.pt (with the epoch counter moved past the last one); only the callbacks that follow
    a training epoch (`on_train_epoch_end`) are reported.
    """
    trained = False

    def epoch_trained(_trainer) -> None:  # noqa: ANN001
        nonlocal trained
        trained = True

    def epoch_done(trainer) -> None:  # noqa: ANN001
        nonlocal trained
        if trained:
            trained = False
            on_epoch(epoch_report(trainer))

    yolo.add_callback("on_train_epoch_end", epoch_trained)
    yolo.add_callback("on_fit_epoch_end", epoch_done)
