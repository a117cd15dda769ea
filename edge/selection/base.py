"""What every frame-selection rule shares: the rule shape, parameter checks, config errors.

Rules are tiny predicates over one frame and its detections; they do not rate-limit or
deduplicate (that is `FrameSelector`'s job). A rule that needs the recent past (input drift)
also has `observe(frame, detections)`, which the selector calls for every frame before any
rule is asked, so its memory does not depend on the rules before it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.types import Detection

_MISSING: Any = object()


class SelectionConfigError(ValueError):
    """The rules configuration is wrong; `problems` lists every issue found, not just the first."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("frame-selection config is invalid:\n  - " + "\n  - ".join(self.problems))


class Rule(Protocol):
    """A named predicate: does this frame deserve a human label?

    Optionally also `observe(frame_bgr, detections) -> None`, called for every frame first.
    """

    name: str
    type: str

    def matches(self, frame_bgr: np.ndarray, detections: Sequence[Detection]) -> bool: ...


def no_reference() -> Mapping[str, Any] | None:
    return None


def no_boost() -> float:
    return 1.0


@dataclass(frozen=True)
class BuildContext:
    """What builders may need beyond their own params (passed in so tests can seed or set it).

    `reference()` answers the input reference of the model running now (histograms of the
    training frames' quality features, `{feature: {"edges", "counts"}}`), None without one;
    `boost()` answers central's sampling multiplier (1.0 normally, more while a fleet drifts).
    Both are asked per frame, so they follow model updates and central's wishes.
    """

    rng: random.Random
    reference: Callable[[], Mapping[str, Any] | None] = field(default=no_reference)
    boost: Callable[[], float] = field(default=no_boost)


def boosted(share: float, boost: Callable[[], float]) -> float:
    """`share` times the boost asked for now, capped at 1 (a boost that is not a number >= 0 counts as 1)."""
    try:
        factor = float(boost())
    except (TypeError, ValueError):
        factor = 1.0
    if not math.isfinite(factor) or factor < 0:
        factor = 1.0
    return min(1.0, share * factor)


@dataclass(frozen=True)
class ClassFilter:
    """Classes of interest given by name or by id; empty means every class."""

    names: frozenset[str] = frozenset()
    ids: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.names or self.ids)

    def accepts(self, det: Detection) -> bool:
        return not self or det.name in self.names or det.cls in self.ids


class Params:
    """Reads one rule's params, collecting every problem so a config is fixed in one pass."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = dict(raw)
        self._read: set[str] = set()
        self.problems: list[str] = []

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key in self._raw:
            return self._raw[key]
        if default is _MISSING:
            self.problems.append(f"param '{key}' is required")
        return default

    def number(
        self,
        key: str,
        *,
        default: Any = _MISSING,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
    ) -> float:
        """A float in [low, high] (or (low, high] with low_open); a problem is recorded otherwise."""
        value = self._get(key, default)
        if value is _MISSING:
            return float("nan")  # the problem is already recorded; the rule is never built
        if value is None:
            return value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
        if not ok:
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf" if high is None else f"{high:g}"
            self.problems.append(
                f"param '{key}' must be a number in {'(' if low_open else '['}{lo}, {hi}], got {value!r}"
            )
            return float("nan")
        return value

    def integer(self, key: str, *, default: Any = _MISSING, low: int = 0) -> int | None:
        """An int >= low, or None when absent and the default is None."""
        value = self._get(key, default)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            self.problems.append(f"param '{key}' must be an integer >= {low}, got {value!r}")
            return None
        return value

    def classes(self, key: str, *, required: bool) -> ClassFilter:
        """A list of class names (str) and/or ids (int)."""
        value = self._get(key, _MISSING if required else None)
        if value is None or value is _MISSING:
            return ClassFilter()
        items = [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value
        if (
            not isinstance(items, (list, tuple))
            or not items
            or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in items)
        ):
            self.problems.append(f"param '{key}' must be a non-empty list of class names or ids, got {value!r}")
            return ClassFilter()
        return ClassFilter(
            names=frozenset(v for v in items if isinstance(v, str)),
            ids=frozenset(v for v in items if isinstance(v, int)),
        )

    def names(self, key: str, *, default: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
        """A non-empty list of names, each one of `known`."""
        value = self._get(key, list(default))
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) for v in items):
            self.problems.append(f"param '{key}' must be a non-empty list of names, got {value!r}")
            return tuple(default)
        unknown = [v for v in items if v not in known]
        if unknown:
            self.problems.append(
                f"param '{key}': unknown {', '.join(repr(v) for v in unknown)} (known: {', '.join(known)})"
            )
            return tuple(v for v in items if v in known)
        return tuple(dict.fromkeys(items))

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def unknown(self) -> list[str]:
        """Params given but never read by the builder: typos such as 'treshold'."""
        return sorted(set(self._raw) - self._read)
