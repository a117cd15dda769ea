"""Pascal VOC import: splits kept, boxes converted, and every real-world flaw reported, not fatal."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import cv2
import numpy as np
import pytest
import yaml

from shared.metadata.store import MetadataStore
from vision.datasets.versions import snapshot
from vision.datasets.voc import import_voc

W, H = 100, 80


def _image(path: Path, seed: int, w: int = W, h: int = H) -> None:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def _xml(path: Path, filename: str, objects: list[tuple], w: int = W, h: int = H) -> None:
    objs = "".join(
        f"<object><name>{escape(name)}</name><difficult>{int(difficult)}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, x1, y1, x2, y2, *rest in objects
        for difficult in [bool(rest and rest[0])]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{w}</width><height>{h}</height>"
        f"<depth>3</depth></size>{objs}</annotation>"
    )


def _splits(root: Path, **splits: list[str]) -> None:
    main = root / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    for split, ids in splits.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    """A tiny VOC tree with one of each flaw real datasets have."""
    root = tmp_path / "VOC"
    ann, jpg = root / "Annotations", root / "JPEGImages"
    for i, stem in enumerate("abcfgkn"):
        _image(jpg / f"{stem}.jpg", seed=i)
    _xml(ann / "a.xml", "a.jpg", [("cat", 10, 20, 50, 60), ("dog", 0, 0, 100, 80)])
    _xml(ann / "b.xml", "b.jpg", [("dog", 20, 20, 40, 40, True)])  # difficult
    _xml(ann / "c.xml", "c.jpg", [("cat", -5, 10, 120, 70)])  # crosses the left and right edges
    (ann / "d.xml").write_text("<annotation><object><name>cat</name>")  # truncated XML
    (jpg / "d.jpg").write_bytes((jpg / "a.jpg").read_bytes())
    (jpg / "e.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")  # unreadable image
    _xml(ann / "e.xml", "e.jpg", [("cat", 1, 1, 10, 10)])
    _xml(ann / "f.xml", "f.jpg", [("cat", 30, 30, 30, 50), ("dog", 5, 5, 25, 25)])  # zero-width cat
    _xml(ann / "g.xml", "g.jpg", [("cat", 1, 1, 10, 10)])  # in no split
    _xml(ann / "k.xml", "k.jpg", [("person", 10, 10, 30, 30), ("cat", 50, 40, 90, 80)])
    _xml(ann / "m.xml", "m.jpg", [("cat", 1, 1, 10, 10)])  # its image is missing
    _xml(ann / "n.xml", "n.jpg", [("dog", 10, 10, 90, 70)], w=0, h=0)  # a wrong <size>
    # h is listed but has no annotation; a is listed in test as well as train
    _splits(root, train=["a", "b", "f", "h"], val=["c", "d", "k"], test=["e", "m", "n", "a"])
    return root


def _labels(out: Path, split: str, stem: str) -> list[str]:
    return (out / "labels" / split / f"{stem}.txt").read_text().splitlines()


def _stems(out: Path, kind: str, split: str) -> list[str]:
    return sorted(p.stem for p in (out / kind / split).iterdir())


def test_splits_are_kept_and_boxes_converted_to_normalised_yolo(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    report = import_voc(voc, out)

    assert report.classes == ["cat", "dog", "person"]
    assert report.images == {"train": 3, "val": 2, "test": 1}
    assert _stems(out, "images", "train") == _stems(out, "labels", "train") == ["a", "b", "f"]
    assert _stems(out, "images", "val") == ["c", "k"]
    assert _stems(out, "images", "test") == ["n"]
    assert _labels(out, "train", "a") == [
        "0 0.300000 0.500000 0.400000 0.500000",  # cat (10,20)-(50,60) in 100x80
        "1 0.500000 0.500000 1.000000 1.000000",  # dog: the whole image
    ]
    assert _labels(out, "val", "k") == [
        "2 0.200000 0.250000 0.200000 0.250000",
        "0 0.700000 0.750000 0.400000 0.500000",
    ]
    assert report.boxes == {"train": 4, "val": 3, "test": 1}

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "names": {0: "cat", 1: "dog", 2: "person"},
    }


def test_flaws_are_reported_and_dead_lettered_while_the_rest_imports(
    voc: Path, tmp_path: Path, store: MetadataStore
) -> None:
    out = tmp_path / "yolo"
    report = import_voc(voc, out, store=store)

    assert report.counts() == {
        "bad_annotation": 1,
        "clipped_box": 1,
        "difficult": 1,
        "missing_annotation": 1,
        "missing_image": 1,
        "size_mismatch": 1,
        "split_overlap": 1,
        "unlisted_image": 1,
        "unreadable_image": 1,
        "zero_area_box": 1,
    }
    files = {i.kind: i.file for i in report.issues}
    assert files["bad_annotation"] == "Annotations/d.xml"
    assert files["unreadable_image"] == "JPEGImages/e.jpg"
    assert files["missing_image"] == "Annotations/m.xml"
    assert files["missing_annotation"] == "Annotations/h.xml"
    assert files["unlisted_image"] == "Annotations/g.xml"
    assert "also in train" in report.of_kind("split_overlap")[0].detail

    # the difficult object is kept, the out-of-bounds box clipped to the image, the empty box dropped
    assert _labels(out, "train", "b") == ["1 0.300000 0.375000 0.200000 0.250000"]
    assert _labels(out, "val", "c") == ["0 0.500000 0.500000 1.000000 0.750000"]
    assert _labels(out, "train", "f") == ["1 0.150000 0.187500 0.200000 0.250000"]
    assert "a" not in _stems(out, "images", "test")
    assert _labels(out, "test", "n") == ["1 0.500000 0.500000 0.800000 0.750000"]  # by the real 100x80

    letters = store.dead_letters(run_id=report.run_id)
    assert sorted(dl.path for dl in letters) == sorted(
        [
            "Annotations/d.xml",
            "JPEGImages/e.jpg",
            "Annotations/m.xml",
            "Annotations/h.xml",
            "Annotations/g.xml",
            "Annotations/f.xml",
        ]
    )
    assert all(dl.reason.split(":")[0] in report.counts() for dl in letters)
    run = store.get_run(report.run_id)
    assert (run.kind, run.status, run.added, run.failed, run.chunks) == ("import", "partial", 6, 6, 8)


def test_given_classes_set_the_ids_and_drop_unknown_names(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    report = import_voc(voc, out, classes=["dog", "cat"])

    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "dog", 1: "cat"}
    assert _labels(out, "train", "a") == [
        "1 0.300000 0.500000 0.400000 0.500000",
        "0 0.500000 0.500000 1.000000 1.000000",
    ]
    assert _labels(out, "val", "k") == ["1 0.700000 0.750000 0.400000 0.500000"]
    [unknown] = report.of_kind("unknown_class")
    assert unknown.file == "Annotations/k.xml" and "'person'" in unknown.detail and unknown.dropped

    with pytest.raises(ValueError, match="duplicates"):
        import_voc(voc, tmp_path / "other", classes=["dog", "dog"])


def test_trainval_only_is_imported_as_train_and_said_so(tmp_path: Path) -> None:
    root = tmp_path / "VOC"
    for i, stem in enumerate(["x", "y"]):
        _image(root / "JPEGImages" / f"{stem}.jpg", seed=i)
        _xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", [("cat", 10, 10, 50, 50)])
    _splits(root, trainval=["x", "y"])

    report = import_voc(root, tmp_path / "yolo")

    assert report.images == {"train": 2}
    assert any("trainval" in note and "val points at train" in note for note in report.notes)
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert (data["train"], data["val"]) == ("images/train", "images/train")
    assert "test" not in data


def test_images_are_linked_or_copied_byte_for_byte(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    report = import_voc(voc, out)
    for split, stems in (("train", "abf"), ("val", "ck"), ("test", "n")):
        for stem in stems:
            copied = (out / "images" / split / f"{stem}.jpg").read_bytes()
            assert copied == (voc / "JPEGImages" / f"{stem}.jpg").read_bytes()
    assert report.linked == 6  # same filesystem: hard links, no bytes copied


def test_a_non_empty_output_needs_overwrite(voc: Path, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    import_voc(voc, out)
    (out / "notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        import_voc(voc, out)

    report = import_voc(voc, out, classes=["cat", "dog"], overwrite=True)

    assert report.images == {"train": 3, "val": 2, "test": 1}
    assert (out / "notes.md").read_text() == "mine"
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "cat", 1: "dog"}


def test_an_imported_dataset_snapshots_without_exclusions(
    voc: Path, tmp_path: Path, sqlite_store: MetadataStore
) -> None:
    """The converter's output passes the dataset validator untouched."""
    report = import_voc(voc, tmp_path / "yolo")
    version = snapshot(Path(report.data_yaml), sqlite_store, name="voc")
    assert version.excluded == ()
    assert {s: c["images"] for s, c in version.counts.items()} == report.images
    assert {s: c["boxes"] for s, c in version.counts.items()} == report.boxes
