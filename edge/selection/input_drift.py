"""Rule `input_drift`: while the camera's frames stop looking like the training frames, keep a share.

A model that goes blind under a lighting change has no low-confidence detections left, so
uncertainty sampling never sends the frames that matter most. This rule watches the input
instead: the quality features (`edge.quality.frame_quality`) of the last `window` frames
against the reference that ships with the model version (the same features' histograms over
its training frames, `{feature: {"edges", "counts"}}`, bins (-inf, e0), [e0, e1), …,
[e_last, inf) as in `edge.quality.FixedHistograms`).

The fine reference bins are merged into `bins` groups of equal reference mass (as central
does with deciles) and the window is counted over them. PSI = Σ (c - r)·ln(c / r) over the
groups, with additive smoothing (one pseudocount per group on both sides, as central's
`psi.py`), so an empty group is finite. Under no drift PSI·(1/n + 1/m)⁻¹ is about χ² with
groups-1 degrees of freedom: a window of 20 frames reaches 0.2 by chance alone about half the
time, so a feature drifts when its PSI is above `threshold` *and* above the 99.99th
percentile of what chance gives a window this size (`last_needed`, per feature: about 1.25
at 20 frames and 0.55 at 50 with 5 groups; a failed lamp gives 2 or more). While any
configured feature drifts and `min_frames` are in the window, a frame matches with
probability `share` times central's boost (capped at 1). Without a reference it never
matches and costs nothing.

It does not rate-limit or deduplicate (FrameSelector does) and decides nothing for central:
`last_psi` is there for the agent's logs and metrics. The selector calls `observe` on every
frame, so the window holds every frame even when an earlier rule matched.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from edge.quality import QUALITY_EDGES, frame_quality
from edge.selection.base import BuildContext, Params, boosted
from edge.types import Detection

log = logging.getLogger(__name__)

TYPE = "input_drift"
DEFAULT_FEATURES = ("brightness", "contrast", "sharpness")
SMOOTHING = 1.0  # pseudocount per group, as central's PSI
NOISE_Z = 3.719  # standard normal quantile of 0.9999: chance passes the noise floor once in 10 000 windows


class InputDrift:
    """The rolling window, the reference's groups, and the PSI of each feature after the last frame."""

    type = TYPE

    def __init__(
        self,
        name: str,
        *,
        window: int,
        min_frames: int,
        threshold: float,
        share: float,
        features: Sequence[str],
        bins: int,
        rng: random.Random,
        reference: Callable[[], Mapping[str, Any] | None],
        boost: Callable[[], float],
    ) -> None:
        self.name = name
        self.window = window
        self.min_frames = min_frames
        self.threshold = threshold
        self.share = share
        self.features = tuple(features)
        self.bins = bins
        self._rng = rng
        self._reference = reference
        self._boost = boost
        self._values: deque[tuple[float, ...]] = deque(maxlen=window)
        self._source: object = None  # the reference object `_groups` was built from
        self._groups: dict[str, tuple[list[float], np.ndarray]] = {}  # feature -> (cut points, reference counts)
        self.last_psi: dict[str, float] = {}  # feature -> PSI of the window; empty without a reference
        self.last_needed: dict[str, float] = {}  # feature -> the PSI it must exceed (threshold or noise floor)
        self.drifting = False

    def observe(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> None:
        """Add the frame's features to the window and judge the window against the reference
        (without a reference, nothing is computed and the window starts again when one comes)."""
        groups = self._groups_of(self._reference())
        if not groups:
            self._values.clear()
            self.last_psi, self.last_needed, self.drifting = {}, {}, False
            return
        try:
            quality = frame_quality(frame_bgr)
        except cv2.error as exc:  # an odd frame format must not stop selection
            log.debug("input drift: frame quality not computed: %s", exc)
            return
        self._values.append(tuple(quality[f] for f in self.features))
        self._judge(groups)

    def matches(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> bool:
        return self.drifting and self._rng.random() < boosted(self.share, self._boost)

    def _judge(self, groups: dict[str, tuple[list[float], np.ndarray]]) -> None:
        psi: dict[str, float] = {}
        needed: dict[str, float] = {}
        for i, feature in enumerate(self.features):
            if feature not in groups:
                continue
            cuts, ref = groups[feature]
            cur = np.zeros(len(cuts) + 1)
            for values in self._values:
                v = values[i]
                if not math.isnan(v):
                    cur[bisect.bisect_right(cuts, v)] += 1
            if cur.sum() == 0:
                continue
            psi[feature] = _psi(ref, cur)
            noise = _chi2_quantile(len(cuts), NOISE_Z) * (1 / cur.sum() + 1 / ref.sum())
            needed[feature] = max(self.threshold, noise)
        self.last_psi, self.last_needed = psi, needed
        self.drifting = len(self._values) >= self.min_frames and any(psi[f] > needed[f] for f in psi)

    def _groups_of(self, reference: Mapping[str, Any] | None) -> dict[str, tuple[list[float], np.ndarray]]:
        """The reference's groups per configured feature, rebuilt only when another reference comes."""
        if reference is self._source or reference == self._source:
            return self._groups
        self._source = reference
        self._groups = {}
        if not isinstance(reference, Mapping):
            return self._groups
        bad = []
        for feature in self.features:
            hist = _histogram(reference.get(feature))
            if hist is None:
                bad.append(feature)
            else:
                self._groups[feature] = _coarsen(*hist, self.bins)
        if bad:
            log.warning(
                "input drift rule '%s': the model's reference has no usable histogram of %s; not judged",
                self.name,
                ", ".join(bad),
            )
        return self._groups


def psi_against(entry: Mapping[str, Any], values: Sequence[float], bins: int = 10) -> float | None:
    """PSI of `values` against one reference histogram ({"edges", "counts"}), over about `bins`
    groups of equal reference mass (fine bins would make a small sample look drifted); None
    when the reference is unusable or there are no values."""
    hist = _histogram(entry)
    if hist is None or not len(values):
        return None
    cuts, ref = _coarsen(*hist, bins)
    cur = np.bincount(np.searchsorted(np.asarray(cuts), np.asarray(values, float), side="right"), minlength=len(ref))
    return _psi(ref, cur[: len(ref)].astype(float))


def _histogram(entry: Any) -> tuple[list[float], list[float]] | None:
    """(edges, counts) of a reference entry, or None when it is not len(edges)+1 counts over rising edges."""
    if not isinstance(entry, Mapping):
        return None
    edges, counts = entry.get("edges"), entry.get("counts")
    if not isinstance(edges, list) or not isinstance(counts, list) or len(counts) != len(edges) + 1:
        return None
    numbers = edges + counts
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        return None
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or any(c < 0 for c in counts) or sum(counts) <= 0:
        return None
    return [float(e) for e in edges], [float(c) for c in counts]


def _coarsen(edges: list[float], counts: list[float], bins: int) -> tuple[list[float], np.ndarray]:
    """Merge adjacent bins into about `bins` groups of equal mass (central's `Histogram.coarsen`)."""
    total = sum(counts)
    if len(counts) <= bins:
        return edges, np.asarray(counts)
    share = total / bins
    cuts: list[float] = []
    grouped: list[float] = []
    cum = acc = 0.0
    nxt = share
    for i, count in enumerate(counts[:-1]):
        cum += count
        acc += count
        if cum >= nxt * (1 - 1e-12) and total - cum > 1e-9 * total:
            cuts.append(edges[i])  # cut between bin i and bin i+1
            grouped.append(acc)
            acc = 0.0
            nxt = (math.floor(cum / share + 1e-9) + 1) * share
    grouped.append(acc + counts[-1])
    return cuts, np.asarray(grouped)


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    r = (reference + SMOOTHING) / (reference.sum() + SMOOTHING * len(reference))
    c = (current + SMOOTHING) / (current.sum() + SMOOTHING * len(current))
    return float(np.sum((c - r) * np.log(c / r)))


def _chi2_quantile(dof: int, z: float) -> float:
    """Wilson–Hilferty: the χ² quantile with `dof` degrees of freedom at the normal quantile z."""
    if dof <= 0:
        return 0.0
    k = 2 / (9 * dof)
    return dof * (1 - k + z * math.sqrt(k)) ** 3


def build(name: str, params: Params, ctx: BuildContext) -> InputDrift:
    """Params: window (frames, default 50), min_frames (default 20), threshold (PSI, default 0.2),
    share (0 < share <= 1, default 0.25, times central's boost), features (default brightness,
    contrast, sharpness; any of edge.quality.QUALITY_EDGES), bins (reference groups, default 5)."""
    window = params.integer("window", default=50, low=2)
    min_frames = params.integer("min_frames", default=20, low=1)
    if window is not None and min_frames is not None and min_frames > window:
        params.problem(f"param 'min_frames' ({min_frames}) must not exceed 'window' ({window})")
    bins = params.integer("bins", default=5, low=2)
    return InputDrift(
        name,
        window=window or 50,
        min_frames=min_frames or 20,
        threshold=params.number("threshold", default=0.2, low=0.0, low_open=True),
        share=params.number("share", default=0.25, low=0.0, high=1.0, low_open=True),
        features=params.names("features", default=DEFAULT_FEATURES, known=tuple(QUALITY_EDGES)),
        bins=bins or 5,
        rng=ctx.rng,
        reference=ctx.reference,
        boost=ctx.boost,
    )
