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


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    """Centre/size boxes → corner boxes (float32, same arithmetic as ultralytics)."""
    half = xywh[:, 2:4] / np.float32(2)
    return np.concatenate((xywh[:, :2] - half, xywh[:, :2] + half), axis=1)


def decode(output: np.ndarray, conf: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(1, 4+nc, N) raw output → boxes xyxy, best-class scores and classes above `conf`."""
    if output.ndim != 3 or output.shape[0] != 1 or output.shape[1] < 5:
        raise ValueError(f"expected a (1, 4+classes, N) detection output, got shape {output.shape}")
    pred = output[0].T.astype(np.float32, copy=False)  # (N, 4+nc)
    cls_scores = pred[:, 4:]
    classes = cls_scores.argmax(1)
    scores = cls_scores[np.arange(len(classes)), classes]
    keep = scores > conf
    return xywh_to_xyxy(pred[keep, :4]), scores[keep], classes[keep].astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS (as torchvision): indices kept, by descending score; drops IoU > `iou`."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    boxes = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(overlap.astype(np.float64) > iou)]  # NaN (empty boxes) never suppresses
    return np.asarray(keep, dtype=np.int64)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """NMS within each class only, by shifting each class's boxes far apart (ultralytics' trick)."""
    offset = (classes.astype(np.float32) * np.float32(MAX_WH))[:, None]
    return nms(boxes + offset, scores, iou)


def scale_boxes(boxes: np.ndarray, geo: Letterbox) -> np.ndarray:
    """Model-input boxes → source pixels: remove padding, undo the resize, clip to the frame."""
    out = boxes.astype(np.float32, copy=True)
    left, top = geo.pad
    gain_x, gain_y = geo.gain
    out[:, [0, 2]] -= np.float32(left)
    out[:, [1, 3]] -= np.float32(top)
    out[:, [0, 2]] /= np.float32(gain_x)
    out[:, [1, 3]] /= np.float32(gain_y)
    h, w = geo.source_hw
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out


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
        Detection(
            cls=int(c),
            name=names.get(int(c), str(int(c))),
            score=float(s),
            box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        )
        for b, s, c in zip(boxes, scores, classes)
    ]
