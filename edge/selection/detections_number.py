"""Rule `detections_number`: fewer than `min` or more than `max` detections in a frame.

Empty frames on a busy line and crowded frames are both unusual, and unusual is where a
detector's errors hide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.selection.base import BuildContext, ClassFilter, Params
from edge.types import Detection

TYPE = "detections_number"


@dataclass(frozen=True)
class DetectionsNumber:
    name: str
    min: int | None
    max: int | None
    classes: ClassFilter = field(default_factory=ClassFilter)
    type: str = TYPE

    def matches(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> bool:
        n = sum(1 for d in detections if self.classes.accepts(d)) if self.classes else len(detections)
        return (self.min is not None and n < self.min) or (self.max is not None and n > self.max)


def build(name: str, params: Params, ctx: BuildContext) -> DetectionsNumber:
    """Params: min and/or max (ints >= 0, at least one, min <= max), classes (optional: count only these)."""
    lo = params.integer("min", default=None)
    hi = params.integer("max", default=None)
    if lo is None and hi is None and not params.problems:
        params.problem("give 'min' and/or 'max' (frames with fewer than min or more than max detections match)")
    if lo is not None and hi is not None and lo > hi:
        params.problem(f"'min' ({lo}) must not exceed 'max' ({hi})")
    return DetectionsNumber(name=name, min=lo, max=hi, classes=params.classes("classes", required=False))
