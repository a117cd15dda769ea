"""Pipeline health from the run records: failed runs, silently stuck runs, recent durations.

Every pipeline (ingest, sync, upload, train, dataset, import, export, …) records its runs
through `MetadataStore.start_run/finish_run`. A source has a problem when, since its last
successful run ('succeeded' or 'partial', of any kind):
- a run ended 'failed' (critical) or 'interrupted' (warning) — the latest one is reported
  with its error;
- a run is still 'running' although it started longer ago than the stuck threshold — the
  process died without recording an end, or hangs (warning).
A later successful run of the same source clears both. Thresholds, in the monitoring YAML:

    runs:
      stuck_after_h: 2
      stuck_after_h_by_kind: {train: 12}

This module only reads; rules.py turns problems into alerts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select

from shared.metadata.store import MetadataStore
from shared.metadata.tables import IngestRun
from shared.monitoring.clock import as_utc, resolve_now, seconds_between
from shared.monitoring.freshness import SUCCESS_STATUSES

FAILED_STATUSES = ("failed", "interrupted")


class RunThresholds(BaseModel):
    """The `runs` section of the monitoring YAML."""

    model_config = ConfigDict(extra="forbid")

    stuck_after_h: float = Field(2.0, gt=0, description="A run 'running' for longer is stuck.")
    stuck_after_h_by_kind: dict[str, float] = Field(
        default_factory=lambda: {"train": 12.0}, description="Per run kind, e.g. long trainings."
    )

    def stuck_after_s(self, kind: str) -> float:
        return self.stuck_after_h_by_kind.get(kind, self.stuck_after_h) * 3600


class RunRecord(BaseModel):
    """A run as monitoring shows it, with its duration (or how long it has been running)."""

    id: int
    source: str
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None = Field(description="finished − started; None while running.")
    running_for_s: float | None = Field(description="now − started while running, else None.")
    counts: dict[str, int]
    error: str | None

    @classmethod
    def of(cls, run: IngestRun, now: datetime) -> RunRecord:
        started = as_utc(run.started_at)
        finished = as_utc(run.finished_at) if run.finished_at else None
        return cls(
            id=run.id,
            source=run.source,
            kind=run.kind,
            status=run.status,
            started_at=started,
            finished_at=finished,
            duration_s=seconds_between(started, finished) if finished else None,
            running_for_s=seconds_between(started, now) if run.status == "running" else None,
            counts={
                "added": run.added,
                "updated": run.updated,
                "unchanged": run.unchanged,
                "deleted": run.deleted,
                "failed": run.failed,
                "chunks": run.chunks,
            },
            error=run.error,
        )


class RunProblem(BaseModel):
    problem: Literal["failed", "stuck"]
    severity: Literal["warning", "critical"]
    source: str
    message: str
    run: RunRecord
    runs_affected: int = Field(description="How many runs of the source show this problem.")


def recent_runs(store: MetadataStore, *, limit: int = 20, now: datetime | float | None = None) -> list[RunRecord]:
    """The latest runs of every kind, newest first."""
    now = resolve_now(now)
    return [RunRecord.of(r, now) for r in store.recent_runs(limit)]


def run_history(
    store: MetadataStore, *, since: datetime | None = None, limit: int = 2000, now: datetime | float | None = None
) -> list[RunRecord]:
    """Runs started since `since` (the newest `limit` of them), oldest first: for plots."""
    now = resolve_now(now)
    with store.session() as s:
        q = select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)
        if since is not None:
            q = q.where(IngestRun.started_at >= since)
        rows = list(s.scalars(q))
    return [RunRecord.of(r, now) for r in reversed(rows)]


def run_problems(
    store: MetadataStore, thresholds: RunThresholds, *, now: datetime | float | None = None
) -> list[RunProblem]:
    """Failed and stuck runs of each source since its last success; at most one of each per source."""
    now = resolve_now(now)
    with store.session() as s:
        last_ok = (
            select(IngestRun.source.label("source"), func.max(IngestRun.id).label("ok_id"))
            .where(IngestRun.status.in_(SUCCESS_STATUSES))
            .group_by(IngestRun.source)
            .subquery()
        )
        q = (
            select(IngestRun)
            .outerjoin(last_ok, last_ok.c.source == IngestRun.source)
            .where(
                IngestRun.status.in_((*FAILED_STATUSES, "running")),
                or_(last_ok.c.ok_id.is_(None), IngestRun.id > last_ok.c.ok_id),
            )
            .order_by(IngestRun.id)
        )
        runs = list(s.scalars(q))
    failed: dict[str, list[IngestRun]] = {}
    stuck: dict[str, list[IngestRun]] = {}
    for run in runs:
        if run.status in FAILED_STATUSES:
            failed.setdefault(run.source, []).append(run)
        elif as_utc(run.started_at) < now - timedelta(seconds=thresholds.stuck_after_s(run.kind)):
            stuck.setdefault(run.source, []).append(run)
    problems = []
    for source, found in failed.items():
        latest = RunRecord.of(found[-1], now)
        problems.append(
            RunProblem(
                problem="failed",
                severity="critical" if latest.status == "failed" else "warning",
                source=source,
                message=f"{latest.kind} run #{latest.id} of {source} {latest.status}: {latest.error or 'no error recorded'}"
                + (f" ({len(found)} runs without success since)" if len(found) > 1 else ""),
                run=latest,
                runs_affected=len(found),
            )
        )
    for source, found in stuck.items():
        oldest = RunRecord.of(found[0], now)
        hours = (oldest.running_for_s or 0) / 3600
        problems.append(
            RunProblem(
                problem="stuck",
                severity="warning",
                source=source,
                message=f"{oldest.kind} run #{oldest.id} of {source} has been 'running' for {hours:.1f} h "
                f"(stuck after {thresholds.stuck_after_s(oldest.kind) / 3600:g} h): its process died or hangs",
                run=oldest,
                runs_affected=len(found),
            )
        )
    return problems
