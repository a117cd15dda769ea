"""Job records: what was asked, who runs it, how far it got, and how it ended.

One row per job in the metadata store (SQLite or PostgreSQL), whichever process runs it:
the API answers `GET /v1/jobs/{id}` from here, and workers write their progress here. The
queue only carries job ids; the record is the truth, so a message delivered twice never
runs a job twice:

- a worker *claims* a job with one conditional UPDATE: a queued job, or a running one whose
  lease ran out (its worker was lost). The claim counts an attempt and starts the lease;
- the worker renews the lease (`heartbeat`) while it runs; a second delivery of a job whose
  lease is fresh is told to come back later (`BUSY`);
- only the claimant may finish, fail or release the job (a worker that lost its lease to
  another writes nothing);
- a job claimed `max_attempts` times without an end fails with that reason.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, and_, func, or_, select, update
from sqlalchemy.orm import Mapped, mapped_column

from shared.metadata.store import MetadataStore
from shared.metadata.tables import Base, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
ENDED = (SUCCEEDED, FAILED)


class JobRow(Base):
    """One job: its kind and parameters, its state, progress, result or error, and its attempts."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    queue: Mapped[str] = mapped_column(String(32))
    owner: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED, index=True)
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    history: Mapped[list] = mapped_column(JSON, default=list)  # one entry per attempt: worker, times, outcome
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class Job:
    """A detached view of a job record."""

    id: str
    kind: str
    params: dict[str, Any]
    queue: str
    owner: str
    state: str
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    history: list[dict[str, Any]]
    worker: str | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    @classmethod
    def of(cls, row: JobRow) -> Job:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


class Claim(enum.Enum):
    """What a worker's claim on a job found."""

    CLAIMED = "claimed"  # it is this worker's to run now
    BUSY = "busy"  # another worker holds a fresh lease: come back later
    ENDED = "ended"  # it already succeeded or failed: nothing to do
    EXHAUSTED = "exhausted"  # lost workers used up its attempts: it was failed with that reason
    MISSING = "missing"  # no such job (a message outliving its database)


class JobStore:
    """The `jobs` table on the metadata store's engine."""

    def __init__(self, store: MetadataStore, *, lease_s: float, max_attempts: int) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_s)
        self.max_attempts = max_attempts

    def create(self, kind: str, params: dict[str, Any], *, queue: str, owner: str) -> Job:
        row = JobRow(id=uuid.uuid4().hex, kind=kind, params=params, queue=queue, owner=owner, state=QUEUED)
        row.progress, row.history, row.attempts = {}, [], 0
        with self.store.session() as s:
            s.add(row)
            s.commit()
            return Job.of(row)

    def get(self, job_id: str) -> Job | None:
        with self.store.session() as s:
            row = s.get(JobRow, job_id)
            return Job.of(row) if row else None

    def recent(self, limit: int = 50, *, kind: str | None = None, state: str | None = None) -> list[Job]:
        query = select(JobRow).order_by(JobRow.created_at.desc()).limit(limit)
        if kind:
            query = query.where(JobRow.kind == kind)
        if state:
            query = query.where(JobRow.state == state)
        with self.store.session() as s:
            return [Job.of(r) for r in s.scalars(query)]

    def active(self, kind: str) -> list[Job]:
        """Jobs of `kind` not yet ended (one sync at a time, one loop cycle at a time)."""
        with self.store.session() as s:
            rows = s.scalars(select(JobRow).where(JobRow.kind == kind, JobRow.state.in_((QUEUED, RUNNING))))
            return [Job.of(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        with self.store.session() as s:
            return dict(s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all())

    def mark_dispatched(self, job_id: str) -> None:
        with self.store.session() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(dispatched_at=utcnow()))
            s.commit()

    def waiting(self, *, dispatched: bool, stale: bool) -> list[Job]:
        """Queued jobs (only those never handed to a queue unless `dispatched`), and with `stale` the
        running ones whose lease ran out: their worker is gone."""
        queued = JobRow.state == QUEUED if dispatched else and_(JobRow.state == QUEUED, JobRow.dispatched_at.is_(None))
        cond = (
            or_(queued, and_(JobRow.state == RUNNING, JobRow.heartbeat_at < utcnow() - self.lease)) if stale else queued
        )
        with self.store.session() as s:
            return [Job.of(r) for r in s.scalars(select(JobRow).where(cond).order_by(JobRow.created_at))]

    def claim(self, job_id: str, worker: str) -> tuple[Claim, Job | None]:
        # The conditional UPDATE comes first in its transaction: on SQLite a transaction that read
        # before writing fails at once when another writer went first; this one waits its turn.
        now = utcnow()
        claimable = or_(
            JobRow.state == QUEUED,
            and_(JobRow.state == RUNNING, or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < now - self.lease)),
        )
        with self.store.session() as s:
            won = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, claimable)
                .values(state=RUNNING, worker=worker, heartbeat_at=now, attempts=JobRow.attempts + 1)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not won:
                s.rollback()
                row = s.get(JobRow, job_id)
                if row is None:
                    return Claim.MISSING, None
                return (Claim.ENDED if row.state in ENDED else Claim.BUSY), Job.of(row)
            row = s.get(JobRow, job_id)
            history = list(row.history or [])
            if history and history[-1].get("outcome") is None:  # the last attempt's worker was lost
                history[-1] = {**history[-1], "outcome": f"worker lost (noticed at {_iso(now)})"}
            if row.attempts > self.max_attempts:
                row.state, row.worker, row.finished_at, row.history = FAILED, None, now, history
                row.error = (
                    f"its worker was lost {row.attempts - 1} times (LOOPLINE_JOB_MAX_ATTEMPTS={self.max_attempts}); "
                    "see the workers' logs: the job may need more memory or time than a worker has"
                )
                s.commit()
                return Claim.EXHAUSTED, Job.of(row)
            row.history = [*history, {"worker": worker, "started_at": _iso(now), "ended_at": None, "outcome": None}]
            row.started_at = row.started_at or now
            row.error = None
            s.commit()
            return Claim.CLAIMED, Job.of(row)

    def heartbeat(self, job_id: str, worker: str, progress: dict[str, Any] | None = None) -> bool:
        """Renew the lease (and record progress); False when the job is no longer this worker's."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        return self._as_claimant(job_id, worker, values)

    def finish(self, job_id: str, worker: str, result: dict[str, Any], progress: dict[str, Any] | None = None) -> bool:
        extra = {"progress": progress} if progress else {}
        return self._end(job_id, worker, SUCCEEDED, "succeeded", result=result, **extra)

    def fail(self, job_id: str, worker: str, error: str) -> bool:
        return self._end(job_id, worker, FAILED, "failed", error=error)

    def release(self, job_id: str, worker: str, reason: str) -> bool:
        """Give the job back unfinished (a shutdown): queued again, the next worker or start resumes it."""
        return self._end(job_id, worker, QUEUED, reason, error=reason)

    def _end(self, job_id: str, worker: str, state: str, outcome: str, **values: Any) -> bool:
        now = utcnow()
        with self.store.session() as s:
            n = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == RUNNING, JobRow.worker == worker)
                .values(
                    state=state,
                    heartbeat_at=now,
                    finished_at=now if state in ENDED else None,
                    worker=None if state == QUEUED else worker,
                    **values,
                )
                .execution_options(synchronize_session=False)
            ).rowcount
            if not n:
                s.rollback()
                return False
            row = s.get(JobRow, job_id)
            history = list(row.history or [])
            if history:
                history[-1] = {**history[-1], "ended_at": _iso(now), "outcome": outcome}
                row.history = history
            s.commit()
            return True

    def _as_claimant(self, job_id: str, worker: str, values: dict[str, Any]) -> bool:
        with self.store.session() as s:
            n = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == RUNNING, JobRow.worker == worker)
                .values(**values)
                .execution_options(synchronize_session=False)
            ).rowcount
            s.commit()
            return bool(n)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None
