"""Dataset versions: a content-hashed manifest of the valid images and labels of a YOLO dataset.

`snapshot` hashes every image and label a data.yaml reaches, checks each pair (the image
decodes, every label line is a valid box), dead-letters the bad ones and leaves them out,
then writes a version folder with list files of the valid images and a derived data.yaml,
so training sees only the checked data, and a model can name exactly the data it was
trained on (`name@version`). Unchanged data gives the same version, never a second row.

It does not copy data: the list files point at the dataset's own files, so `verify` tells
whether they still hold the bytes the version names. Paths follow ultralytics: a relative
`path:` is taken relative to the data.yaml (ultralytics would try its datasets dir first),
and an image's label is found by replacing its last `/images/` with `/labels/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from shared.ingestion.schema import SchemaError, validate_record
from shared.ingestion.sources import folder_source
from shared.metadata.store import MetadataStore
from vision.datasets.version_store import DatasetVersionInfo, DatasetVersionStore

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# ultralytics' IMG_FORMATS: what its loaders pick up from a folder or list file
IMG_FORMATS = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"}
)
LABEL_FIELDS = ("class_id", "x_center", "y_center", "width", "height")
VERSION_CHARS = 12


class _YoloLabelBase(BaseModel):
    """One line of a YOLO detection label; the class range is set per dataset."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    class_id: int = Field(ge=0)
    x_center: float = Field(ge=0.0, le=1.0)
    y_center: float = Field(ge=0.0, le=1.0)
    width: float = Field(gt=0.0, le=1.0)
    height: float = Field(gt=0.0, le=1.0)

    @field_validator("class_id", mode="before")
    @classmethod
    def _integral_float(cls, value: Any) -> Any:
        # Some exporters write "1.0"; ultralytics reads it as class 1, so do we.
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                return value
            if f.is_integer():
                return int(f)
        return value


@lru_cache(maxsize=64)
def label_model(num_classes: int) -> type[_YoloLabelBase]:
    """The label-line schema of a dataset with `num_classes` classes."""
    return create_model(  # type: ignore[call-overload,no-any-return]
        "YoloLabel", __base__=_YoloLabelBase, class_id=(int, Field(ge=0, lt=num_classes))
    )


def parse_label_line(line: str, num_classes: int) -> _YoloLabelBase:
    """Validate one label line; SchemaError names the field that is wrong."""
    tokens = line.split()
    if len(tokens) != len(LABEL_FIELDS):
        raise SchemaError(
            "YoloLabel", "<line>", f"has {len(tokens)} fields; expected 5: class x_center y_center width height"
        )
    return validate_record(label_model(num_classes), dict(zip(LABEL_FIELDS, tokens)))


class Excluded(BaseModel):
    """A pair left out of a version, and why."""

    split: str
    image: str
    file: str  # the offending file: the image or its label
    reason: str
    dead_letter: int | None = None


@dataclass(frozen=True)
class DatasetVersion:
    """The outcome of a snapshot: the stored version plus what this run found."""

    record: DatasetVersionInfo
    data_yaml: Path  # the derived data.yaml to train on
    run_id: int
    created: bool  # False: this exact data was already a version
    excluded: tuple[Excluded, ...]

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def version(self) -> str:
        return self.record.version

    @property
    def ref(self) -> str:
        return self.record.ref

    @property
    def counts(self) -> dict:
        return self.record.counts

    @property
    def classes(self) -> tuple[str, ...]:
        return self.record.classes


@dataclass(frozen=True)
class _DataSpec:
    yaml_path: Path
    root: Path
    names: list[str]
    splits: dict[str, list[Path]]  # split → image files


def snapshot(
    data_yaml: Path,
    store: MetadataStore,
    *,
    name: str | None = None,
    versions_dir: Path | None = None,
) -> DatasetVersion:
    """Version the dataset of `data_yaml`; invalid pairs are dead-lettered and left out.

    `name` defaults to the dataset root's folder name. The version folder is
    `versions_dir/<version>/` (default: `versions/` beside the data.yaml) and holds
    `<split>.txt`, `data.yaml` and `manifest.json`. The run is recorded with kind "dataset".
    """
    t0 = time.perf_counter()
    spec = _load_spec(Path(data_yaml))
    name = name or spec.root.name
    source = folder_source(spec.root)
    run_id = store.start_run(source, "dataset")
    try:
        entries, excluded = _check_all(spec, store, run_id, source)
        version = _version_hash(spec.names, entries)
        folder = (Path(versions_dir) if versions_dir else spec.yaml_path.parent / "versions").resolve() / version
        derived = _write_version_folder(folder, spec, name, version, entries, excluded)
        counts = {
            split: {
                "images": len(rows),
                "boxes": sum(r["boxes"] for r in rows),
                "background": sum(1 for r in rows if r["label"] is None),
                "excluded": sum(1 for e in excluded if e.split == split),
            }
            for split, rows in entries.items()
        }
        manifest = {
            "source_yaml": str(spec.yaml_path),
            "root": str(spec.root),
            "splits": entries,
            "excluded": [e.model_dump() for e in excluded],
        }
        versions = DatasetVersionStore(store)
        existed = versions.get(f"{name}@{version}") is not None
        record = versions.add(
            name=name,
            version=version,
            data_yaml=str(derived),
            source_yaml=str(spec.yaml_path),
            run_id=run_id,
            counts=counts,
            classes=spec.names,
            manifest=manifest,
        )
    except BaseException as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    images = sum(c["images"] for c in counts.values())
    store.finish_run(
        run_id,
        status="partial" if excluded else "succeeded",
        added=0 if existed else images,
        unchanged=images if existed else 0,
        failed=len(excluded),
        chunks=sum(c["boxes"] for c in counts.values()),
    )
    log.info(
        "dataset %s@%s (%s): %s; %d excluded; %.1fs",
        name,
        version,
        "unchanged" if existed else "new",
        counts,
        len(excluded),
        time.perf_counter() - t0,
    )
    return DatasetVersion(
        record=record, data_yaml=derived, run_id=run_id, created=not existed, excluded=tuple(excluded)
    )


def verify(version: DatasetVersionInfo) -> list[str]:
    """Files of `version` that no longer hold the bytes it names (empty: still exact)."""
    root = Path(version.manifest.get("root", "."))
    problems: list[str] = []
    for rows in version.manifest.get("splits", {}).values():
        for row in rows:
            for key, digest_key in (("image", "sha256"), ("label", "label_sha256")):
                rel = row.get(key)
                if rel is None:
                    continue
                path = root / rel
                if not path.is_file():
                    problems.append(f"{rel}: missing")
                elif hashlib.sha256(path.read_bytes()).hexdigest() != row[digest_key]:
                    problems.append(f"{rel}: changed since {version.ref}")
    return problems


# --- reading the data.yaml -------------------------------------------------------------
def _load_spec(data_yaml: Path) -> _DataSpec:
    yaml_path = data_yaml.resolve()
    data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{yaml_path}: not a mapping; expected keys path, train, val, names")
    root = Path(data.get("path") or yaml_path.parent)
    root = (root if root.is_absolute() else yaml_path.parent / root).resolve()
    names = _names(data.get("names"), yaml_path)
    splits: dict[str, list[Path]] = {}
    for split in SPLITS:
        value = data.get(split)
        if not value:
            continue
        files: list[Path] = []
        for entry in value if isinstance(value, list) else [value]:
            files += _images_of(root, Path(str(entry)), yaml_path, split)
        splits[split] = sorted(set(files))
    if "train" not in splits:
        raise ValueError(f"{yaml_path}: no 'train' key; a YOLO data.yaml needs train and val")
    return _DataSpec(yaml_path=yaml_path, root=root, names=names, splits=splits)


def _names(raw: Any, yaml_path: Path) -> list[str]:
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    if isinstance(raw, dict) and raw:
        keys = sorted(int(k) for k in raw)
        if keys != list(range(len(keys))):
            raise ValueError(f"{yaml_path}: names ids {keys} are not 0..{len(keys) - 1}; number them contiguously")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    raise ValueError(f"{yaml_path}: 'names' is missing or empty; list the class names (id order)")


def _images_of(root: Path, entry: Path, yaml_path: Path, split: str) -> list[Path]:
    path = entry if entry.is_absolute() else root / entry
    if path.is_dir():
        return [p.resolve() for p in path.rglob("*.*") if p.suffix[1:].lower() in IMG_FORMATS and p.is_file()]
    if path.is_file() and path.suffix == ".txt":
        out = []
        for line in path.read_text(encoding="utf-8-sig").splitlines():
            line = line.strip()
            if not line:
                continue
            p = path.parent / line[2:] if line.startswith("./") else Path(line)
            p = p if p.is_absolute() else root / p
            if p.suffix[1:].lower() in IMG_FORMATS:
                out.append(p.resolve())
        return out
    raise FileNotFoundError(f"{yaml_path}: {split} '{entry}' resolves to {path}, which does not exist")


def _label_of(image: Path) -> Path:
    """ultralytics' img2label_paths: the last /images/ becomes /labels/, the suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(str(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


# --- checking the pairs ----------------------------------------------------------------
def _check_all(
    spec: _DataSpec, store: MetadataStore, run_id: int, source: str
) -> tuple[dict[str, list[dict[str, Any]]], list[Excluded]]:
    entries: dict[str, list[dict[str, Any]]] = {}
    excluded: list[Excluded] = []
    for split, images in spec.splits.items():
        rows = entries.setdefault(split, [])
        for image in images:
            row, bad = _check_pair(image, spec)
            if row is not None:
                rows.append(row)
                continue
            assert bad is not None
            bad.split = split
            bad.dead_letter = store.add_dead_letter(run_id=run_id, source=source, path=bad.file, reason=bad.reason)
            log.warning("%s; excluded and recorded as dead letter #%s", bad.reason, bad.dead_letter)
            excluded.append(bad)
    return entries, excluded


def _check_pair(image: Path, spec: _DataSpec) -> tuple[dict[str, Any] | None, Excluded | None]:
    img_rel = _rel(image, spec.root)

    def bad(file: str, reason: str) -> tuple[None, Excluded]:
        return None, Excluded(split="", image=img_rel, file=file, reason=f"{file}: {reason}; pair excluded")

    try:
        raw = image.read_bytes()
    except OSError as exc:
        return bad(img_rel, f"cannot read image ({exc.strerror or exc})")
    try:
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None
    except cv2.error:
        img = None
    if img is None or img.shape[0] == 0 or img.shape[1] == 0:
        return bad(img_rel, f"OpenCV cannot decode this image ({len(raw)} bytes)")
    row: dict[str, Any] = {
        "image": img_rel,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "label": None,
        "label_sha256": None,
        "label_size": 0,
        "boxes": 0,
    }
    label = _label_of(image)
    if not label.is_file():
        return row, None  # no label file: a background image, as ultralytics reads it
    lbl_rel = _rel(label, spec.root)
    try:
        data = label.read_bytes()
        text = data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return bad(lbl_rel, f"cannot read label as UTF-8 text ({exc})")
    boxes = 0
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parse_label_line(line, len(spec.names))
        except SchemaError as exc:
            hint = f" (classes 0..{len(spec.names) - 1}: {spec.names})" if exc.field == "class_id" else ""
            return bad(lbl_rel, f"line {n}: {exc}{hint}")
        boxes += 1
    row.update(label=lbl_rel, label_sha256=hashlib.sha256(data).hexdigest(), label_size=len(data), boxes=boxes)
    return row, None


# --- the version -----------------------------------------------------------------------
def _version_hash(names: list[str], entries: dict[str, list[dict[str, Any]]]) -> str:
    """Short sha256 over classes and every valid pair's paths and hashes: the data's identity."""
    canonical = {
        "classes": names,
        "splits": {
            split: [[r["image"], r["sha256"], r["label"] or "", r["label_sha256"] or ""] for r in rows]
            for split, rows in sorted(entries.items())
        },
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:VERSION_CHARS]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_version_folder(
    folder: Path,
    spec: _DataSpec,
    name: str,
    version: str,
    entries: dict[str, list[dict[str, Any]]],
    excluded: list[Excluded],
) -> Path:
    """List files of the valid images and a data.yaml on them: what training may read."""
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"path": str(folder)}
    for split, rows in entries.items():
        if not rows:
            log.warning("%s@%s: no valid %s image; ultralytics will refuse %s.txt", name, version, split, split)
        lines = "".join(str((spec.root / r["image"]).resolve()) + "\n" for r in rows)
        _atomic_write(folder / f"{split}.txt", lines)
        data[split] = f"{split}.txt"
    data["names"] = dict(enumerate(spec.names))
    header = f"# {name}@{version}: generated by loopline's dataset snapshot from {spec.yaml_path}; do not edit\n"
    derived = folder / "data.yaml"
    _atomic_write(derived, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    manifest = {
        "name": name,
        "version": version,
        "splits": entries,
        "excluded": [e.model_dump() for e in excluded],
    }
    _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1))
    return derived
