"""Measure a detector's per-frame latency on frames already in memory.

Reports end-to-end time (preprocess + session.run + postprocess) and the bare session.run
time from the same calls, so the cost of the Python around the model is visible. Frames are
decoded before timing starts: disk and codec speed are not part of the number. It does not
pick thread counts or compare models; the caller runs it once per setting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge.detector import Detector


@dataclass(frozen=True)
class BenchResult:
    """Latency statistics over the timed frames (warm-up excluded)."""

    frames: int
    median_ms: float
    p95_ms: float
    fps: float
    run_median_ms: float

    def to_json(self) -> dict:
        return {
            "frames": self.frames,
            "median_ms": round(self.median_ms, 3),
            "p95_ms": round(self.p95_ms, 3),
            "fps": round(self.fps, 2),
            "run_median_ms": round(self.run_median_ms, 3),
        }


def measure(
    detector: Detector,
    frames: Sequence[np.ndarray],
    *,
    warmup: int = 5,
    repeat: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Run `warmup` untimed frames, then every frame `repeat` times; fps = timed frames / summed latency."""
    if not frames:
        raise ValueError("no frames to benchmark")
    if warmup < 0 or repeat < 1:
        raise ValueError(f"warmup must be >= 0 and repeat >= 1 (got {warmup}, {repeat})")
    for i in range(warmup):
        detector.detect_timed(frames[i % len(frames)])
    total = len(frames) * repeat
    totals, runs = np.empty(total), np.empty(total)
    for n in range(total):
        _, timings = detector.detect_timed(frames[n % len(frames)])
        totals[n], runs[n] = timings.total_ms, timings.run_ms
        if progress:
            progress(n + 1, total)
    return BenchResult(
        frames=total,
        median_ms=float(np.median(totals)),
        p95_ms=float(np.percentile(totals, 95)),
        fps=float(total / (totals.sum() / 1e3)),
        run_median_ms=float(np.median(runs)),
    )
