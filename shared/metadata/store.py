"""The metadata store adapter: one SQLAlchemy implementation for SQLite and PostgreSQL.

SQLAlchemy is the port here: the embedded default is a SQLite file under LOOPLINE_HOME,
and `LOOPLINE_DATABASE_URL=postgresql+psycopg://…` moves the same tables to a server.
It stores what is *about* documents and runs; the chunks themselves live in the vector store.
Only the ingestion core's tables have methods here; other packages keep their own tables
and small stores on this store's engine (rag/feedback.py, vision/datasets/version_store.py,
shared/monitoring/*_store.py). Opening a store migrates its database to the newest schema
(migrate.py), once per engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.metadata.migrate import upgrade_to_head
from shared.metadata.tables import DeadLetter, DocumentGroup, DocumentRow, IngestRun, SourcePosition, utcnow

RUN_COUNTERS = ("added", "updated", "unchanged", "deleted", "failed", "chunks")


@dataclass(frozen=True)
class DocumentInfo:
    """A detached, read-only view of a document row."""

    id: str
    source: str
    path: str
    title: str
    content_hash: str
    groups: tuple[str, ...]
    size_bytes: int
    chunk_count: int
    updated_at: datetime

    @classmethod
    def of(cls, row: DocumentRow) -> DocumentInfo:
        return cls(
            id=row.id,
            source=row.source,
            path=row.path,
            title=row.title,
            content_hash=row.content_hash,
            groups=tuple(row.groups),
            size_bytes=row.size_bytes,
            chunk_count=row.chunk_count,
            updated_at=row.updated_at,
        )


def _wal(cur) -> None:  # noqa: ANN001
    """Switch a SQLite database to WAL once. Switching needs the database to itself, and SQLite answers
    "locked" at once (no busy wait) while another process migrates it: wait for that, up to 30 s."""
    import sqlite3
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        db_file = make_url(url).database
        if db_file and db_file != ":memory:":
            Path(db_file).parent.mkdir(parents=True, exist_ok=True)  # a new home has no folder yet
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            _wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class MetadataStore:
    """Documents, runs and dead letters behind one small API; its engine serves other packages' stores."""

    def __init__(self, url: str, *, schema_engine: Engine | None = None) -> None:
        self.url = url
        self.engine = schema_engine or make_engine(url)
        upgrade_to_head(self.engine)  # every package's tables, at the newest revision
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

    # --- documents -------------------------------------------------------------------
    def get_document(self, doc_id: str) -> DocumentInfo | None:
        with self.session() as s:
            row = s.get(DocumentRow, doc_id)
            return DocumentInfo.of(row) if row else None

    def find_document(self, source: str, path: str) -> DocumentInfo | None:
        with self.session() as s:
            row = s.scalar(select(DocumentRow).where(DocumentRow.source == source, DocumentRow.path == path))
            return DocumentInfo.of(row) if row else None

    def documents_of_source(self, source: str) -> dict[str, DocumentInfo]:
        """All documents of a source, keyed by path (for change detection)."""
        with self.session() as s:
            rows = s.scalars(select(DocumentRow).where(DocumentRow.source == source))
            return {r.path: DocumentInfo.of(r) for r in rows}

    def upsert_document(
        self,
        *,
        doc_id: str,
        source: str,
        path: str,
        title: str,
        content_hash: str,
        groups: Iterable[str],
        size_bytes: int,
        chunk_count: int,
    ) -> DocumentInfo:
        with self.session() as s, s.begin():
            row = s.get(DocumentRow, doc_id)
            if row is None:
                row = DocumentRow(id=doc_id, source=source, path=path, created_at=utcnow())
                s.add(row)
            row.title = title
            row.content_hash = content_hash
            row.size_bytes = size_bytes
            row.chunk_count = chunk_count
            row.updated_at = utcnow()
            wanted = sorted(set(groups))
            row.group_rows = [DocumentGroup(document_id=doc_id, group=g) for g in wanted]
            s.flush()
            return DocumentInfo.of(row)

    def delete_document(self, doc_id: str) -> bool:
        with self.session() as s, s.begin():
            row = s.get(DocumentRow, doc_id)
            if row is None:
                return False
            s.delete(row)
            return True

    def list_documents(
        self, *, groups: Sequence[str] | None = None, limit: int = 1000, offset: int = 0
    ) -> list[DocumentInfo]:
        """Documents readable by any of `groups` (all documents when `groups` is None)."""
        with self.session() as s:
            q = select(DocumentRow).order_by(DocumentRow.source, DocumentRow.path)
            if groups is not None:
                visible = select(DocumentGroup.document_id).where(DocumentGroup.group.in_(list(groups)))
                q = q.where(DocumentRow.id.in_(visible))
            return [DocumentInfo.of(r) for r in s.scalars(q.limit(limit).offset(offset))]

    def count_documents(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(DocumentRow)) or 0

    # --- runs ------------------------------------------------------------------------
    def start_run(self, source: str, kind: str = "ingest") -> int:
        with self.session() as s, s.begin():
            run = IngestRun(source=source, kind=kind, status="running", started_at=utcnow())
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, *, status: str, error: str | None = None, **counts: int) -> IngestRun:
        unknown = set(counts) - set(RUN_COUNTERS)
        if unknown:
            raise ValueError(f"unknown run counters: {sorted(unknown)}")
        with self.session() as s, s.begin():
            run = s.get(IngestRun, run_id)
            if run is None:
                raise KeyError(f"no ingest run #{run_id}")
            for name, value in counts.items():
                setattr(run, name, value)
            run.status = status
            run.error = error
            run.finished_at = utcnow()
            return run

    def interrupt_running_runs(self, kinds: Sequence[str], reason: str) -> list[int]:
        """Mark runs of these kinds still `running` as `interrupted` (their process is gone).

        Only a caller that knows no live process can own such a run may call this: the
        process holding the embedded stores of a home, at start.
        """
        with self.session() as s, s.begin():
            runs = list(
                s.scalars(select(IngestRun).where(IngestRun.status == "running", IngestRun.kind.in_(list(kinds))))
            )
            for run in runs:
                run.status = "interrupted"
                run.error = reason
                run.finished_at = utcnow()
            return [run.id for run in runs]

    def get_run(self, run_id: int) -> IngestRun | None:
        with self.session() as s:
            return s.get(IngestRun, run_id)

    def recent_runs(self, limit: int = 20, source: str | None = None) -> list[IngestRun]:
        with self.session() as s:
            q = select(IngestRun).order_by(IngestRun.id.desc()).limit(limit)
            if source is not None:
                q = q.where(IngestRun.source == source)
            return list(s.scalars(q))

    # --- dead letters ----------------------------------------------------------------
    def add_dead_letter(self, *, run_id: int | None, source: str, path: str, reason: str) -> int:
        with self.session() as s, s.begin():
            dl = DeadLetter(run_id=run_id, source=source, path=path, reason=reason)
            s.add(dl)
            s.flush()
            return dl.id

    def dead_letters(self, run_id: int | None = None, limit: int = 100) -> list[DeadLetter]:
        with self.session() as s:
            q = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
            if run_id is not None:
                q = q.where(DeadLetter.run_id == run_id)
            return list(s.scalars(q))

    # --- positions of streamed sources ---------------------------------------------------
    def source_position(self, source: str) -> SourcePosition | None:
        with self.session() as s:
            return s.get(SourcePosition, source)

    def save_source_position(self, source: str, *, kind: str, position: str, state: dict) -> None:
        """Record how far `source` was read (after its changes reached the index)."""
        with self.session() as s, s.begin():
            row = s.get(SourcePosition, source)
            if row is None:
                row = SourcePosition(source=source, kind=kind)
                s.add(row)
            row.kind, row.position, row.state, row.updated_at = kind, position, dict(state), utcnow()

    def forget_source_position(self, source: str) -> bool:
        with self.session() as s, s.begin():
            return bool(s.execute(delete(SourcePosition).where(SourcePosition.source == source)).rowcount)

    def purge_all(self) -> None:
        """Delete every document, run and dead letter (tests).

        Other packages' tables are theirs to empty (`FeedbackStore.purge`, `DatasetVersionStore.purge`).
        """
        with self.session() as s, s.begin():
            for table in (DeadLetter, DocumentGroup, DocumentRow, IngestRun, SourcePosition):
                s.execute(delete(table))
