"""Detector validation: mAP of any detector (PyTorch .pt, ONNX FP32/FP16/INT8) on a dataset split.

One code path for `loopline vision eval`, training, the export step, the promotion gate and
`loopline eval vision`: ultralytics' validator, which runs .onnx files through ONNX Runtime,
so every precision is scored the same way. A model reference is a `.pt`/`.onnx` file or a
registered version/alias (`resolve_model`). It lives in `vision` because the vertical needs it
itself; `evaluation` builds its reports and gates on top of it. It does not train, export or
promote anything, and draws no reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.config import Settings

if TYPE_CHECKING:
    from vision.registry import ModelRegistry

log = logging.getLogger(__name__)
PRECISIONS = ("pt", "fp32", "int8", "fp16")


def evaluate_detector(model: Path, data_yaml: Path, *, split: str = "val", imgsz: int | None = None) -> dict:
    """mAP50, mAP50-95, precision, recall and per-class figures (call prepare_ultralytics first)."""
    from ultralytics import YOLO

    model = Path(model)
    if not model.exists():
        raise FileNotFoundError(f"{model}: no such model file")
    if imgsz is None and model.suffix == ".onnx":
        imgsz = onnx_imgsz(model)
    kwargs = {"imgsz": imgsz} if imgsz else {}
    m = YOLO(str(model), task="detect").val(
        data=str(data_yaml), split=split, batch=8, workers=0, device="cpu", plots=False, verbose=False, **kwargs
    )
    box = m.box
    names = m.names
    per_class = {}
    for i, cls in enumerate(box.ap_class_index):
        per_class[names[int(cls)]] = {
            "ap50": round(float(box.ap50[i]), 4),
            "ap50_95": round(float(box.ap[i]), 4),
            "precision": round(float(box.p[i]), 4),
            "recall": round(float(box.r[i]), 4),
        }
    return {
        "model": str(model),
        "split": split,
        "mAP50": round(float(box.map50), 4),
        "mAP50-95": round(float(box.map), 4),
        "precision": round(float(box.mp), 4),
        "recall": round(float(box.mr), 4),
        "per_class": per_class,
    }


def onnx_imgsz(path: Path) -> int:
    """The long side of the input an exported ONNX model was built for (its `imgsz`: a square
    export's side, or the long side of one shaped like the frames)."""
    from vision.export import onnx_input_hw

    return max(onnx_input_hw(path))


# --- model references ----------------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    imgsz: int | None
    version: str | None  # the registry version, when MODEL was one
    label: str  # what to call it in reports ("v3 (int8)", "best.pt")


def registry_exists(settings: Settings) -> bool:
    """True when there is a registry to read (a tracking server, or the SQLite file under home)."""
    return bool(settings.mlflow_tracking_uri) or (settings.home / "mlflow.db").exists()


def open_registry(settings: Settings) -> ModelRegistry:
    from vision.registry import ModelRegistry

    return ModelRegistry.from_settings(settings)


def resolve_model(
    settings: Settings, ref: str, *, precision: str = "pt", registry: ModelRegistry | None = None
) -> ResolvedModel:
    """A model file, or a registered version/alias's weights (downloaded when not under home)."""
    from vision.training import model_dir

    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}': expected one of {', '.join(PRECISIONS)}")
    path = Path(ref)
    if path.exists():
        return ResolvedModel(path=path, imgsz=None, version=None, label=path.name)
    if not registry_exists(settings) and registry is None:
        raise LookupError(f"{ref}: neither a model file nor a registered version (no registry under {settings.home})")
    registry = registry or open_registry(settings)
    mv = registry.get(ref)  # LookupError names the registry
    folder = model_dir(settings, mv.version)
    artifact = "weights/best.pt" if precision == "pt" else f"onnx/model.{precision}.onnx"
    local = folder / Path(artifact).name
    if not local.exists():
        try:
            local = registry.download(mv.version, artifact, folder)
        except Exception as exc:
            hint = (
                f"; export it first: loopline vision export {mv.version} --{precision}"
                if precision in ("int8", "fp16")
                else ""
            )
            raise LookupError(f"version {mv.version} has no {artifact}{hint}") from exc
    imgsz = int(mv.tags.get("imgsz", 0)) or None
    label = f"v{mv.version}" + ("" if precision == "pt" else f" ({precision})")
    return ResolvedModel(path=local, imgsz=imgsz, version=mv.version, label=label)
