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
