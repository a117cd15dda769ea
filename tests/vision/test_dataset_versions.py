"""Dataset versions, on SQLite and PostgreSQL: content identity, exclusion of bad pairs, list files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from shared.ingestion.schema import SchemaError
from shared.metadata.store import MetadataStore
from vision.datasets.synth import CLASSES, generate
from vision.datasets.version_store import DatasetVersionStore
from vision.datasets.versions import parse_label_line, snapshot, verify


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A small synthetic YOLO dataset; returns its data.yaml."""
    return generate(tmp_path / "plates", train=6, val=3, imgsz=64, seed=5)


def _listed(list_file: Path) -> list[str]:
    return [Path(line).name for line in list_file.read_text().splitlines()]


def _label_with_boxes(root: Path, split: str = "train") -> Path:
    return next(p for p in sorted((root / "labels" / split).glob("*.txt")) if p.read_text().strip())


def test_unchanged_data_gives_the_same_version_without_a_second_row(dataset: Path, store: MetadataStore) -> None:
    first = snapshot(dataset, store)
    second = snapshot(dataset, store)

    assert first.created and not second.created
    assert second.version == first.version and len(first.version) == 12
    assert second.record.id == first.record.id
    assert [v.ref for v in DatasetVersionStore(store).versions()] == [f"plates@{first.version}"]
    assert first.counts["train"]["images"] == 6 and first.counts["val"]["images"] == 3
    assert first.classes == CLASSES
    rerun = store.get_run(second.run_id)
    assert (rerun.kind, rerun.status, rerun.added, rerun.unchanged, rerun.failed) == ("dataset", "succeeded", 0, 9, 0)
    assert store.get_run(first.run_id).added == 9


def test_a_changed_label_gives_a_new_version_and_both_stay_addressable(dataset: Path, store: MetadataStore) -> None:
    old = snapshot(dataset, store, name="plates")
    label = _label_with_boxes(dataset.parent)
    cls, *coords = label.read_text().splitlines()[0].split()
    label.write_text(f"{(int(cls) + 1) % len(CLASSES)} {' '.join(coords)}\n")

    new = snapshot(dataset, store, name="plates")

    assert new.created and new.version != old.version
    versions = DatasetVersionStore(store)
    assert [v.version for v in versions.versions("plates")] == [new.version, old.version]
    assert versions.versions("other") == []
    assert versions.get("plates").version == new.version  # latest
    assert versions.get(f"plates@{old.version}").id == old.record.id
    assert versions.get(old.record.id).version == old.version
    assert versions.get(str(new.record.id)).version == new.version
    assert versions.get("plates@000000000000") is None
    assert versions.get("nope") is None
    # each version has its own folder; the old one is told the data moved on
    assert new.data_yaml != old.data_yaml and old.data_yaml.is_file()
    assert verify(new.record) == []
    assert verify(old.record) == [f"labels/train/{label.name}: changed since plates@{old.version}"]


def test_same_content_elsewhere_is_the_same_version(dataset: Path, tmp_path: Path, store: MetadataStore) -> None:
    """The version names the data, not where it lies."""
    copy = tmp_path / "copy" / "plates"
    shutil.copytree(dataset.parent, copy)
    (copy / "data.yaml").write_text((copy / "data.yaml").read_text().replace(str(dataset.parent.resolve()), str(copy)))
    assert snapshot(dataset, store).version == snapshot(copy / "data.yaml", store).version


def test_corrupt_image_and_bad_labels_are_dead_lettered_and_left_out_of_training(
    dataset: Path, store: MetadataStore
) -> None:
    root = dataset.parent
    train_images = sorted(p.name for p in (root / "images" / "train").glob("*.png"))
    corrupt = root / "images" / "train" / train_images[0]
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    out_of_range = root / "labels" / "train" / f"{Path(train_images[1]).stem}.txt"
    out_of_range.write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    six_fields = root / "labels" / "val" / "val_00000.txt"
    six_fields.write_text("1 0.5 0.5 0.2 0.2 0.9\n")

    version = snapshot(dataset, store)

    reasons = {dl.path: dl.reason for dl in store.dead_letters(run_id=version.run_id)}
    assert set(reasons) == {
        f"images/train/{train_images[0]}",
        f"labels/train/{out_of_range.name}",
        "labels/val/val_00000.txt",
    }
    assert "OpenCV cannot decode" in reasons[f"images/train/{train_images[0]}"]
    assert reasons[f"labels/train/{out_of_range.name}"].startswith(f"labels/train/{out_of_range.name}: line 2:")
    assert "'class_id'" in reasons[f"labels/train/{out_of_range.name}"]
    assert "less than 3" in reasons[f"labels/train/{out_of_range.name}"]
    assert "line 1" in reasons["labels/val/val_00000.txt"] and "6 fields" in reasons["labels/val/val_00000.txt"]
    assert {e.file for e in version.excluded} == set(reasons)

    folder = version.data_yaml.parent
    assert _listed(folder / "train.txt") == train_images[2:]
    assert _listed(folder / "val.txt") == ["val_00001.png", "val_00002.png"]
    assert version.counts["train"]["images"] == 4 and version.counts["train"]["excluded"] == 2
    assert version.counts["val"] == {**version.counts["val"], "images": 2, "excluded": 1}
    listed = {r["image"] for rows in version.record.manifest["splits"].values() for r in rows}
    assert f"images/train/{train_images[0]}" not in listed
    run = store.get_run(version.run_id)
    assert (run.kind, run.status, run.added, run.failed) == ("dataset", "partial", 6, 3)

    # fixing the label brings its image back, as a new version
    out_of_range.write_text("0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n")
    fixed = snapshot(dataset, store)
    assert fixed.version != version.version
    assert _listed(fixed.data_yaml.parent / "train.txt") == train_images[1:]


def test_the_derived_data_yaml_points_at_list_files_of_checked_images(dataset: Path, store: MetadataStore) -> None:
    """What ultralytics will read: the version's lists, each image with its label beside /labels/."""
    version = snapshot(dataset, store, name="plates")
    derived = yaml.safe_load(version.data_yaml.read_text())

    assert Path(derived["path"]) == version.data_yaml.parent
    assert version.data_yaml.parent.name == version.version
    assert (derived["train"], derived["val"]) == ("train.txt", "val.txt") and "test" not in derived
    assert derived["names"] == dict(enumerate(CLASSES))
    assert version.record.data_yaml == str(version.data_yaml)
    assert version.record.source_yaml == str(dataset.resolve())
    for split, count in (("train", 6), ("val", 3)):
        images = [Path(line) for line in (version.data_yaml.parent / f"{split}.txt").read_text().splitlines()]
        assert len(images) == count
        for img in images:
            assert img.is_absolute() and img.is_file()
            assert Path(str(img).replace("/images/", "/labels/")).with_suffix(".txt").is_file()
    assert version.data_yaml.read_text().startswith(f"# plates@{version.version}")


def test_an_image_without_label_file_is_a_background_image(dataset: Path, store: MetadataStore) -> None:
    (dataset.parent / "labels" / "val" / "val_00002.txt").unlink()
    version = snapshot(dataset, store)
    assert version.excluded == ()
    assert version.counts["val"]["images"] == 3 and version.counts["val"]["background"] == 1


def test_a_data_yaml_without_names_is_refused_with_the_fix(dataset: Path, store: MetadataStore) -> None:
    dataset.write_text(f"path: {dataset.parent}\ntrain: images/train\nval: images/val\n")
    with pytest.raises(ValueError, match="'names' is missing"):
        snapshot(dataset, store)
    assert DatasetVersionStore(store).versions() == []


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("3 0.5 0.5 0.1 0.1", "class_id"),
        ("-1 0.5 0.5 0.1 0.1", "class_id"),
        ("a 0.5 0.5 0.1 0.1", "class_id"),
        ("0 1.5 0.5 0.1 0.1", "x_center"),
        ("0 0.5 -0.1 0.1 0.1", "y_center"),
        ("0 0.5 0.5 0 0.1", "width"),
        ("0 0.5 0.5 0.1 nan", "height"),
        ("0 0.5 0.5 0.1", "<line>"),
    ],
)
def test_label_lines_are_checked_field_by_field(line: str, field: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_label_line(line, num_classes=3)
    assert err.value.field == field


def test_schema_messages_keep_patterns_and_values_as_written() -> None:
    """validate_record (behind every label line) lowers only the first letter of pydantic's message."""
    from pydantic import BaseModel, Field

    from shared.ingestion.schema import validate_record

    class Part(BaseModel):
        code: str = Field(pattern=r"^[A-Z]{2}-[0-9]+$")

    with pytest.raises(SchemaError) as err:
        validate_record(Part, {"code": "ab-1"})
    assert err.value.problem == "string should match pattern '^[A-Z]{2}-[0-9]+$'"


def test_a_valid_label_line_parses_including_integral_float_classes() -> None:
    box = parse_label_line("2.0 0.5 0.25 1 0.1", num_classes=3)
    assert (box.class_id, box.x_center, box.y_center, box.width, box.height) == (2, 0.5, 0.25, 1.0, 0.1)
