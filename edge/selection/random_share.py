"""Rule `random`: a small random share of all frames (e.g. 2%).

The other rules pick what the model finds hard; a random sample keeps the labeled set
representative of what the camera really sees. The share is multiplied by central's
sampling boost (`BuildContext.boost`, capped at 1): while central sees the fleet drift it
asks for more of what the cameras see now. The RNG is passed in so tests can seed it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.selection.base import BuildContext, Params, boosted, no_boost
from edge.types import Detection

TYPE = "random"


@dataclass(frozen=True)
class RandomShare:
    name: str
    share: float
    rng: random.Random
    boost: Callable[[], float] = field(default=no_boost)
    type: str = TYPE

    def matches(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> bool:
        return self.rng.random() < boosted(self.share, self.boost)


def build(name: str, params: Params, ctx: BuildContext) -> RandomShare:
    """Params: share (0 < share <= 1, default 0.02), multiplied by central's boost."""
    return RandomShare(
        name=name,
        share=params.number("share", default=0.02, low=0.0, high=1.0, low_open=True),
        rng=ctx.rng,
        boost=ctx.boost,
    )
