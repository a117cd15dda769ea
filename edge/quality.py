"""Frame quality features for drift monitoring, computed on the device, and their fixed bins.

Per frame, on a grey copy downscaled to at most `SIDE` pixels (so the cost does not grow
with the camera's resolution): brightness (mean luma), contrast (standard deviation of
luma), sharpness (variance of the Laplacian) and colour balance (mean blue minus green and
red minus green, on the same downscaled colour frame). Sharpness on a downscaled frame
measures coarse detail: it falls with defocus and motion blur, and is comparable only
between frames of the same resolution, which is what drift against a reference needs.

Central never receives values, only counts over the fixed cut points below (`EDGES`); the
cut points travel with the counts in every upload, so central reads them from the payload
and never imports this module. Changing them here is safe: central rebins what it receives.
The counts are running totals since the histograms were created (`epoch`), so a lost upload
loses nothing. This module decides no drift; central does.
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

SIDE = 64  # longest side of the downscaled copy the features are computed on

BRIGHTNESS_EDGES: tuple[float, ...] = tuple(float(x) for x in range(4, 256, 4))  # luma 0..255 in steps of 4
CONTRAST_EDGES: tuple[float, ...] = tuple(float(x) for x in range(2, 128, 2))  # std of luma in steps of 2
SHARPNESS_EDGES: tuple[float, ...] = tuple(round(10 ** (k / 8), 4) for k in range(-8, 41))  # 0.1 .. 1e5, 8 per decade
COLOUR_EDGES: tuple[float, ...] = tuple(float(x) for x in range(-64, 65, 2))  # channel difference in steps of 2
MAX_SCORE_EDGES: tuple[float, ...] = tuple(round(i / 20, 2) for i in range(1, 20))  # 0.05 .. 0.95; no detection: 0
DETECTIONS_EDGES: tuple[float, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)  # bins: 0, 1, 2, …, 6-7, …, 50+

QUALITY_EDGES: dict[str, tuple[float, ...]] = {
    "brightness": BRIGHTNESS_EDGES,
    "contrast": CONTRAST_EDGES,
    "sharpness": SHARPNESS_EDGES,
    "blue_green": COLOUR_EDGES,
    "red_green": COLOUR_EDGES,
}
PREDICTION_EDGES: dict[str, tuple[float, ...]] = {"max_score": MAX_SCORE_EDGES, "detections": DETECTIONS_EDGES}
EDGES: dict[str, tuple[float, ...]] = {**QUALITY_EDGES, **PREDICTION_EDGES}


def downscale(image_bgr: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A copy whose longest side is at most `side` (bilinear: cheap, enough for these statistics)."""
    h, w = image_bgr.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image_bgr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)


def frame_quality(image_bgr: np.ndarray, *, side: int = SIDE) -> dict[str, float]:
    """Brightness, contrast, sharpness and colour balance of one BGR (or grey) frame."""
    small = downscale(image_bgr, side)
    if small.ndim == 2 or small.shape[2] == 1:
        grey = small.reshape(small.shape[0], small.shape[1])
        b = g = r = float(grey.mean())
    else:
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        b, g, r = cv2.mean(small)[:3]
    mean, std = cv2.meanStdDev(grey)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S))  # 8-bit input: |Laplacian| <= 1020 fits
    return {
        "brightness": float(mean[0, 0]),
        "contrast": float(std[0, 0]),
        "sharpness": float(lap_std[0, 0]) ** 2,
        "blue_green": float(b - g),
        "red_green": float(r - g),
    }


class FixedHistograms:
    """Running counts of features over fixed cut points, plus counts per category.

    Not thread-safe on its own: the device's `Metrics` holds it under its lock. Bins are
    (-inf, e0), [e0, e1), …, [e_last, +inf), the same convention central uses.
    """

    def __init__(self, edges: Mapping[str, Sequence[float]] = EDGES, *, epoch: str | None = None) -> None:
        self.edges = {name: tuple(float(e) for e in cuts) for name, cuts in edges.items()}
        self.counts = {name: [0] * (len(cuts) + 1) for name, cuts in self.edges.items()}
        self.categories: dict[str, Counter[str]] = {}
        self.epoch = epoch or uuid.uuid4().hex  # names this counting session: a restart starts a new one

    def add(self, features: Mapping[str, float]) -> None:
        """Count one frame's features (names without cut points and NaN values are ignored)."""
        for name, value in features.items():
            cuts = self.edges.get(name)
            if cuts is None or value is None or math.isnan(value):
                continue
            self.counts[name][bisect.bisect_right(cuts, value)] += 1

    def add_categories(self, name: str, values: Sequence[str]) -> None:
        if values:
            self.categories.setdefault(name, Counter()).update(values)

    def to_json(self) -> dict:
        """{"epoch", "histograms": {name: {"edges", "counts"}}, "categories": {name: {value: count}}}."""
        return {
            "epoch": self.epoch,
            "histograms": {
                name: {"edges": list(self.edges[name]), "counts": list(counts)}
                for name, counts in self.counts.items()
                if any(counts)
            },
            "categories": {name: dict(c) for name, c in self.categories.items() if c},
        }
