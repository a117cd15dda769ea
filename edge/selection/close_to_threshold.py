"""Rule `close_to_threshold`: a detection scored within ±delta of the threshold.

Such frames are where the model hesitates, so a human label there teaches it the most.
The detector drops boxes under its own `conf`, so with threshold == conf only the upper
half of the band is visible; run the detector with conf - delta to see both halves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.selection.base import BuildContext, ClassFilter, Params
from edge.types import Detection

TYPE = "close_to_threshold"


@dataclass(frozen=True)
class CloseToThreshold:
    name: str
    threshold: float
    delta: float
    classes: ClassFilter = field(default_factory=ClassFilter)
    type: str = TYPE

    def matches(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> bool:
        return any(abs(d.score - self.threshold) <= self.delta and self.classes.accepts(d) for d in detections)


def build(name: str, params: Params, ctx: BuildContext) -> CloseToThreshold:
    """Params: threshold (0..1, required), delta (0..0.5, default 0.1), classes (optional)."""
    return CloseToThreshold(
        name=name,
        threshold=params.number("threshold", low=0.0, high=1.0),
        delta=params.number("delta", default=0.1, low=0.0, high=0.5, low_open=True),
        classes=params.classes("classes", required=False),
    )
