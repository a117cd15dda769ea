"""Decides, per frame, whether it goes to labeling: first matching rule, then limits and dedup.

Limits and near-duplicate suppression live here, not in the rules, so every rule gets them.
A frame that a rule matched but that was held back still reports that rule's name as its
reason, with selected=False: the caller can show "would have been selected", and the hold-back
is counted under its cause (`per_day`, `per_minute` or `duplicate`, the first check that
stopped it). Windows are sliding: the last 60 s and the last 24 h.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from edge.selection.base import Rule, SelectionConfigError
from edge.selection.dedup import dhash, hamming
from edge.selection.registry import load_rules
from edge.types import Detection

log = logging.getLogger(__name__)

MINUTE, DAY = 60.0, 86_400.0
_SETTINGS = ("rules", "per_minute", "per_day", "dedup_distance", "dedup_window")


class FrameSelector:
    """Frame selection with per-minute/per-day quotas and near-duplicate suppression.

    per_minute / per_day: None means unlimited. dedup_distance: frames whose hash is within
    this Hamming distance of one of the last `dedup_window` selected frames are duplicates;
    None turns dedup off. `clock` gives `now` when decide() is not told it.
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        per_minute: int | None = None,
        per_day: int | None = None,
        dedup_distance: int | None = None,
        dedup_window: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SelectionConfigError([f"duplicate rule name '{n}'" for n in dupes])
        for label, value in (("per_minute", per_minute), ("per_day", per_day), ("dedup_distance", dedup_distance)):
            if value is not None and value < 0:
                raise SelectionConfigError([f"{label} must be >= 0 or None, got {value}"])
        self.rules = list(rules)
        self._observers = [r.observe for r in self.rules if callable(getattr(r, "observe", None))]
        self.per_minute = per_minute
        self.per_day = per_day
        self.dedup_distance = dedup_distance
        self._clock = clock
        self._minute: deque[float] = deque()
        self._day: deque[float] = deque()
        self._hashes: deque[int] = deque(maxlen=dedup_window)
        self._selected: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        reference: Callable[[], Mapping[str, Any] | None] | None = None,
        boost: Callable[[], float] | None = None,
    ) -> FrameSelector:
        """From data: {"rules": [...], "per_minute", "per_day", "dedup_distance", "dedup_window"}
        (or just the rules list: no limits, no dedup). Every problem is reported at once.
        `reference` and `boost` are passed to the rules (see `BuildContext`)."""
        if not isinstance(config, Mapping):
            return cls(load_rules(config, rng=rng, reference=reference, boost=boost), clock=clock)
        problems = [f"unknown setting '{k}' (known: {', '.join(_SETTINGS)})" for k in config if k not in _SETTINGS]
        limits: dict[str, int | None] = {}
        for key in _SETTINGS[1:]:
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                problems.append(f"'{key}' must be an integer >= 0 or null, got {value!r}")
            else:
                limits[key] = value
        try:
            rules = load_rules(config.get("rules", []), rng=rng, reference=reference, boost=boost)
        except SelectionConfigError as exc:
            problems.extend(exc.problems)
        if problems:
            raise SelectionConfigError(problems)
        window = limits.pop("dedup_window", None)
        return cls(rules, clock=clock, dedup_window=64 if window is None else window, **limits)

    def decide(
        self, frame_bgr: np.ndarray, detections: Sequence[Detection], now: float | None = None
    ) -> tuple[bool, str | None]:
        """(selected, reason): reason is the first matching rule's name, None when no rule matched."""
        for observe in self._observers:
            observe(frame_bgr, detections)
        reason = next((r.name for r in self.rules if r.matches(frame_bgr, detections)), None)
        if reason is None:
            return False, None
        now = self._clock() if now is None else now
        with self._lock:
            _expire(self._day, now - DAY)
            _expire(self._minute, now - MINUTE)
            cause = None
            if self.per_day is not None and len(self._day) >= self.per_day:
                cause = "per_day"
            elif self.per_minute is not None and len(self._minute) >= self.per_minute:
                cause = "per_minute"
            else:
                h = dhash(frame_bgr) if self.dedup_distance is not None else 0
                if self.dedup_distance is not None and any(hamming(h, o) <= self.dedup_distance for o in self._hashes):
                    cause = "duplicate"
            if cause is not None:
                self._suppressed[cause] += 1
                if cause == "per_day" and self._suppressed[cause] == 1:
                    log.warning(
                        "daily selection quota of %d frames reached; further matches are not kept", self.per_day
                    )
                return False, reason
            self._day.append(now)
            self._minute.append(now)
            if self.dedup_distance is not None:
                self._hashes.append(h)
            self._selected[reason] += 1
            return True, reason

    def stats(self) -> dict[str, dict[str, int]]:
        """Counts so far: {"selected": {reason: n}, "suppressed": {cause: n}}."""
        with self._lock:
            return {"selected": dict(self._selected), "suppressed": dict(self._suppressed)}


def _expire(window: deque[float], before: float) -> None:
    while window and window[0] <= before:
        window.popleft()


def default_selector(
    conf: float,
    *,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    reference: Callable[[], Mapping[str, Any] | None] | None = None,
    boost: Callable[[], float] | None = None,
) -> FrameSelector:
    """Hesitant detections (score within 0.1 of conf), a quarter of the frames while the input
    drifts from the model's reference ("drift"), and a 2% random sample, the last two times
    central's boost; at most 10 frames a minute and 1000 a day, near-duplicates (<= 3 bits of
    64) dropped."""
    rules = load_rules(
        [
            {"type": "close_to_threshold", "name": "uncertain", "threshold": conf, "delta": 0.1},
            {"type": "input_drift", "name": "drift"},
            {"type": "random", "name": "random", "share": 0.02},
        ],
        rng=rng,
        reference=reference,
        boost=boost,
    )
    return FrameSelector(rules, per_minute=10, per_day=1000, dedup_distance=3, clock=clock)
