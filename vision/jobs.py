"""The vision vertical's jobs: training, export, evaluation and loop cycles.

Training, export and loop cycles go to the `train` queue, which a trainer (a worker on a
GPU machine: `loopline worker --queue train`) takes; evaluation goes to the default queue.
Each reports its progress (epochs, export steps, loop stages) on the job record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shared.jobs.kinds import TRAIN_QUEUE, JobKind, JobRun


class TrainParams(BaseModel):
    data: str = Field(description="A YOLO data.yaml on the server.")
    model: str = Field("yolov8n.yaml", description="Architecture to train from scratch (*.yaml).")
    epochs: int = Field(20, ge=1, le=10_000)
    imgsz: int = Field(160, ge=32, le=4096)
    batch: int = Field(16, ge=1, le=1024)
    seed: int = 0
    from_version: str | None = Field(None, description="Fine-tune this registered version (number or alias).")


class ExportParams(BaseModel):
    version: str = Field(description="A registered version (number or alias).")
    int8: bool = Field(False, description="Also an INT8 model calibrated on training images.")
    fp16: bool = Field(False, description="Also an FP16 model.")
    square_input: bool = Field(False, description="A square input instead of one shaped like the training frames.")


class EvalParams(BaseModel):
    model: str = Field(description="A registered version or alias (or a model file on the server).")
    data: str = Field(description="A YOLO data.yaml on the server.")
    split: Literal["train", "val", "test"] = "val"


class LoopParams(BaseModel):
    fleets: list[str] = Field(default_factory=list, description="Fleets to run a cycle for (default: every fleet).")


def _stores(run: JobRun):  # noqa: ANN202
    from vision.registry import ModelRegistry

    return run.ctx.metadata, ModelRegistry.from_settings(run.ctx.settings)


def train(run: JobRun) -> dict:
    from vision.training import EpochReport, train_detector

    p: TrainParams = run.params  # type: ignore[assignment]
    store, registry = _stores(run)

    def on_epoch(e: EpochReport) -> None:
        run.progress(e.epoch, e.epochs, unit="epochs", map50=e.map50, losses=e.losses)

    res = train_detector(
        run.ctx.settings,
        store,
        registry,
        data=Path(p.data),
        model=p.model,
        epochs=p.epochs,
        imgsz=p.imgsz,
        batch=p.batch,
        from_version=p.from_version,
        seed=p.seed,
        on_epoch=on_epoch,
    )
    return res.to_json()


def export(run: JobRun) -> dict:
    from vision.release import Step, export_version

    p: ExportParams = run.params  # type: ignore[assignment]
    _, registry = _stores(run)

    def on_step(step: Step) -> None:
        run.progress(step.n if step.seconds is not None else step.n - 1, step.total, unit="steps", step=step.name)

    out = export_version(
        run.ctx.settings, registry, p.version, int8=p.int8, fp16=p.fp16, square_input=p.square_input, on_step=on_step
    )
    return json.loads(json.dumps(out, default=str))


def evaluate(run: JobRun) -> dict:
    from vision.validation import evaluate_detector, resolve_model
    from vision.yolo_env import prepare_ultralytics

    p: EvalParams = run.params  # type: ignore[assignment]
    settings = run.ctx.settings
    prepare_ultralytics(settings.home, settings.train_threads)
    resolved = resolve_model(settings, p.model)
    return {
        "model": str(resolved.path),
        **evaluate_detector(resolved.path, Path(p.data), split=p.split, imgsz=resolved.imgsz),
    }


def loop_cycle(run: JobRun) -> dict:
    from vision.labeling.client import labeling_from_settings
    from vision.loop.runner import LoopRunner
    from vision.registry import ModelRegistry

    p: LoopParams = run.params  # type: ignore[assignment]
    stages: list[str] = []

    def on_stage(fleet: str, what: str) -> None:
        stages.append(f"{fleet}: {what}")
        run.progress(len(stages), None, unit="stages", stage=stages[-1])

    labeling = labeling_from_settings(run.ctx.settings)
    runner = LoopRunner(run.ctx, labeling, ModelRegistry.from_settings(run.ctx.settings), on_stage=on_stage)
    reports = runner.run_once(p.fleets or None)
    return json.loads(json.dumps({"fleets": [r.to_json() for r in reports]}, default=str))


KINDS = [
    JobKind(
        "vision.train",
        "Train a detector (from scratch or from a version) and register it.",
        TrainParams,
        train,
        queue=TRAIN_QUEUE,
        path_params=("data",),
    ),
    JobKind(
        "vision.export",
        "Export a version to ONNX (FP32, INT8, FP16), scored and timed.",
        ExportParams,
        export,
        queue=TRAIN_QUEUE,
    ),
    JobKind("vision.eval", "mAP of a model on a dataset split.", EvalParams, evaluate, path_params=("data",)),
    JobKind(
        "loop.cycle",
        "One loop cycle: push frames, pull labels, retrain, gate, promote.",
        LoopParams,
        loop_cycle,
        queue=TRAIN_QUEUE,
        exclusive=True,
    ),
]
