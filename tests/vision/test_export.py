"""Exporting for the frames a device sees: the input takes the frames' aspect ratio.

The rectangle must be the one ultralytics' own PyTorch predict letterboxes such frames to
(`LetterBox(auto=True)`), so the edge runtime and ultralytics see the same pixels; the exported
file must declare it, since the edge runtime reads the input size from the model alone.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.export import frame_input_hw, onnx_input_hw, typical_frame_hw


@pytest.mark.parametrize(
    ("frame_hw", "imgsz", "expected"),
    [
        ((480, 640), 320, (256, 320)),  # BCCD
        ((640, 480), 320, (320, 256)),  # the same camera turned upright
        ((1080, 1920), 640, (384, 640)),
        ((120, 200), 96, (64, 96)),
        ((500, 500), 320, (320, 320)),
        ((40, 1000), 320, (32, 320)),  # never below one stride
    ],
)
def test_input_is_the_frames_aspect_at_the_stride(frame_hw, imgsz, expected) -> None:
    assert frame_input_hw(imgsz, frame_hw) == expected


@pytest.mark.parametrize("frame_hw", [(480, 640), (640, 480), (1080, 1920), (375, 500), (97, 301)])
def test_input_is_what_ultralytics_letterboxes_such_frames_to(frame_hw) -> None:
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    theirs = LetterBox((320, 320), auto=True, stride=32)(image=np.zeros((*frame_hw, 3), np.uint8)).shape[:2]
    assert frame_input_hw(320, frame_hw) == theirs


def test_typical_frame_size_is_the_most_common_one(tmp_path: Path) -> None:
    shapes = [(48, 64), (48, 64), (48, 64), (64, 64), (64, 48)]
    for i, (h, w) in enumerate(shapes):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((h, w, 3), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert typical_frame_hw(sorted(tmp_path.glob("*.png"))) == (48, 64)
    assert typical_frame_hw([tmp_path / "broken.png"]) is None


def test_export_for_4_3_frames_declares_a_rectangular_input(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from vision.yolo_env import prepare_ultralytics

    prepare_ultralytics(tmp_path / "yolo-home")
    from ultralytics import YOLO

    from edge.detector import Detector
    from vision.export import export_onnx

    weights = tmp_path / "untrained.pt"
    YOLO("yolov8n.yaml").save(weights)
    out = export_onnx(weights, tmp_path / "model.onnx", imgsz=128, frame_hw=(480, 640))

    assert onnx_input_hw(out) == (96, 128)
    detector = Detector(out)
    assert detector.imgsz == (96, 128), "the edge runtime reads the input size from the exported file"
    detector.detect(np.full((480, 640, 3), 90, np.uint8))  # a 4:3 frame runs through it


@pytest.mark.slow
def test_a_release_is_shaped_like_its_training_frames(tmp_path: Path) -> None:
    """`vision export` (export_version) reads the training frames' size and exports for it; the
    square stays one option away, and both variants score on the validation set."""
    pytest.importorskip("mlflow")
    from shared.config import Settings
    from shared.metadata.store import MetadataStore
    from vision.datasets.synth import generate
    from vision.registry import ModelRegistry
    from vision.release import export_version
    from vision.training import train_detector

    settings = Settings(home=tmp_path / "home", train_threads=2)
    data = generate(tmp_path / "data", train=8, val=4, imgsz=128, seed=3)
    for image in (tmp_path / "data" / "images").rglob("*.*"):  # 4:3 frames; YOLO labels are relative
        cv2.imwrite(str(image), cv2.resize(cv2.imread(str(image)), (128, 96)))
    registry = ModelRegistry.from_settings(settings)
    res = train_detector(
        settings, MetadataStore(settings.resolved_database_url), registry, data=data, epochs=1, imgsz=128, batch=4
    )

    shaped = export_version(settings, registry, res.version)
    assert onnx_input_hw(Path(shaped["onnx"]["fp32"])) == (96, 128)
    square = export_version(settings, registry, res.version, square_input=True)
    assert onnx_input_hw(Path(square["onnx"]["fp32"])) == (128, 128)
    assert all(v["mAP50"] is not None for v in shaped["variants"].values())
