"""Train/serve skew: on the same frames the edge runtime reports what ultralytics reports.

Compared with ultralytics' own predictions for the same ONNX file (FP32 and INT8: identical
input tensors, so boxes and scores must agree to float precision) and for the .pt weights
(PyTorch vs ONNX Runtime kernels; `rect=False`, because ultralytics letterboxes .pt input to a
minimal rectangle by default, which a static-shape export cannot do). Each holds for the
square export and for the export shaped like wide frames (a 64x96 input), whose size the edge
runtime reads from the model. Frames include square, wide, tall and upscaled ones, so the
letterbox and the mapping back to source pixels are checked on both inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pytest

from edge.detector import Detector
from edge.preprocess import preprocess
from edge.types import Detection

RECT_HW = (64, 96)  # the input `rect_onnx` must have: 96 on the long side of 120x200 frames, 64 = 2 strides

CONF = 0.001  # the tiny model scores low: compare everything it proposes
IOU = 0.7

Found = tuple[int, float, tuple[float, float, float, float]]


@dataclass
class Agreement:
    """How far two detection lists are apart after matching."""

    matched: int
    min_iou: float
    max_score_diff: float
    unmatched: list[str]


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(a == b)


def _one_way(a: list[Found], b: list[Found], floor: float, agreement: Agreement, label: str) -> None:
    """Every detection in `a` scoring at least `floor` must have a same-class partner in `b`."""
    used: set[int] = set()
    for cls, score, box in sorted(a, key=lambda f: -f[1]):
        # identical boxes (e.g. several clipped to the whole frame) are told apart by score
        candidates = [(_box_iou(box, b[k][2]), k) for k in range(len(b)) if k not in used and b[k][0] == cls]
        best_iou, k = max(candidates, key=lambda c: c[0] - abs(score - b[c[1]][1]), default=(0.0, -1))
        if best_iou < 0.5:
            if score >= floor:
                agreement.unmatched.append(f"{label}: cls {cls} score {score:.5f} box {[round(v, 1) for v in box]}")
            continue
        used.add(k)
        if score >= floor:
            agreement.matched += 1
            agreement.min_iou = min(agreement.min_iou, best_iou)
            agreement.max_score_diff = max(agreement.max_score_diff, abs(score - b[k][1]))


def compare(edge: list[Found], ref: list[Found], *, score_tol: float) -> Agreement:
    """Match both ways; detections within `score_tol` of the threshold may be missing on one side."""
    agreement = Agreement(0, 1.0, 0.0, [])
    floor = CONF + score_tol
    _one_way(edge, ref, floor, agreement, "only in edge")
    _one_way(ref, edge, floor, agreement, "only in ultralytics")
    return agreement


def compare_frames(
    frames: list[tuple[str, np.ndarray]],
    edge_fn: Callable[[np.ndarray], list[Found]],
    ref_fn: Callable[[np.ndarray], list[Found]],
    *,
    score_tol: float,
) -> Agreement:
    """`compare` over all frames, keeping the worst numbers and every unmatched detection."""
    total = Agreement(0, 1.0, 0.0, [])
    for name, image in frames:
        got = compare(edge_fn(image), ref_fn(image), score_tol=score_tol)
        total.matched += got.matched
        total.min_iou = min(total.min_iou, got.min_iou)
        total.max_score_diff = max(total.max_score_diff, got.max_score_diff)
        total.unmatched += [f"{name} {u}" for u in got.unmatched]
    return total


def _edge(detector: Detector, image: np.ndarray) -> list[Found]:
    return [(d.cls, d.score, d.box) for d in detector.detect(image)]


def _ultralytics(model: Any, image: np.ndarray, imgsz: int | tuple[int, int], **kwargs: Any) -> list[Found]:
    result = model.predict(image, conf=CONF, iou=IOU, imgsz=imgsz, verbose=False, **kwargs)[0]
    boxes = result.boxes
    return [
        (int(c), float(s), tuple(float(v) for v in xyxy))
        for c, s, xyxy in zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist())
    ]


@pytest.fixture(scope="module")
def frames(tiny_model) -> list[tuple[str, np.ndarray]]:
    """Validation plates plus wide, tall and small (upscaled) frames cut from larger plates."""
    from vision.datasets.synth import render_plate

    out = [(p.name, cv2.imread(str(p))) for p in tiny_model.val_images]
    rng = np.random.default_rng(7)
    for i in range(3):
        plate, _ = render_plate(rng, 200)
        out.append((f"wide{i}-120x200", np.ascontiguousarray(plate[40:160])))
        out.append((f"tall{i}-200x120", np.ascontiguousarray(plate[:, 30:150])))
    out.append(("small-50x70", cv2.resize(out[0][1], (70, 50), interpolation=cv2.INTER_AREA)))
    return out


@pytest.fixture(scope="module", params=["square", "rect"])
def fp32_onnx(request: pytest.FixtureRequest, tiny_model):
    """(FP32 ONNX file, its input (h, w)): the square export and the one shaped like wide frames."""
    if request.param == "square":
        return tiny_model.onnx, (tiny_model.imgsz, tiny_model.imgsz)
    return request.getfixturevalue("rect_onnx"), RECT_HW


ONNX_FIXTURES = {"fp32": None, "int8": "int8_onnx", "rect-fp32": "rect_onnx", "rect-int8": "rect_int8_onnx"}


@pytest.fixture(scope="module", params=list(ONNX_FIXTURES))
def served(request: pytest.FixtureRequest, tiny_model):
    """(edge detector, ultralytics model, input (h, w)) on the same ONNX file."""
    fixture = ONNX_FIXTURES[request.param]
    path = request.getfixturevalue(fixture) if fixture else tiny_model.onnx
    hw = RECT_HW if request.param.startswith("rect") else (tiny_model.imgsz, tiny_model.imgsz)
    yolo = request.getfixturevalue("yolo")
    return Detector(path, conf=CONF, iou=IOU), yolo(str(path), task="detect"), hw


def test_model_gives_image_dependent_localised_boxes(tiny_model, frames) -> None:
    """Guard: with a degenerate model (constant scores, whole-frame boxes) parity would prove nothing."""
    detector = Detector(tiny_model.onnx, conf=CONF, iou=IOU)
    per_frame = [detector.detect(image) for _, image in frames]
    localised = [d for dets, (_, image) in zip(per_frame, frames) for d in dets if _is_local(d, image)]
    assert len(localised) >= 10, f"only {len(localised)} localised boxes: the tiny model did not train"
    assert len({tuple(round(v) for v in d.box) for d in localised}) >= 10, "boxes do not depend on the image"


def _is_local(d: Detection, image: np.ndarray) -> bool:
    h, w = image.shape[:2]
    return (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) < 0.5 * w * h


def test_input_tensor_is_bit_identical_to_ultralytics(fp32_onnx, yolo, frames) -> None:
    path, hw = fp32_onnx
    detector = Detector(path, conf=CONF, iou=IOU)
    assert detector.imgsz == hw, "the edge runtime letterboxes to the input the model declares"
    model = yolo(str(path), task="detect")
    model.predict(frames[0][1], imgsz=hw, verbose=False)  # builds ultralytics' predictor
    for name, image in frames:
        theirs = model.predictor.preprocess([image]).cpu().numpy()
        ours, _ = preprocess(image, detector.imgsz)
        assert ours.dtype == np.float32 and ours.flags.c_contiguous
        assert ours.shape == theirs.shape == (1, 3, *hw), name
        assert np.array_equal(ours, theirs), f"{name}: {np.abs(ours - theirs).max()} max pixel difference"


def test_detections_match_ultralytics_on_the_same_onnx(served, frames) -> None:
    detector, model, hw = served
    assert detector.names == model.names, "class names must survive export and quantization"
    assert detector.imgsz == hw
    total = compare_frames(
        frames,
        lambda image: _edge(detector, image),
        lambda image: _ultralytics(model, image, hw),
        score_tol=1e-4,
    )
    assert not total.unmatched, total.unmatched
    assert total.matched >= 20, f"only {total.matched} detections compared"
    assert total.min_iou >= 0.999 and total.max_score_diff <= 1e-4, total


def test_fp32_detections_match_ultralytics_on_the_pt_weights(fp32_onnx, tiny_model, yolo, frames) -> None:
    path, hw = fp32_onnx
    detector = Detector(path, conf=CONF, iou=IOU)
    model = yolo(str(tiny_model.pt))
    total = compare_frames(
        frames,
        lambda image: _edge(detector, image),
        lambda image: _ultralytics(model, image, hw, rect=False, device="cpu"),
        score_tol=2e-3,
    )
    assert not total.unmatched, total.unmatched
    assert total.matched >= 20, f"only {total.matched} detections compared"
    assert total.min_iou >= 0.99 and total.max_score_diff <= 2e-3, total
