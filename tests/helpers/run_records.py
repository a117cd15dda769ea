"""Run records with a past: real runs through the store's API, moved back in time afterwards.

The store stamps runs with the wall clock; monitoring judges ages. Rather than sleeping or
patching the clock, tests record a run and then shift its timestamps into the past.
"""

from __future__ import annotations

from datetime import timedelta

from shared.metadata.store import MetadataStore
from shared.metadata.tables import IngestRun


def backdate(store: MetadataStore, run_id: int, hours: float) -> None:
    """Move a run's start (and end, if any) `hours` into the past."""
    with store.session() as s, s.begin():
        run = s.get(IngestRun, run_id)
        run.started_at = run.started_at - timedelta(hours=hours)
        if run.finished_at is not None:
            run.finished_at = run.finished_at - timedelta(hours=hours)


def record_run(
    store: MetadataStore,
    source: str,
    *,
    kind: str = "ingest",
    status: str | None = "succeeded",
    hours_ago: float = 0.0,
    error: str | None = None,
) -> int:
    """A run of `source` that started `hours_ago` and ended with `status` (None: still running)."""
    run_id = store.start_run(source, kind)
    if status is not None:
        store.finish_run(run_id, status=status, error=error)
    if hours_ago:
        backdate(store, run_id, hours_ago)
    return run_id
