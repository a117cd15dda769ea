"""Turn a YOLOv8/11 ONNX output into detections in source-image pixels.

Mirrors ultralytics' `non_max_suppression` (agnostic=False, single best class per box, strict
`> conf`, greedy NMS that suppresses IoU > threshold, the per-class coordinate offset trick,
30 000 candidates, `max_det`) and `scale_boxes`, in float32 numpy so results match the
training stack's predictions (the parity tests hold it to that). It does not letterbox or run
the model; masks, keypoints and rotated boxes are out of scope.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from edge.preprocess import Letterbox
from edge.types import Detection

MAX_WH = 7680  # per-class offset ultralytics adds so one NMS pass never mixes classes
MAX_NMS = 30_000  # candidates kept (by score) before NMS, as ultralytics
NMS_BLOCK = 256  # candidates whose IoU rows NMS computes in one numpy call (bounds its memory)


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """Centre/size boxes → corner boxes (float32, same arithmetic as ultralytics)."""
    half = xywh[:, 2:4] / np.float32(2)
    return np.concatenate((xywh[:, :2] - half, xywh[:, :2] + half), axis=1)


def decode(output: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, 4+nc, N) raw output → boxes xyxy, best-class scores and classes above `conf`.

    Thresholds the best score of every anchor on the output's own (4+nc, N) layout first, so
    only the few candidates are gathered, transposed and converted.
    """
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] < 5:
        raise ValueError(f"expected a (1, 4+classes, N) detection output, got shape {output.shape}")
    raw = output[0].astype(np.float32, copy=False)  # (4+nc, N)
    best = raw[4:].max(0)
    idx = np.flatnonzero(best > conf)
    candidates = raw[:, idx].T  # (k, 4+nc)
    classes = candidates[:, 4:].argmax(1).astype(np.int64)  # first of tied classes, as torch.max
    return xywh_to_xyxy(candidates[:, :4]), best[idx], classes


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS (as torchvision): indices kept, by descending score; drops IoU > `iou`.

    The IoU rows of up to NMS_BLOCK boxes still standing are computed at once against every
    later box (float32, torchvision's arithmetic and order); only the greedy pick over those
    rows is a Python loop.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = np.ascontiguousarray(boxes[order].astype(np.float32, copy=False).T)
    areas = (x2 - x1) * (y2 - y1)
    n = len(order)
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for start in range(0, n, NMS_BLOCK):
        rows = start + np.flatnonzero(~suppressed[start : start + NMS_BLOCK])
        if not rows.size:
            continue
        later = slice(start, n)
        w = np.minimum(x2[rows, None], x2[later]) - np.maximum(x1[rows, None], x1[later])
        h = np.minimum(y2[rows, None], y2[later]) - np.maximum(y1[rows, None], y1[later])
        inter = np.maximum(w, np.float32(0)) * np.maximum(h, np.float32(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = inter / (areas[rows, None] + areas[later] - inter)
        over = overlap.astype(np.float64) > iou  # NaN (empty boxes) never suppresses
        for row, i in zip(over, rows.tolist()):
            if not suppressed[i]:
                keep.append(i)
                suppressed[start:] |= row
    return order[keep]


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """NMS within each class only, by shifting each class's boxes far apart (ultralytics' trick)."""
    offset = (classes.astype(np.float32) * np.float32(MAX_WH))[:, None]
    return nms(boxes + offset, scores, iou)


def scale_boxes(boxes: np.ndarray, geo: Letterbox) -> np.ndarray:
    """Model-input boxes → source pixels: remove padding, undo the resize, clip to the frame."""
    left, top = geo.pad
    gain_x, gain_y = geo.gain
    h, w = geo.source_hw
    out = boxes.astype(np.float32, copy=False) - np.array((left, top, left, top), np.float32)
    out /= np.array((gain_x, gain_y, gain_x, gain_y), np.float32)
    return np.clip(out, np.float32(0), np.array((w, h, w, h), np.float32), out=out)


def _end_to_end(output: np.ndarray, conf: float, max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, N, 6) outputs of NMS-free heads: already x1, y1, x2, y2, score, class."""
    pred = output[0].astype(np.float32, copy=False)
    pred = pred[pred[:, 4] > conf][:max_det]
    return pred[:, :4], pred[:, 4], pred[:, 5].astype(np.int64)


def postprocess(
    output: np.ndarray,
    geo: Letterbox,
    names: Mapping[int, str],
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    end2end: bool = False,
) -> list[Detection]:
    """Raw model output → detections in source pixels, highest score first."""
    if end2end or output.shape[-1] == 6:
        boxes, scores, classes = _end_to_end(output, conf, max_det)
    else:
        boxes, scores, classes = decode(output, conf)
        if len(scores) > MAX_NMS:
            top = np.argsort(-scores, kind="stable")[:MAX_NMS]
            boxes, scores, classes = boxes[top], scores[top], classes[top]
        keep = class_aware_nms(boxes, scores, classes, iou)[:max_det]
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    boxes = scale_boxes(boxes, geo)
    return [
        Detection(cls=c, name=names.get(c, str(c)), score=s, box=(b[0], b[1], b[2], b[3]))
        for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist())
    ]
