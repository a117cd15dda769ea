"""Where drift monitoring keeps its data: time buckets, frozen references, device cursors.

Four tables in the metadata database (SQLite or PostgreSQL), created by its migrations
(shared/metadata/migrate.py) when the `MetadataStore` opens:
- `drift_buckets`: per stream, feature and time bucket (an hour by default), what arrived —
  raw numbers as a bounded random sample plus their exact count, category counts, or
  histogram counts over one set of cut points (a device's fixed edges);
- `drift_references`: frozen references (cut points and counts, or category counts), never
  changed after freezing; the newest per stream and feature is the active one;
- `drift_reference_requests`: a reference to freeze from the data arriving after a promotion,
  once enough has arrived;
- `drift_cursors`: the last cumulative counts a device sent per feature, so only the
  difference is added (devices send running totals, which survive lost uploads).

Writes are read-modify-writes of bucket rows (one transaction per call), serialised by a lock in this process and by
`SELECT … FOR UPDATE` on PostgreSQL. It computes no PSI; `drift.py` does.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from shared.metadata.store import MetadataStore
from shared.metadata.tables import Base, utcnow
from shared.monitoring.clock import as_utc

BUCKET_KINDS = ("values", "categories", "histogram")


class DriftBucketRow(Base):
    """What one stream's feature received in one time bucket."""

    __tablename__ = "drift_buckets"
    __table_args__ = (
        UniqueConstraint("stream", "feature", "kind", "bucket_start", "edges_key", name="uq_drift_buckets_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(256), index=True)
    feature: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # values | categories | histogram
    bucket_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    edges_key: Mapped[str] = mapped_column(String(40), default="")  # histograms: hash of the cut points
    n: Mapped[float] = mapped_column(Float, default=0.0)  # observations received (not only sampled)
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # {"sample": [...]}, {"counts": {...}}, {"edges", "counts"}
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftReferenceRow(Base):
    """A frozen reference of one feature: what 'normal' looked like for the model `label`."""

    __tablename__ = "drift_references"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(256), index=True)
    feature: Mapped[str] = mapped_column(String(128))
    label: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))  # numeric | categorical
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # first bucket it was built from
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # last bucket it was built from
    n: Mapped[float] = mapped_column(Float, default=0.0)
    data: Mapped[dict] = mapped_column(JSON, default=dict)  # {"edges", "counts"} or {"counts": {cat: n}}
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftReferenceRequestRow(Base):
    """Freeze a reference for `stream` labelled `label` from data after `since`, once there is enough."""

    __tablename__ = "drift_reference_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(256), index=True)
    label: Mapped[str] = mapped_column(String(256))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    open: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DriftCursorRow(Base):
    """The last running totals a source (a device) sent for a feature."""

    __tablename__ = "drift_cursors"

    source: Mapped[str] = mapped_column(String(256), primary_key=True)
    stream: Mapped[str] = mapped_column(String(256), primary_key=True)
    feature: Mapped[str] = mapped_column(String(128), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(64))  # the sender's counting session; a new one restarts from 0
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


TABLES = [t.__table__ for t in (DriftBucketRow, DriftReferenceRow, DriftReferenceRequestRow, DriftCursorRow)]


@dataclass(frozen=True)
class Observation:
    """What one feature received: numbers (`values`), category `counts`, or histogram `counts` over `edges`."""

    stream: str
    feature: str
    kind: str  # values | categories | histogram
    values: tuple[float, ...] = ()
    counts: tuple[float, ...] | Mapping[str, float] = ()
    edges: tuple[float, ...] = ()


@dataclass(frozen=True)
class Bucket:
    """A detached view of a bucket row."""

    stream: str
    feature: str
    kind: str
    start: datetime
    n: float
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reference:
    """A detached view of a frozen reference."""

    id: int
    stream: str
    feature: str
    label: str
    kind: str
    since: datetime
    until: datetime
    n: float
    data: dict
    created_at: datetime


@dataclass(frozen=True)
class ReferenceRequest:
    id: int
    stream: str
    label: str
    since: datetime


def edges_key(edges: Sequence[float]) -> str:
    return hashlib.sha1(json.dumps([float(e) for e in edges]).encode()).hexdigest()


class DriftStore:
    """The drift tables on a metadata store's database."""

    def __init__(self, store: MetadataStore, *, rng: random.Random | None = None) -> None:
        self.store = store
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    # --- buckets -----------------------------------------------------------------------
    def add(self, start: datetime, observations: Sequence[Observation], *, sample_cap: int) -> None:
        """Add observations to their buckets starting at `start`, all in one transaction."""
        if not observations:
            return
        with self._lock:
            for attempt in range(2):
                try:
                    with self.store.session() as s, s.begin():
                        for ob in observations:
                            self._apply(s, start, ob, sample_cap)
                    return
                except IntegrityError:  # another process created a row first: update it instead
                    if attempt:
                        raise

    def _apply(self, s: Session, start: datetime, ob: Observation, sample_cap: int) -> None:
        key = edges_key(ob.edges) if ob.kind == "histogram" else ""
        row = s.scalar(
            select(DriftBucketRow)
            .where(
                DriftBucketRow.stream == ob.stream,
                DriftBucketRow.feature == ob.feature,
                DriftBucketRow.kind == ob.kind,
                DriftBucketRow.bucket_start == start,
                DriftBucketRow.edges_key == key,
            )
            .with_for_update()
        )
        if row is None:
            row = DriftBucketRow(
                stream=ob.stream, feature=ob.feature, kind=ob.kind, bucket_start=start, edges_key=key, n=0.0, data={}
            )
            s.add(row)
        old = row.data or {}
        if ob.kind == "values":
            sample = list(old.get("sample", []))
            seen = int(row.n or 0)
            for v in ob.values:
                seen += 1
                if len(sample) < sample_cap:
                    sample.append(float(v))
                else:  # reservoir sampling: every value seen so far is kept with equal probability
                    j = self._rng.randrange(seen)
                    if j < sample_cap:
                        sample[j] = float(v)
            row.n = float(seen)
            row.data = {"sample": sample}
        elif ob.kind == "categories":
            merged = dict(old.get("counts", {}))
            for k, v in dict(ob.counts).items():
                merged[str(k)] = merged.get(str(k), 0.0) + float(v)
            row.n = float(row.n or 0) + float(sum(dict(ob.counts).values()))
            row.data = {"counts": merged}
        elif ob.kind == "histogram":
            counts = [float(c) for c in ob.counts]
            prev = old.get("counts") or [0.0] * len(counts)
            row.data = {"edges": [float(e) for e in ob.edges], "counts": [a + b for a, b in zip(prev, counts)]}
            row.n = float(row.n or 0) + float(sum(counts))
        else:
            raise ValueError(f"unknown observation kind {ob.kind!r}; expected one of {BUCKET_KINDS}")
        row.updated_at = utcnow()

    def buckets(
        self,
        *,
        stream: str | None = None,
        feature: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Bucket]:
        """Buckets with start in [since, until], oldest first."""
        q = select(DriftBucketRow).order_by(DriftBucketRow.bucket_start, DriftBucketRow.id)
        if stream is not None:
            q = q.where(DriftBucketRow.stream == stream)
        if feature is not None:
            q = q.where(DriftBucketRow.feature == feature)
        if since is not None:
            q = q.where(DriftBucketRow.bucket_start >= since)
        if until is not None:
            q = q.where(DriftBucketRow.bucket_start <= until)
        with self.store.session() as s:
            return [
                Bucket(r.stream, r.feature, r.kind, as_utc(r.bucket_start), float(r.n), dict(r.data or {}))
                for r in s.scalars(q)
            ]

    def features(self) -> list[tuple[str, str]]:
        """Every (stream, feature) with data or a reference, sorted."""
        with self.store.session() as s:
            seen = set(s.execute(select(DriftBucketRow.stream, DriftBucketRow.feature).distinct()).all())
            seen |= set(s.execute(select(DriftReferenceRow.stream, DriftReferenceRow.feature).distinct()).all())
        return sorted((a, b) for a, b in seen)

    def oldest_bucket(self) -> datetime | None:
        with self.store.session() as s:
            found = s.scalar(select(func.min(DriftBucketRow.bucket_start)))
        return None if found is None else as_utc(found)

    def prune(self, before: datetime) -> int:
        """Delete buckets that started before `before`; references are kept."""
        with self.store.session() as s, s.begin():
            return s.execute(delete(DriftBucketRow).where(DriftBucketRow.bucket_start < before)).rowcount or 0

    # --- references --------------------------------------------------------------------
    def add_reference(
        self,
        *,
        stream: str,
        feature: str,
        label: str,
        kind: str,
        since: datetime,
        until: datetime,
        n: float,
        data: dict,
        created_at: datetime | None = None,
    ) -> Reference:
        with self.store.session() as s, s.begin():
            row = DriftReferenceRow(
                stream=stream,
                feature=feature,
                label=label,
                kind=kind,
                since=since,
                until=until,
                n=n,
                data=data,
                created_at=created_at or utcnow(),
            )
            s.add(row)
            s.flush()
            return _reference(row)

    def references(self, stream: str | None = None, feature: str | None = None) -> list[Reference]:
        """References, oldest first (the last one per stream and feature is the active one)."""
        q = select(DriftReferenceRow).order_by(DriftReferenceRow.id)
        if stream is not None:
            q = q.where(DriftReferenceRow.stream == stream)
        if feature is not None:
            q = q.where(DriftReferenceRow.feature == feature)
        with self.store.session() as s:
            return [_reference(r) for r in s.scalars(q)]

    def latest_references(self) -> list[Reference]:
        """The active (newest) reference of every stream and feature."""
        newest = select(func.max(DriftReferenceRow.id)).group_by(DriftReferenceRow.stream, DriftReferenceRow.feature)
        with self.store.session() as s:
            rows = s.scalars(
                select(DriftReferenceRow).where(DriftReferenceRow.id.in_(newest)).order_by(DriftReferenceRow.id)
            )
            return [_reference(r) for r in rows]

    # --- reference requests ------------------------------------------------------------
    def open_request(self, stream: str, label: str, since: datetime) -> ReferenceRequest:
        """Ask for a reference after `since`; replaces an open request of another label."""
        with self._lock, self.store.session() as s, s.begin():
            rows = list(
                s.scalars(
                    select(DriftReferenceRequestRow)
                    .where(DriftReferenceRequestRow.stream == stream, DriftReferenceRequestRow.open.is_(True))
                    .with_for_update()
                )
            )
            for row in rows:
                if row.label == label:
                    return ReferenceRequest(row.id, row.stream, row.label, as_utc(row.since))
                row.open = False
            row = DriftReferenceRequestRow(stream=stream, label=label, since=since, open=True, created_at=utcnow())
            s.add(row)
            s.flush()
            return ReferenceRequest(row.id, stream, label, as_utc(since))

    def open_requests(self, stream: str | None = None) -> list[ReferenceRequest]:
        q = (
            select(DriftReferenceRequestRow)
            .where(DriftReferenceRequestRow.open.is_(True))
            .order_by(DriftReferenceRequestRow.id)
        )
        if stream is not None:
            q = q.where(DriftReferenceRequestRow.stream == stream)
        with self.store.session() as s:
            return [ReferenceRequest(r.id, r.stream, r.label, as_utc(r.since)) for r in s.scalars(q)]

    def close_request(self, request_id: int) -> None:
        with self.store.session() as s, s.begin():
            row = s.get(DriftReferenceRequestRow, request_id)
            if row is not None:
                row.open = False

    # --- cursors -----------------------------------------------------------------------
    def advance_cursors(
        self, source: str, stream: str, epoch: str, totals: Mapping[str, dict]
    ) -> dict[str, dict | None]:
        """Store each feature's latest running totals; return the previous ones of the same epoch."""
        previous: dict[str, dict | None] = {}
        with self._lock, self.store.session() as s, s.begin():
            for feature, data in totals.items():
                row = s.get(DriftCursorRow, (source, stream, feature), with_for_update=True)
                previous[feature] = dict(row.data) if row is not None and row.epoch == epoch else None
                if row is None:
                    s.add(
                        DriftCursorRow(
                            source=source,
                            stream=stream,
                            feature=feature,
                            epoch=epoch,
                            data=dict(data),
                            updated_at=utcnow(),
                        )
                    )
                else:
                    row.epoch, row.data, row.updated_at = epoch, dict(data), utcnow()
        return previous


def _reference(r: DriftReferenceRow) -> Reference:
    return Reference(
        id=r.id,
        stream=r.stream,
        feature=r.feature,
        label=r.label,
        kind=r.kind,
        since=as_utc(r.since),
        until=as_utc(r.until),
        n=float(r.n),
        data=dict(r.data or {}),
        created_at=as_utc(r.created_at),
    )
