"""UTC times for the monitoring checks: injected clocks and database timestamps compared safely.

Checks take a clock (`time.time`-like, seconds since the epoch) or an explicit `now`, so
tests move time instead of sleeping. SQLite returns naive datetimes for timezone-aware
columns; everything here treats a naive timestamp as UTC. Nothing here reads a global clock
except as a default argument.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]


def as_utc(value: datetime) -> datetime:
    """The same instant as an aware UTC datetime (naive values are taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def resolve_now(now: datetime | float | None = None, clock: Clock = time.time) -> datetime:
    """`now` as an aware UTC datetime; the clock's reading when `now` is None."""
    if now is None:
        return datetime.fromtimestamp(clock(), tz=UTC)
    if isinstance(now, datetime):
        return as_utc(now)
    return datetime.fromtimestamp(float(now), tz=UTC)


def seconds_between(earlier: datetime, later: datetime) -> float:
    return (as_utc(later) - as_utc(earlier)).total_seconds()
