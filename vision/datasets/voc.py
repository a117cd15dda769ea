"""Import a Pascal VOC dataset as a YOLO dataset, keeping its splits and reporting its flaws.

Real VOC trees are rarely clean: broken or missing XML, images that do not decode, boxes
past the image edge or with no area, `difficult` objects, class names outside the wanted
list, images in no split. Each flaw is recorded in the returned report (and as a dead
letter when a metadata store is passed) and the rest of the import goes on.

It does not validate or version the result; `vision.datasets.versions.snapshot` does that.
Images are hard-linked (or copied across filesystems), never re-encoded, so pixels and
hashes stay those of the source. Editing an output image in place therefore edits the
source too; tools that rewrite files replace them, which breaks the link safely.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml
from pydantic import BaseModel, Field

from shared.ingestion.sources import folder_source
from shared.metadata.store import MetadataStore

try:  # hardened parser when installed; the stdlib one is fine for local, trusted files
    from defusedxml.ElementTree import ParseError
    from defusedxml.ElementTree import parse as parse_xml
except ImportError:  # pragma: no cover - defusedxml is optional
    from xml.etree.ElementTree import ParseError  # noqa: S405
    from xml.etree.ElementTree import parse as parse_xml

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})  # compared lower-cased

IssueKind = Literal[
    "bad_annotation",  # XML that does not parse or lacks objects' required fields
    "missing_annotation",
    "missing_image",
    "unreadable_image",
    "unlisted_image",  # an annotated image in no split file
    "split_overlap",  # an image listed in more than one split (kept in the first)
    "unknown_class",
    "bad_box",  # coordinates missing or not numbers
    "zero_area_box",
    "clipped_box",
    "difficult",
    "size_mismatch",  # the XML's <size> disagrees with the image; the image wins
]

# Kinds that lose data (an image or a box): these become dead letters as well.
DROPPING = {
    "bad_annotation",
    "missing_annotation",
    "missing_image",
    "unreadable_image",
    "unlisted_image",
    "unknown_class",
    "bad_box",
    "zero_area_box",
}


class VocIssue(BaseModel):
    """One flaw of the source, and what the import did about it."""

    kind: IssueKind
    file: str  # relative to the VOC root
    detail: str
    split: str | None = None
    dropped: bool  # True: an image or a box was left out; False: kept (maybe clipped)


class ImportReport(BaseModel):
    """What `import_voc` wrote and everything it had to fix or leave out."""

    src: str
    out: str
    data_yaml: str
    classes: list[str]
    images: dict[str, int] = Field(default_factory=dict)  # per split, imported
    boxes: dict[str, int] = Field(default_factory=dict)  # per split, written
    issues: list[VocIssue] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # dataset-level remarks (split layout)
    linked: int = 0  # images hard-linked rather than copied
    run_id: int | None = None
    seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for i in self.issues if i.kind == kind)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i.kind for i in self.issues).items()))

    def of_kind(self, kind: str) -> list[VocIssue]:
        return [i for i in self.issues if i.kind == kind]


@dataclass
class _Object:
    name: str
    box: tuple[float, float, float, float]  # x1 y1 x2 y2, pixels, continuous
    difficult: bool


@dataclass
class _Parsed:
    stem: str
    split: str
    xml_rel: str
    image: Path | None = None
    width: int = 0
    height: int = 0
    objects: list[_Object] = field(default_factory=list)


def import_voc(
    src: Path,
    out: Path,
    *,
    classes: list[str] | None = None,
    store: MetadataStore | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Convert the VOC tree at `src` into images/, labels/ and data.yaml under `out`.

    Class ids follow `classes` when given (objects of other classes are dropped and
    reported), else the sorted set of class names found. With `store`, the import is
    recorded as a run (kind "import") and every dropped image or box is a dead letter.
    `out` must be new or empty, unless `overwrite` lets it replace a previous import's
    images/, labels/ and data.yaml (nothing else there is touched).
    """
    t0 = time.perf_counter()
    src, out = Path(src).resolve(), Path(out).resolve()
    if classes is not None and len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {classes}; each name needs exactly one id")
    if not (src / "Annotations").is_dir():
        raise FileNotFoundError(f"{src}: no Annotations/ folder; is this the root of a VOC dataset?")
    _prepare_out(out, overwrite)
    report = ImportReport(src=str(src), out=str(out), data_yaml=str(out / "data.yaml"), classes=[])
    source = folder_source(src)
    run_id = store.start_run(source, "import") if store else None
    report.run_id = run_id
    try:
        assignments = _read_splits(src, report)
        parsed = [p for stem, split in assignments.items() if (p := _parse(src, stem, split, report))]
        found = sorted({o.name for p in parsed for o in p.objects})
        report.classes = list(classes) if classes is not None else found
        for p in parsed:
            _write(p, out, report)
        split_dirs = {s: report.images.get(s, 0) for s in SPLITS}
        _write_data_yaml(out, report, split_dirs)
    except BaseException as exc:
        if store and run_id is not None:
            store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    report.seconds = time.perf_counter() - t0
    if store and run_id is not None:
        _record(store, run_id, source, report)
    log.info(
        "imported VOC %s → %s: images %s, boxes %s, issues %s (%.1fs)",
        src,
        out,
        report.images,
        report.boxes,
        report.counts(),
        report.seconds,
    )
    return report


# --- splits ----------------------------------------------------------------------------
def _read_split_file(path: Path) -> list[str]:
    # Main split files hold one id per line; class files ("id  1") carry a flag we ignore.
    return [line.split()[0] for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _read_splits(src: Path, report: ImportReport) -> dict[str, str]:
    """{image id: split}, in split then id order; unlisted and overlapping ids reported."""
    main = src / "ImageSets" / "Main"
    annotated = sorted(p.stem for p in (src / "Annotations").glob("*.xml"))
    listed: dict[str, list[str]] = {
        s: _read_split_file(main / f"{s}.txt") for s in SPLITS if (main / f"{s}.txt").is_file()
    }
    trainval = main / "trainval.txt"
    if "train" not in listed and "val" not in listed and trainval.is_file():
        listed["train"] = _read_split_file(trainval)
        report.notes.append(
            "only ImageSets/Main/trainval.txt defines training data (no train.txt/val.txt): "
            "imported it all as 'train', and data.yaml's val points at train, so val metrics "
            "will be optimistic; split it before trusting them"
        )
    if not listed:
        report.notes.append(
            "no ImageSets/Main split files: every annotated image was imported as 'train', "
            "and data.yaml's val points at train"
        )
        _report_unannotated(src, set(annotated), report)
        return {stem: "train" for stem in annotated}
    assignment: dict[str, str] = {}
    for split in SPLITS:
        for stem in sorted(set(listed.get(split, ()))):
            if stem in assignment:
                report.issues.append(
                    VocIssue(
                        kind="split_overlap",
                        file=f"ImageSets/Main/{split}.txt",
                        split=split,
                        dropped=False,
                        detail=f"{stem} is also in {assignment[stem]}.txt; kept only in "
                        f"{assignment[stem]} so {split} does not leak training images",
                    )
                )
                continue
            assignment[stem] = split
    for stem in annotated:
        if stem not in assignment:
            report.issues.append(
                VocIssue(
                    kind="unlisted_image",
                    file=f"Annotations/{stem}.xml",
                    dropped=True,
                    detail=f"{stem} is annotated but listed in no ImageSets/Main split file; "
                    "not imported (add it to a split file to import it)",
                )
            )
    _report_unannotated(src, set(annotated) | set(assignment), report)
    if "val" not in listed and "train" in listed and not any("trainval" in n for n in report.notes):
        report.notes.append("no ImageSets/Main/val.txt: data.yaml's val points at train")
    return assignment


def _report_unannotated(src: Path, known: set[str], report: ImportReport) -> None:
    """Images nobody annotated or listed: reported, since they are silently lost otherwise."""
    folder = src / "JPEGImages"
    if not folder.is_dir():
        return
    for img in sorted(folder.iterdir()):
        if img.suffix.lower() in IMAGE_SUFFIXES and img.stem not in known:
            report.issues.append(
                VocIssue(
                    kind="missing_annotation",
                    file=f"JPEGImages/{img.name}",
                    dropped=True,
                    detail=f"no Annotations/{img.stem}.xml and in no split file; not imported",
                )
            )


# --- parsing ---------------------------------------------------------------------------
def _find_image(src: Path, stem: str, filename: str | None) -> Path | None:
    folder = src / "JPEGImages"
    if filename and (folder / filename).is_file():
        return folder / filename
    found = sorted(f for f in folder.glob(f"{glob.escape(stem)}.*") if f.suffix.lower() in IMAGE_SUFFIXES)
    return found[0] if found else None


def _text(el, tag: str) -> str | None:  # noqa: ANN001 - an ElementTree element
    child = el.find(tag)
    return child.text.strip() if child is not None and child.text is not None else None


def _issue(report: ImportReport, kind: IssueKind, file: str, detail: str, split: str | None) -> None:
    report.issues.append(VocIssue(kind=kind, file=file, detail=detail, split=split, dropped=kind in DROPPING))


def _parse(src: Path, stem: str, split: str, report: ImportReport) -> _Parsed | None:
    """Read one annotation and its image's real size; None when the image must be skipped."""
    xml_rel = f"Annotations/{stem}.xml"
    xml_path = src / xml_rel
    if not xml_path.is_file():
        _issue(
            report,
            "missing_annotation",
            xml_rel,
            f"{stem} is listed in {split}.txt but has no "
            f"{xml_rel}; image not imported (an image without objects needs an XML with none)",
            split,
        )
        return None
    try:
        root = parse_xml(xml_path).getroot()
    except (ParseError, OSError, ValueError) as exc:
        _issue(report, "bad_annotation", xml_rel, f"cannot parse XML ({exc}); image not imported", split)
        return None
    p = _Parsed(stem=stem, split=split, xml_rel=xml_rel)
    p.image = _find_image(src, stem, _text(root, "filename"))
    if p.image is None:
        _issue(report, "missing_image", xml_rel, f"no JPEGImages/{stem}.* for {xml_rel}; not imported", split)
        return None
    img_rel = p.image.relative_to(src).as_posix()
    # Decoding proves the image is usable and gives its true size, which XML <size> often gets wrong.
    try:
        raw = np.fromfile(p.image, np.uint8)
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    except (OSError, cv2.error):
        img = None
    if img is None or img.shape[0] == 0 or img.shape[1] == 0:
        _issue(report, "unreadable_image", img_rel, "OpenCV cannot decode this image; not imported", split)
        return None
    p.height, p.width = int(img.shape[0]), int(img.shape[1])
    size = root.find("size")
    if size is not None:
        xw, xh = _text(size, "width"), _text(size, "height")
        if (xw, xh) != (str(p.width), str(p.height)):
            _issue(
                report,
                "size_mismatch",
                xml_rel,
                f"<size> says {xw}x{xh} but the image is "
                f"{p.width}x{p.height}; boxes were normalised by the image's real size",
                split,
            )
    for n, obj in enumerate(root.findall("object"), start=1):
        name = _text(obj, "name")
        where = f"object {n}" + (f" ({name})" if name else "")
        bb = obj.find("bndbox")
        try:
            if not name or bb is None:
                raise ValueError("no <name> or <bndbox>")
            box = tuple(float(_text(bb, t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax"))
            if any(v != v for v in box):  # NaN: a coordinate is missing
                raise ValueError("a coordinate is missing")
        except ValueError as exc:
            _issue(report, "bad_box", xml_rel, f"{where}: {exc}; box dropped", split)
            continue
        difficult = _text(obj, "difficult") == "1"
        p.objects.append(_Object(name=name, box=box, difficult=difficult))  # type: ignore[arg-type]
    return p


# --- writing ---------------------------------------------------------------------------
def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; pick a new folder, or pass overwrite=True to replace "
                "its images/, labels/ and data.yaml"
            )
        for sub in ("images", "labels"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "data.yaml").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _place(image: Path, dest: Path) -> bool:
    """Hard-link the image (no bytes copied) or copy it; True when linked."""
    try:
        os.link(image, dest)
        return True
    except OSError:
        shutil.copy2(image, dest)
        return False


def _write(p: _Parsed, out: Path, report: ImportReport) -> None:
    assert p.image is not None
    index = {name: i for i, name in enumerate(report.classes)}
    w, h = p.width, p.height
    lines: list[str] = []
    for n, obj in enumerate(p.objects, start=1):
        where = f"object {n} ({obj.name})"
        if obj.name not in index:
            _issue(
                report,
                "unknown_class",
                p.xml_rel,
                f"{where}: class '{obj.name}' is not in "
                f"{report.classes}; box dropped (pass it in `classes` to keep it)",
                p.split,
            )
            continue
        # VOC's 1-based pixel indices are read as continuous coordinates: at most a pixel
        # off, and 0-based tools' boxes are not all flagged as out of bounds.
        x1, y1, x2, y2 = obj.box
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
        if cx2 <= cx1 or cy2 <= cy1:
            _issue(
                report,
                "zero_area_box",
                p.xml_rel,
                f"{where}: box {obj.box} has no width or height inside the {w}x{h} image; box dropped",
                p.split,
            )
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            _issue(
                report,
                "clipped_box",
                p.xml_rel,
                f"{where}: box {obj.box} crosses the {w}x{h} image edge; clipped to {(cx1, cy1, cx2, cy2)}",
                p.split,
            )
        if obj.difficult:
            _issue(report, "difficult", p.xml_rel, f"{where}: marked difficult; kept", p.split)
        lines.append(
            f"{index[obj.name]} {(cx1 + cx2) / 2 / w:.6f} {(cy1 + cy2) / 2 / h:.6f} "
            f"{(cx2 - cx1) / w:.6f} {(cy2 - cy1) / h:.6f}"
        )
    img_dir, lbl_dir = out / "images" / p.split, out / "labels" / p.split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    report.linked += _place(p.image, img_dir / p.image.name)
    (lbl_dir / f"{p.image.stem}.txt").write_text("".join(line + "\n" for line in lines))
    report.images[p.split] = report.images.get(p.split, 0) + 1
    report.boxes[p.split] = report.boxes.get(p.split, 0) + len(lines)


def _write_data_yaml(out: Path, report: ImportReport, counts: dict[str, int]) -> None:
    data: dict[str, object] = {"path": str(out), "train": "images/train"}
    data["val"] = "images/val" if counts.get("val") else "images/train"
    if not counts.get("val") and not any("val points at train" in n for n in report.notes):
        report.notes.append("no val image could be imported: data.yaml's val points at train")
    if counts.get("test"):
        data["test"] = "images/test"
    data["names"] = dict(enumerate(report.classes))
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _record(store: MetadataStore, run_id: int, source: str, report: ImportReport) -> None:
    dropped = [i for i in report.issues if i.dropped]
    for issue in dropped:
        reason = f"{issue.kind}: {issue.detail}"
        dl = store.add_dead_letter(run_id=run_id, source=source, path=issue.file, reason=reason)
        log.warning("%s: %s; recorded as dead letter #%s", issue.file, issue.detail, dl)
    store.finish_run(
        run_id,
        status="partial" if dropped else "succeeded",
        added=sum(report.images.values()),
        failed=len(dropped),
        chunks=sum(report.boxes.values()),
    )
