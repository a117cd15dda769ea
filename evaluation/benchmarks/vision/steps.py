"""The benchmark's own steps around loopline's pipeline: frames of a split, given weights, the training curve.

Importing the dataset, training, exporting and scoring are loopline's own functions (called
from `cli`); these are the small pieces the benchmark needs besides them.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


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
