"""Labeled frames as datasets: one versioned YOLO dataset per fleet, and the data a retraining sees.

The labeled dataset of a fleet is a YOLO folder rebuilt from the pulled labels: `train` holds
the frames labelers annotated, `holdout` a fixed share of them that never reaches training
(chosen by a hash of the frame id, so a frame stays on its side across pulls). Each change is
snapshotted as a dataset version (vision.datasets.versions), and the version folder gets a
`sources.json` naming the labeling task and annotation every frame came from.

A retraining trains on the production model's own dataset version plus the labeled train
frames, and is judged on that dataset's validation split and on the labeled holdout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

from shared.metadata.store import MetadataStore
from shared.objectstore import ObjectStore
from vision.datasets.version_store import DatasetVersionInfo
from vision.datasets.versions import DatasetVersion, snapshot
from vision.labeling.tables import LABELED, LabelingTask

log = logging.getLogger(__name__)
TRAIN, HOLDOUT = "train", "holdout"


def is_holdout(group: str, share: float) -> bool:
    """Whether a group of frames is held out: a stable function of its name, about `share` of all groups."""
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


HOLDOUT_WINDOW_S = 600  # frames of one device within ten minutes fall on one side together


def holdout_group(record: dict) -> str:
    """What decides a frame's side: its device and ten-minute window of capture, so near-duplicate
    neighbours never sit on both sides (which would flatter the new-data score); the frame itself
    when its capture time is unknown."""
    from vision.api import captured_time

    at = record.get("captured_at")
    if at in (None, ""):
        return str(record.get("_key") or record.get("frame_id"))
    when = captured_time(at, datetime.now(UTC))
    return f"{record.get('device_id')}@{int(when.timestamp() // HOLDOUT_WINDOW_S)}"


def dataset_name(fleet: str) -> str:
    return f"labeled-{fleet}"


def _file_stem(frame: str) -> str:
    return frame.replace("/", "__")


def write_labeled_dataset(
    folder: Path, tasks: Sequence[LabelingTask], frames: ObjectStore, names: Sequence[str]
) -> tuple[Path, dict[str, dict]]:
    """Rebuild the YOLO folder from the labeled tasks; returns its data.yaml and frame → source."""
    wanted: dict[Path, bytes | None] = {}
    sources: dict[str, dict] = {}
    for t in tasks:
        if t.status != LABELED or t.labels is None:
            continue
        split = HOLDOUT if t.holdout else TRAIN
        stem = _file_stem(t.frame)
        ext = Path(t.image).suffix or ".jpg"
        image = folder / "images" / split / f"{stem}{ext}"
        if not image.exists():
            wanted[image] = frames.get(t.image)
        else:
            wanted[image] = None  # already there: frames never change under one id
        wanted[folder / "labels" / split / f"{stem}.txt"] = t.labels.encode()
        sources[t.frame] = {
            "split": split,
            "task_id": t.task_id,
            "project_id": t.project_id,
            "annotation_id": t.annotation_id,
            "annotation_updated_at": t.annotation_updated_at,
            "model_version": t.model_version,
            "reason": t.reason,
        }
    for kind in ("images", "labels"):
        for split in (TRAIN, HOLDOUT):
            (folder / kind / split).mkdir(parents=True, exist_ok=True)
            for old in (folder / kind / split).iterdir():
                if old not in wanted:  # a label turned into a skip: the frame leaves the dataset
                    old.unlink()
    for path, data in wanted.items():
        if data is not None:
            _atomic_write(path, data)
    data_yaml = folder / "data.yaml"
    spec = {
        "path": str(folder.resolve()),
        "train": "images/train",
        "val": "images/holdout",
        "names": dict(enumerate(names)),
    }
    _atomic_write(data_yaml, yaml.safe_dump(spec, sort_keys=False).encode())
    return data_yaml, sources


def snapshot_labeled(
    folder: Path,
    fleet: str,
    tasks: Sequence[LabelingTask],
    frames: ObjectStore,
    names: Sequence[str],
    store: MetadataStore,
) -> DatasetVersion:
    """The labeled frames of a fleet as a dataset version (the same version when nothing changed)."""
    data_yaml, sources = write_labeled_dataset(folder, tasks, frames, names)
    version = snapshot(data_yaml, store, name=dataset_name(fleet), versions_dir=folder.parent / "versions")
    _atomic_write(Path(version.data_yaml).parent / "sources.json", json.dumps(sources, indent=1).encode())
    return version


def split_images(version: DatasetVersionInfo, split: str) -> list[str]:
    """Absolute image paths of a split of a dataset version (its list file)."""
    listing = Path(version.data_yaml).parent / f"{split}.txt"
    return [ln for ln in listing.read_text().splitlines() if ln.strip()] if listing.exists() else []


def retraining_data(base: DatasetVersionInfo, labeled: DatasetVersionInfo, folder: Path) -> Path:
    """A data.yaml: the base version's train images plus the labeled train frames; the base's val."""
    folder.mkdir(parents=True, exist_ok=True)
    train = split_images(base, "train") + split_images(labeled, "train")
    _atomic_write(folder / "train.txt", "".join(p + "\n" for p in train).encode())
    val = split_images(base, "val")
    _atomic_write(folder / "val.txt", "".join(p + "\n" for p in val).encode())
    spec = {
        "path": str(folder.resolve()),
        "train": "train.txt",
        "val": "val.txt",
        "names": dict(enumerate(base.classes)),
    }
    data_yaml = folder / "data.yaml"
    _atomic_write(data_yaml, yaml.safe_dump(spec, sort_keys=False).encode())
    return data_yaml


def holdout_data(labeled: DatasetVersionInfo) -> Path | None:
    """The labeled version's data.yaml (its val split is the holdout), or None with no held-out frame."""
    return Path(labeled.data_yaml) if split_images(labeled, "val") else None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
