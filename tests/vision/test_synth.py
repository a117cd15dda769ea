"""The synthetic inspection dataset: reproducible, its shift knobs measurable, its labels right."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.datasets.synth import CLASSES, Shift, generate


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(root: Path, split: str = "train") -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((root / "images" / split).glob("*.png"))]


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    """Two generations with one seed are byte-identical (the data.yaml differs only in `path`)."""
    a, b, c = (generate(tmp_path / n, train=6, val=2, imgsz=64, seed=s) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    fa, fb, fc = _files(a.parent), _files(b.parent), _files(c.parent)
    assert sorted(fa) == sorted(fb)
    assert len([k for k in fa if k.startswith("images/train/")]) == 6
    assert len([k for k in fa if k.startswith("images/val/")]) == 2
    for key in fa:
        if key != "data.yaml":
            assert fa[key] == fb[key], key
    assert fa["data.yaml"].replace(str(a.parent.resolve()).encode(), b"") == fb["data.yaml"].replace(
        str(b.parent.resolve()).encode(), b""
    )
    differing = [k for k in fa if k.startswith("images/") and fa[k] != fc[k]]
    assert len(differing) == 8


def test_brightness_contrast_and_blur_shifts_change_the_images_measurably(tmp_path: Path) -> None:
    """Same seed, shifted: brightness moves the mean, contrast the spread, blur the sharpness."""
    base = _images(generate(tmp_path / "base", train=6, val=0, imgsz=96, seed=3).parent)
    bright = _images(generate(tmp_path / "bright", train=6, val=0, imgsz=96, seed=3, shift=Shift(brightness=40)).parent)
    flat = _images(generate(tmp_path / "flat", train=6, val=0, imgsz=96, seed=3, shift=Shift(contrast=0.5)).parent)
    blurred = _images(generate(tmp_path / "blur", train=6, val=0, imgsz=96, seed=3, shift=Shift(blur=2.0)).parent)

    for b, s in zip(base, bright):
        assert 35 < float(s.mean()) - float(b.mean()) <= 40.5
    for b, f in zip(base, flat):
        assert float(f.std()) == pytest.approx(float(b.std()) / 2, rel=0.15)

    def sharpness(img: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())

    for b, bl in zip(base, blurred):
        assert sharpness(bl) < 0.2 * sharpness(b)


def test_shift_parse_reads_the_cli_spelling_and_names_unknown_knobs() -> None:
    assert Shift.parse("brightness=40, blur=1.5,defect_look=1") == Shift(brightness=40.0, blur=1.5, defect_look=True)
    assert Shift.parse(None) == Shift()
    with pytest.raises(ValueError, match="unknown shift 'glare'.*brightness"):
        Shift.parse("glare=3")


def test_labels_are_valid_yolo_boxes_on_the_defects(tmp_path: Path) -> None:
    """Every line is `class cx cy w h`, normalised, inside the image; spot boxes centre on the dark blob."""
    size = 64
    root = generate(tmp_path / "d", train=30, val=5, imgsz=size, seed=1).parent
    seen_classes: set[int] = set()
    boxes = 0
    for split in ("train", "val"):
        for img_path in sorted((root / "images" / split).glob("*.png")):
            label = root / "labels" / split / f"{img_path.stem}.txt"
            assert label.is_file(), f"no label for {img_path.name}"
            img = cv2.imread(str(img_path))
            assert img.shape == (size, size, 3)
            for line in label.read_text().splitlines():
                fields = line.split()
                assert len(fields) == 5, line
                cls = int(fields[0])
                cx, cy, w, h = map(float, fields[1:])
                assert 0 <= cls < len(CLASSES)
                assert 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6
                if cls == CLASSES.index("spot"):  # a filled blob, dark at its centre
                    assert img[int(cy * size), int(cx * size)].mean() < 90, (img_path.name, line)
                seen_classes.add(cls)
                boxes += 1
    assert seen_classes == set(range(len(CLASSES)))
    assert boxes >= 20
    data = (root / "data.yaml").read_text()
    assert "train: images/train" in data and "val: images/val" in data
    assert all(f"{i}: {n}" in data for i, n in enumerate(CLASSES))
