"""Turn a BGR frame into the model's input tensor, pixel for pixel as ultralytics does.

The exported model only ever saw images letterboxed by ultralytics' `LetterBox(auto=False,
scaleup=True, center=True)` followed by its predictor's BGR→RGB, HWC→CHW and /255 steps; any
difference here is train/serve skew (the parity tests compare tensors bit for bit). Also returns
the geometry needed to map boxes back. Does not run the model and does not decode boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114
# x / 255 in float32 for every 8-bit value: the division ultralytics does, looked up (a multiply
# by 1/255 differs from it in the last bit for half the values)
UNIT_SCALE = np.arange(256, dtype=np.float32) / np.float32(255)


@dataclass(frozen=True)
class Letterbox:
    """Where a source frame landed inside the model input, so boxes can be mapped back.

    `gain` is (x, y) resized/source size per axis after rounding, `pad` is (left, top) in
    input pixels — the same numbers ultralytics' `scale_boxes` derives.
    """

    source_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    gain: tuple[float, float]
    pad: tuple[int, int]


def letterbox_geometry(source_hw: tuple[int, int], input_hw: tuple[int, int]) -> Letterbox:
    """Scale to fit `input_hw` keeping the aspect ratio (up or down) and centre the rest as padding."""
    h0, w0 = source_hw
    if h0 < 1 or w0 < 1:
        raise ValueError(f"image has no pixels (shape {h0}x{w0})")
    ih, iw = input_hw
    r = min(ih / h0, iw / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    left, top = round((iw - new_w) / 2 - 0.1), round((ih - new_h) / 2 - 0.1)
    return Letterbox((h0, w0), (ih, iw), (new_h, new_w), (new_w / w0, new_h / h0), (left, top))


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Accept what OpenCV hands out (BGR, grey, BGRA) as 8-bit BGR; refuse the rest clearly."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}; convert it first")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an HxWx3 BGR image, got shape {image.shape}")


def letterbox(image_bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize (bilinear) and pad with grey 114 to `input_hw`; returns the HWC uint8 image and geometry."""
    image = as_bgr(image_bgr)
    geo = letterbox_geometry(image.shape[:2], input_hw)
    new_h, new_w = geo.resized_hw
    if image.shape[:2] != (new_h, new_w):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    left, top = geo.pad
    bottom, right = input_hw[0] - new_h - top, input_hw[1] - new_w - left
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return image, geo


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """HWC BGR uint8 → contiguous 1x3xHxW RGB float32 in [0, 1], bit for bit ultralytics' `/ 255`.

    OpenCV splits the planes (the HWC→CHW transpose) and its look-up table writes each one,
    scaled, straight into the tensor: one pass over the pixels each, no float temporaries.
    """
    h, w = image_bgr.shape[:2]
    tensor = np.empty((1, 3, h, w), np.float32)
    blue, green, red = cv2.split(image_bgr)
    for plane, channel in zip((red, green, blue), tensor[0]):
        cv2.LUT(plane, UNIT_SCALE, dst=channel)
    return tensor


def preprocess(image_bgr: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Letterbox and convert one frame; the geometry maps the model's boxes back to the frame."""
    boxed, geo = letterbox(image_bgr, input_hw)
    return to_tensor(boxed), geo
