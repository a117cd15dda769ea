"""mAP evaluation of any detector (PyTorch .pt, ONNX FP32/FP16/INT8) on a dataset split.

One code path for the CLI, the export step and the promotion gate: ultralytics' validator,
which runs .onnx files through ONNX Runtime, so every precision is scored the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


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
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[2].dim_value)
