"""The edge runtime's pre- and post-processing on hand-made inputs, and its model-file errors.

No trained model needed: boxes are fed to `postprocess` as a fake (1, 4+nc, N) model output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detector import Detector, ModelError
from edge.postprocess import NMS_BLOCK, class_aware_nms, postprocess
from edge.preprocess import letterbox_geometry, preprocess

NAMES = {0: "scratch", 1: "spot", 2: "crack"}


def fake_output(rows: list[tuple[float, float, float, float, int, float]], nc: int = 3) -> np.ndarray:
    """(x1, y1, x2, y2, cls, score) in model-input pixels → a YOLOv8 (1, 4+nc, N) output."""
    out = np.zeros((1, 4 + nc, len(rows)), np.float32)
    for i, (x1, y1, x2, y2, cls, score) in enumerate(rows):
        out[0, :4, i] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        out[0, 4 + cls, i] = score
    return out


@pytest.mark.parametrize(
    ("hw", "resized", "pad"),
    [
        ((120, 200), (58, 96), (0, 19)),
        ((200, 120), (96, 58), (19, 0)),
        ((48, 48), (96, 96), (0, 0)),
        ((30, 61), (47, 96), (0, 24)),
    ],
)
def test_letterbox_keeps_aspect_and_centres(hw, resized, pad) -> None:
    image = np.zeros((*hw, 3), np.uint8)
    tensor, geo = preprocess(image, (96, 96))
    assert tensor.shape == (1, 3, 96, 96) and tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert geo.resized_hw == resized and geo.pad == pad
    (top, bottom), (left, right) = (pad[1], 96 - resized[0] - pad[1]), (pad[0], 96 - resized[1] - pad[0])
    grey = np.float32(114) / np.float32(255)
    content = np.zeros((96, 96), bool)
    content[top : 96 - bottom, left : 96 - right] = True
    assert np.all(tensor[0][:, content] == 0), "the frame itself sits inside the padding"
    assert np.all(tensor[0][:, ~content] == grey), "padding is grey 114"


@pytest.mark.parametrize(
    ("hw", "input_hw", "resized", "pad"),
    [
        ((480, 640), (256, 320), (240, 320), (0, 8)),  # 4:3 frames in the input exported for them
        ((640, 480), (256, 320), (256, 192), (64, 0)),  # the camera turned upright
        ((96, 96), (64, 96), (64, 64), (16, 0)),
    ],
)
def test_letterbox_fills_a_rectangular_input(hw, input_hw, resized, pad) -> None:
    tensor, geo = preprocess(np.full((*hw, 3), 200, np.uint8), input_hw)
    assert tensor.shape == (1, 3, *input_hw) and tensor.flags.c_contiguous
    assert geo.resized_hw == resized and geo.pad == pad
    (left, top), (h, w) = pad, resized
    assert np.all(tensor[0, :, top : top + h, left : left + w] == np.float32(200) / np.float32(255))
    assert np.isclose(tensor[0].sum(), 3 * (h * w * 200 + (np.prod(input_hw) - h * w) * 114) / 255, rtol=1e-5)


def test_tensor_is_rgb_scaled_to_unit_range() -> None:
    image = np.zeros((96, 96, 3), np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    image[..., 2] = 51
    tensor, _ = preprocess(image, (96, 96))
    assert np.allclose(tensor[0, 0], 0.2) and np.all(tensor[0, 1] == 0) and np.all(tensor[0, 2] == 1.0)


@pytest.mark.parametrize("hw", [(120, 200), (200, 120), (37, 59), (480, 640)])
def test_box_found_in_the_model_input_maps_back_to_the_source_box(hw) -> None:
    """A white rectangle, located in the letterboxed input, comes back where it was drawn."""
    h, w = hw
    x1, y1, x2, y2 = int(w * 0.2), int(h * 0.35), int(w * 0.7), int(h * 0.9)
    image = np.zeros((h, w, 3), np.uint8)
    image[y1:y2, x1:x2] = 255
    tensor, geo = preprocess(image, (96, 96))
    ys, xs = np.nonzero(tensor[0, 0] > 0.5)
    found = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    [det] = postprocess(fake_output([(*found, 1, 0.9)]), geo, NAMES)
    tolerance = 1.0 / min(geo.gain) + 0.5  # one input pixel, in source pixels
    assert np.allclose(det.box, (x1, y1, x2, y2), atol=tolerance), (det.box, (x1, y1, x2, y2))
    assert (det.cls, det.name) == (1, "spot")


def test_nms_suppresses_overlapping_boxes_of_one_class_only() -> None:
    geo = letterbox_geometry((96, 96), (96, 96))
    rows = [
        (10, 10, 50, 50, 0, 0.9),
        (12, 12, 52, 52, 0, 0.8),  # IoU 0.82 with the first, same class: suppressed
        (12, 12, 52, 52, 2, 0.7),  # same box, another class: kept
        (60, 60, 90, 90, 0, 0.6),  # no overlap: kept
        (10, 10, 50, 70, 0, 0.5),  # IoU 0.667 with the first: under 0.7, kept
    ]
    dets = postprocess(fake_output(rows), geo, NAMES, conf=0.25, iou=0.7)
    assert [(d.cls, round(d.score, 2)) for d in dets] == [(0, 0.9), (2, 0.7), (0, 0.6), (0, 0.5)]
    stricter = postprocess(fake_output(rows), geo, NAMES, conf=0.25, iou=0.5)
    assert [(d.cls, round(d.score, 2)) for d in stricter] == [(0, 0.9), (2, 0.7), (0, 0.6)]


def test_nms_keeps_exactly_what_torchvision_keeps() -> None:
    """Many crowded candidates (several NMS blocks), three classes and tied scores: the same indices
    in the same order as torchvision's NMS on ultralytics' class-offset boxes."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    n = 3 * NMS_BLOCK + 17
    xy = rng.uniform(0, 300, (n, 2)).astype(np.float32)
    boxes = np.concatenate((xy, xy + rng.uniform(5, 60, (n, 2)).astype(np.float32)), axis=1)
    scores = np.round(rng.uniform(0, 1, n), 2).astype(np.float32)  # many ties
    classes = rng.integers(0, 3, n)
    for iou in (0.3, 0.7):
        ours = class_aware_nms(boxes, scores, classes, iou)
        offset = torch.from_numpy(classes.astype(np.float32))[:, None] * 7680
        theirs = torchvision.ops.nms(torch.from_numpy(boxes) + offset, torch.from_numpy(scores), iou).numpy()
        assert len(ours) > NMS_BLOCK and ours.tolist() == theirs.tolist()


def test_confidence_threshold_and_max_det() -> None:
    geo = letterbox_geometry((96, 96), (96, 96))
    rows = [(i * 9, 0, i * 9 + 8, 8, 0, 0.1 * (i + 1)) for i in range(9)]
    assert {round(d.score, 1) for d in postprocess(fake_output(rows), geo, NAMES, conf=0.55)} == {0.6, 0.7, 0.8, 0.9}
    assert [round(d.score, 1) for d in postprocess(fake_output(rows), geo, NAMES, conf=0.05, max_det=2)] == [0.9, 0.8]


def test_boxes_are_clipped_to_the_source_image() -> None:
    geo = letterbox_geometry((120, 200), (96, 96))  # content rows 19..77 of the input
    [det] = postprocess(fake_output([(-10, 5, 120, 90, 2, 0.9)]), geo, NAMES)
    assert det.box == (0.0, 0.0, 200.0, 120.0)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.onnx not found.*export"):
        Detector(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="not a file"):
        Detector(tmp_path)


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model\n", bytes(range(256)) * 40])
def test_corrupt_model_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match=r"model\.onnx is not a loadable ONNX model.*re-export"):
        Detector(bad)
