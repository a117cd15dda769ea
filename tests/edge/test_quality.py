"""Frame quality on the device: features that mean what they say, fixed bins, cheap enough per frame."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from edge.metrics import Metrics
from edge.quality import (
    BRIGHTNESS_EDGES,
    EDGES,
    QUALITY_EDGES,
    FixedHistograms,
    frame_quality,
)
from edge.types import Detection


def textured(rng: np.random.Generator, h: int = 480, w: int = 640, level: float = 120.0) -> np.ndarray:
    """A frame with fine detail: squares of 8 px plus noise, around grey `level`."""
    yy, xx = np.mgrid[:h, :w]
    board = ((yy // 8 + xx // 8) % 2) * 60.0 - 30.0
    img = level + board[..., None] + rng.normal(0, 5, (h, w, 1))
    return np.clip(np.repeat(img, 3, axis=2), 0, 255).astype(np.uint8)


def test_brightness_contrast_and_colour_balance_measure_what_they_say() -> None:
    flat = np.full((240, 320, 3), 90, np.uint8)
    q = frame_quality(flat)
    assert q["brightness"] == pytest.approx(90, abs=0.5) and q["contrast"] == pytest.approx(0, abs=1e-6)
    assert q["sharpness"] == pytest.approx(0, abs=1e-6) and q["blue_green"] == pytest.approx(0, abs=1e-6)
    bluish = flat.copy()
    bluish[..., 0] = 130  # BGR: more blue
    q2 = frame_quality(bluish)
    assert q2["blue_green"] == pytest.approx(40, abs=0.5) and q2["red_green"] == pytest.approx(0, abs=0.5)
    img = textured(np.random.default_rng(0))
    assert frame_quality(img)["contrast"] > 20
    assert frame_quality(cv2.convertScaleAbs(img, alpha=1.0, beta=40))["brightness"] == pytest.approx(
        frame_quality(img)["brightness"] + 40, abs=1.5
    )
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert frame_quality(grey)["brightness"] == pytest.approx(frame_quality(img)["brightness"], abs=0.5)


def test_blur_lowers_sharpness() -> None:
    rng = np.random.default_rng(1)
    for level in (80, 120, 160):
        img = textured(rng, level=level)
        sharp = frame_quality(img)["sharpness"]
        assert frame_quality(cv2.GaussianBlur(img, (0, 0), 3))["sharpness"] < sharp / 4


def test_features_do_not_depend_on_the_camera_resolution() -> None:
    img = textured(np.random.default_rng(2), 960, 1280)
    small = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
    a, b = frame_quality(img), frame_quality(small)
    assert a["brightness"] == pytest.approx(b["brightness"], abs=1.0)
    assert a["contrast"] == pytest.approx(b["contrast"], rel=0.1)


def test_fixed_histograms_count_left_closed_and_report_only_what_was_seen() -> None:
    h = FixedHistograms(epoch="e1")
    h.add({"brightness": 4.0, "contrast": float("nan"), "unknown": 3.0})
    h.add({"brightness": 3.99})
    h.add_categories("class", ["spot", "spot", "crack"])
    out = h.to_json()
    assert out["epoch"] == "e1" and set(out["histograms"]) == {"brightness"}
    counts = out["histograms"]["brightness"]["counts"]
    assert counts[0] == 1 and counts[1] == 1 and sum(counts) == 2
    assert out["histograms"]["brightness"]["edges"] == list(BRIGHTNESS_EDGES)
    assert out["categories"] == {"class": {"spot": 2, "crack": 1}}
    assert FixedHistograms().epoch != FixedHistograms().epoch  # each counting session is told apart


def test_the_metrics_snapshot_carries_quality_and_prediction_counts() -> None:
    m = Metrics()
    rng = np.random.default_rng(3)
    for i in range(30):
        dets = [Detection(0, "scratch", 0.8, (0, 0, 4, 4))] * (i % 3)
        m.observe_frame(0.01, dets)
        m.observe_quality(frame_quality(textured(rng, 48, 64)))
    drift = m.snapshot()["drift"]
    hist = drift["histograms"]
    assert set(QUALITY_EDGES) <= set(hist) and {"max_score", "detections"} <= set(hist)
    assert all(sum(h["counts"]) == 30 for h in hist.values())
    assert hist["detections"]["counts"][:3] == [10, 10, 10]  # 0, 1 and 2 detections per frame
    assert drift["categories"] == {"class": {"scratch": 30}}
    assert set(hist) <= set(EDGES)


def test_quality_is_cheap_per_frame() -> None:
    """Generous bound for shared CI cores; about 0.1 ms for a 640x480 frame when idle."""
    img = textured(np.random.default_rng(4))
    m = Metrics()
    frame_quality(img)
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        m.observe_quality(frame_quality(img))
    per_frame_ms = (time.perf_counter() - t0) / n * 1000
    assert per_frame_ms < 2.0, per_frame_ms
