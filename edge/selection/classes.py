"""Rule `classes`: any detection of a class of interest (by name or id).

For rare or newly added classes, whose every sighting is worth labeling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.selection.base import BuildContext, ClassFilter, Params
from edge.types import Detection

TYPE = "classes"


@dataclass(frozen=True)
class Classes:
    name: str
    classes: ClassFilter
    min_score: float = 0.0
    type: str = TYPE

    def matches(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> bool:
        return any(d.score >= self.min_score and self.classes.accepts(d) for d in detections)


def build(name: str, params: Params, ctx: BuildContext) -> Classes:
    """Params: classes (non-empty list of names/ids, required), min_score (0..1, default 0)."""
    return Classes(
        name=name,
        classes=params.classes("classes", required=True),
        min_score=params.number("min_score", default=0.0, low=0.0, high=1.0),
    )
