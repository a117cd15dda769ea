"""Where alerts and retraining requests are kept: two tables next to the run records.

The tables live on the metadata store's `Base` (so SQLite and PostgreSQL both work) and are
created by its migrations (shared/metadata/migrate.py) when the `MetadataStore` opens. An
open alert is unique per (kind, key): the `open_key` column holds "kind/key" while the
alert is open and NULL once resolved, under a unique constraint, so two processes raising
the same alert at once still open only one.
Retraining requests are the hand-off from a drift alert to the retraining loop, which
takes them with `consume`. Delivery, de-duplication policy and actions live in `alerts.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import JSON, DateTime, Integer, String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from shared.metadata.store import MetadataStore
from shared.metadata.tables import Base
from shared.monitoring.clock import as_utc, resolve_now

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class AlertRow(Base):
    """One alert: opened once per (kind, key), seen again by later checks, resolved once."""

    __tablename__ = "monitoring_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    key: Mapped[str] = mapped_column(String(512))
    open_key: Mapped[str | None] = mapped_column(String(600), unique=True, nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    count: Mapped[int] = mapped_column(Integer, default=1)
    raised_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RetrainingRequestRow(Base):
    """A request to retrain the model of a stream; the retraining loop consumes it."""

    __tablename__ = "retraining_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(256), index=True)
    reason: Mapped[str] = mapped_column(Text)
    alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    consumed_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Alert(BaseModel):
    """A detached view of an alert row."""

    id: int
    kind: str
    key: str
    severity: Severity
    message: str
    details: dict
    status: Literal["open", "resolved"]
    count: int
    raised_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None = None

    @classmethod
    def of(cls, row: AlertRow) -> Alert:
        return cls(
            id=row.id,
            kind=row.kind,
            key=row.key,
            severity=row.severity,  # type: ignore[arg-type]
            message=row.message,
            details=dict(row.details or {}),
            status=row.status,  # type: ignore[arg-type]
            count=row.count,
            raised_at=as_utc(row.raised_at),
            last_seen_at=as_utc(row.last_seen_at),
            resolved_at=as_utc(row.resolved_at) if row.resolved_at else None,
        )


class RetrainingRequest(BaseModel):
    """A detached view of a retraining request row."""

    id: int
    stream: str
    reason: str
    alert_id: int | None
    created_at: datetime
    status: Literal["open", "consumed"]
    consumed_by: str | None = None
    consumed_at: datetime | None = None

    @classmethod
    def of(cls, row: RetrainingRequestRow) -> RetrainingRequest:
        return cls(
            id=row.id,
            stream=row.stream,
            reason=row.reason,
            alert_id=row.alert_id,
            created_at=as_utc(row.created_at),
            status=row.status,  # type: ignore[arg-type]
            consumed_by=row.consumed_by,
            consumed_at=as_utc(row.consumed_at) if row.consumed_at else None,
        )


def open_key(kind: str, key: str) -> str:
    return f"{kind}/{key}"


class AlertStore:
    """Alert and retraining-request rows in the metadata store's database."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # --- alerts ----------------------------------------------------------------------
    def open_or_touch(
        self, *, kind: str, key: str, severity: Severity, message: str, details: dict, now: datetime
    ) -> tuple[Alert, bool]:
        """Open the (kind, key) alert, or count one more sighting of the open one.

        Returns (alert, opened): `opened` is False when the alert was already open.
        """
        for _ in range(2):  # a concurrent opener wins the unique open_key: then touch theirs
            touched = self._touch(kind, key, severity, message, details, now)
            if touched is not None:
                return touched, False
            try:
                with self.store.session() as s, s.begin():
                    row = AlertRow(
                        kind=kind,
                        key=key,
                        open_key=open_key(kind, key),
                        severity=severity,
                        message=message,
                        details=details,
                        status="open",
                        count=1,
                        raised_at=now,
                        last_seen_at=now,
                    )
                    s.add(row)
                    s.flush()
                    return Alert.of(row), True
            except IntegrityError:
                continue
        raise RuntimeError(f"could not open or update alert {kind}/{key}")

    def _touch(
        self, kind: str, key: str, severity: Severity, message: str, details: dict, now: datetime
    ) -> Alert | None:
        with self.store.session() as s, s.begin():
            row = s.scalar(select(AlertRow).where(AlertRow.open_key == open_key(kind, key)))
            if row is None:
                return None
            row.count += 1
            row.last_seen_at = now
            row.severity = severity
            row.message = message
            row.details = details
            return Alert.of(row)

    def resolve(self, kind: str, key: str, now: datetime) -> Alert | None:
        """Close the open (kind, key) alert; None when none was open."""
        with self.store.session() as s, s.begin():
            row = s.scalar(select(AlertRow).where(AlertRow.open_key == open_key(kind, key)))
            if row is None:
                return None
            row.status = "resolved"
            row.open_key = None
            row.resolved_at = now
            return Alert.of(row)

    def open_alerts(self, kind: str | None = None) -> list[Alert]:
        """Open alerts, most severe first, then oldest first."""
        with self.store.session() as s:
            q = select(AlertRow).where(AlertRow.status == "open")
            if kind is not None:
                q = q.where(AlertRow.kind == kind)
            rows = [Alert.of(r) for r in s.scalars(q.order_by(AlertRow.id))]
        return sorted(rows, key=lambda a: -SEVERITY_RANK[a.severity])

    def recent_alerts(self, limit: int = 50) -> list[Alert]:
        """Open and resolved alerts, newest first."""
        with self.store.session() as s:
            return [Alert.of(r) for r in s.scalars(select(AlertRow).order_by(AlertRow.id.desc()).limit(limit))]

    # --- retraining requests ---------------------------------------------------------
    def request_retraining(
        self, stream: str, reason: str, *, alert_id: int | None = None, now: datetime | None = None
    ) -> tuple[RetrainingRequest, bool]:
        """Add an open request for `stream`, unless one is open already (then that one, False)."""
        now = resolve_now(now)
        with self.store.session() as s, s.begin():
            existing = s.scalar(
                select(RetrainingRequestRow)
                .where(RetrainingRequestRow.stream == stream, RetrainingRequestRow.status == "open")
                .order_by(RetrainingRequestRow.id)
            )
            if existing is not None:
                return RetrainingRequest.of(existing), False
            row = RetrainingRequestRow(stream=stream, reason=reason, alert_id=alert_id, created_at=now, status="open")
            s.add(row)
            s.flush()
            return RetrainingRequest.of(row), True

    def open_retraining_requests(self, stream: str | None = None) -> list[RetrainingRequest]:
        """Requests not yet consumed, oldest first (of one stream when given)."""
        with self.store.session() as s:
            q = select(RetrainingRequestRow).where(RetrainingRequestRow.status == "open")
            if stream is not None:
                q = q.where(RetrainingRequestRow.stream == stream)
            return [RetrainingRequest.of(r) for r in s.scalars(q.order_by(RetrainingRequestRow.id))]

    def consume(self, request_id: int, by: str, *, now: datetime | None = None) -> RetrainingRequest | None:
        """Mark an open request consumed by `by`; None when it is unknown or already taken.

        A single conditional UPDATE, so of two loops racing for a request exactly one wins.
        """
        with self.store.session() as s, s.begin():
            taken = s.execute(
                update(RetrainingRequestRow)
                .where(RetrainingRequestRow.id == request_id, RetrainingRequestRow.status == "open")
                .values(status="consumed", consumed_by=by, consumed_at=resolve_now(now))
            ).rowcount
            if not taken:
                return None
            return RetrainingRequest.of(s.get(RetrainingRequestRow, request_id))
