"""Evaluate any detector reference for `loopline eval vision`: figures, confusion matrix, history.

A model is a registered version or alias (its PyTorch weights, or one of its ONNX variants
by precision), or a `.pt`/`.onnx` file (`vision.validation.resolve_model`). The mAP figures
come from `vision.validation.evaluate_detector`, the code path of training and the promotion
gate.

The confusion matrix is a second ultralytics validation pass at the deployment confidence
(0.25, the edge detector's default): at the 0.001 confidence that mAP needs, it would count
every faint box as a false positive. It does not train, export or promote anything.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from vision.validation import ResolvedModel, evaluate_detector, onnx_imgsz, resolve_model

if TYPE_CHECKING:
    from vision.registry import ModelRegistry

log = logging.getLogger(__name__)
DEPLOY_CONF = 0.25


def confusion_matrix(
    model: Path, data_yaml: Path, *, split: str = "val", imgsz: int | None = None, conf: float = DEPLOY_CONF
) -> dict[str, Any]:
    """Counts indexed [predicted][true] over the classes plus a trailing `background`."""
    from ultralytics import YOLO

    if imgsz is None and Path(model).suffix == ".onnx":
        imgsz = onnx_imgsz(Path(model))
    kwargs = {"imgsz": imgsz} if imgsz else {}
    with tempfile.TemporaryDirectory(prefix="loopline-cm-") as tmp:
        # plots=True is what makes ultralytics fill the matrix; its PNGs go to tmp and away.
        m = YOLO(str(model), task="detect").val(
            data=str(data_yaml),
            split=split,
            batch=8,
            workers=0,
            device="cpu",
            conf=conf,
            plots=True,
            verbose=False,
            project=tmp,
            name="cm",
            exist_ok=True,
            **kwargs,
        )
    cm = m.confusion_matrix
    names = [str(cm.names[i]) for i in range(cm.nc)] + ["background"]
    return {"names": names, "conf": conf, "matrix": [[round(x) for x in row] for row in cm.matrix.tolist()]}


def evaluate_model(
    settings: Settings, model: ResolvedModel, data_yaml: Path, *, split: str = "val", conf: float = DEPLOY_CONF
) -> dict[str, Any]:
    """evaluate_detector's figures plus the confusion matrix and the model's identity."""
    res = evaluate_detector(model.path, data_yaml, split=split, imgsz=model.imgsz)
    if "confusion_matrix" not in res:
        res["confusion_matrix"] = confusion_matrix(model.path, data_yaml, split=split, imgsz=model.imgsz, conf=conf)
    res["version"] = model.version
    res["label"] = model.label
    res["data"] = str(Path(data_yaml).resolve())
    return res


def version_history(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Each registered version's recorded training metrics and aliases, oldest first."""
    rows = []
    for mv in registry.versions():
        m = registry.run_metrics(mv.version)
        rows.append(
            {
                "version": mv.version,
                "aliases": list(mv.aliases),
                "dataset_version": mv.tags.get("dataset_version"),
                "mAP50": m.get("mAP50"),
                "mAP50-95": m.get("mAP50-95"),
                "precision": m.get("precision"),
                "recall": m.get("recall"),
            }
        )
    return rows


def baseline_results(
    settings: Settings,
    registry: ModelRegistry,
    alias: str,
    *,
    mode: str,
    data_yaml: Path,
    split: str,
    current: ResolvedModel,
    current_results: dict[str, Any],
    precision: str = "pt",
) -> tuple[dict[str, Any] | None, str]:
    """The baseline model's figures: recorded run metrics, or a re-evaluation on the same data.

    Returns (None, why) when there is no such version yet (the first model has nothing to
    regress against).
    """
    try:
        mv = registry.get(alias)
    except LookupError:
        return None, f"no '{alias}' version in the registry"
    label = f"{alias} (v{mv.version}, {'recorded run metrics' if mode == 'recorded' else f'{split} of the same data'})"
    if mode == "recorded":
        recorded = registry.run_metrics(mv.version)
        per_class = {k.split(".", 1)[1]: {"ap50": v} for k, v in recorded.items() if k.startswith("ap50.")}
        return {**recorded, "per_class": per_class}, label
    if current.version == mv.version and current.path.suffix == ".pt" and precision == "pt":
        return current_results, label  # the same model on the same data
    base_model = resolve_model(settings, mv.version, precision="pt", registry=registry)
    return evaluate_detector(base_model.path, data_yaml, split=split, imgsz=base_model.imgsz), label
