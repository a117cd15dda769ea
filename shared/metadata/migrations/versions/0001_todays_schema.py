"""The schema before migrations: every table as `Base.metadata.create_all` made it.

Revision ID: 0001
Revises:

A frozen copy of the twelve tables of that time (ingestion core, feedback, dataset
versions, alerts, drift), never to be edited: later changes are later revisions. The tables
are created with `create_all` from these definitions, so the DDL is exactly what the stores
sent before (tests/shared/test_migrations.py compares it with the DDL recorded then).

A database made before migrations has tables but no version row: shared.metadata.migrate
checks those tables against `TABLES` (`mismatches`), creates the ones an older start had not
made yet (`create`; the monitoring tables were made only when first used) and stamps it as
this revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _at() -> DateTime:
    return DateTime(timezone=True)


def define(metadata: MetaData) -> None:
    """The tables of this revision, on `metadata`."""
    Table(
        "documents",
        metadata,
        Column("id", String(36), primary_key=True),
        Column("source", String(512), nullable=False, index=True),
        Column("path", String(1024), nullable=False),
        Column("title", String(512), nullable=False),
        Column("content_hash", String(64), nullable=False),
        Column("size_bytes", Integer, nullable=False),
        Column("chunk_count", Integer, nullable=False),
        Column("created_at", _at(), nullable=False),
        Column("updated_at", _at(), nullable=False),
        UniqueConstraint("source", "path", name="uq_documents_source_path"),
    )
    Table(
        "document_groups",
        metadata,
        Column("document_id", String(36), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
        Column("group", String(128), primary_key=True, index=True),
    )
    Table(
        "ingest_runs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("source", String(512), nullable=False, index=True),
        Column("kind", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("started_at", _at(), nullable=False),
        Column("finished_at", _at(), nullable=True),
        *(Column(n, Integer, nullable=False) for n in ("added", "updated", "unchanged", "deleted", "failed", "chunks")),
        Column("error", Text, nullable=True),
    )
    Table(
        "dead_letters",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", Integer, ForeignKey("ingest_runs.id"), nullable=True, index=True),
        Column("source", String(512), nullable=False),
        Column("path", String(1024), nullable=False),
        Column("reason", Text, nullable=False),
        Column("created_at", _at(), nullable=False),
    )
    Table(
        "feedback",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("user", String(128), nullable=False),
        Column("question", Text, nullable=False),
        Column("answer", Text, nullable=False),
        Column("rating", Integer, nullable=False),
        Column("comment", Text, nullable=False),
        Column("extra", JSON, nullable=False),
        Column("created_at", _at(), nullable=False),
    )
    Table(
        "dataset_versions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(256), nullable=False, index=True),
        Column("version", String(64), nullable=False, index=True),
        Column("data_yaml", String(1024), nullable=False),
        Column("source_yaml", String(1024), nullable=False),
        Column("run_id", Integer, nullable=True),
        Column("counts", JSON, nullable=False),
        Column("classes", JSON, nullable=False),
        Column("manifest", JSON, nullable=False),
        Column("created_at", _at(), nullable=False),
        UniqueConstraint("name", "version", name="uq_dataset_versions_name_version"),
    )
    Table(
        "monitoring_alerts",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(64), nullable=False, index=True),
        Column("key", String(512), nullable=False),
        Column("open_key", String(600), unique=True, nullable=True),
        Column("severity", String(16), nullable=False),
        Column("message", Text, nullable=False),
        Column("details", JSON, nullable=False),
        Column("status", String(16), nullable=False, index=True),
        Column("count", Integer, nullable=False),
        Column("raised_at", _at(), nullable=False),
        Column("last_seen_at", _at(), nullable=False),
        Column("resolved_at", _at(), nullable=True),
    )
    Table(
        "retraining_requests",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("stream", String(256), nullable=False, index=True),
        Column("reason", Text, nullable=False),
        Column("alert_id", Integer, nullable=True),
        Column("created_at", _at(), nullable=False),
        Column("status", String(16), nullable=False, index=True),
        Column("consumed_by", String(256), nullable=True),
        Column("consumed_at", _at(), nullable=True),
    )
    Table(
        "drift_buckets",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("stream", String(256), nullable=False, index=True),
        Column("feature", String(128), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("bucket_start", _at(), nullable=False, index=True),
        Column("edges_key", String(40), nullable=False),
        Column("n", Float, nullable=False),
        Column("data", JSON, nullable=False),
        Column("updated_at", _at(), nullable=False),
        UniqueConstraint("stream", "feature", "kind", "bucket_start", "edges_key", name="uq_drift_buckets_key"),
    )
    Table(
        "drift_references",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("stream", String(256), nullable=False, index=True),
        Column("feature", String(128), nullable=False),
        Column("label", String(256), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("since", _at(), nullable=False),
        Column("until", _at(), nullable=False),
        Column("n", Float, nullable=False),
        Column("data", JSON, nullable=False),
        Column("created_at", _at(), nullable=False),
    )
    Table(
        "drift_reference_requests",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("stream", String(256), nullable=False, index=True),
        Column("label", String(256), nullable=False),
        Column("since", _at(), nullable=False),
        Column("open", Boolean, nullable=False, index=True),
        Column("created_at", _at(), nullable=False),
    )
    Table(
        "drift_cursors",
        metadata,
        Column("source", String(256), primary_key=True),
        Column("stream", String(256), primary_key=True),
        Column("feature", String(128), primary_key=True),
        Column("epoch", String(64), nullable=False),
        Column("data", JSON, nullable=False),
        Column("updated_at", _at(), nullable=False),
    )


def tables() -> MetaData:
    metadata = MetaData()
    define(metadata)
    return metadata


TABLES = tables()


def mismatches(bind: sa.Connection) -> list[str]:
    """How this database's tables of this revision differ from it, by column names (empty: they match)."""
    inspector = sa.inspect(bind)
    present = set(inspector.get_table_names())
    problems = []
    for name, table in TABLES.tables.items():
        if name not in present:
            continue
        found = {c["name"] for c in inspector.get_columns(name)}
        wanted = set(table.columns.keys())
        if found != wanted:
            missing, extra = sorted(wanted - found), sorted(found - wanted)
            problems.append(f"table {name}: missing columns {missing}, unknown columns {extra}")
    return problems


def create(bind: sa.Connection) -> None:
    """Create the tables of this revision that the database lacks (all of them on a new one)."""
    TABLES.create_all(bind, checkfirst=True)


def upgrade() -> None:
    create(op.get_bind())


def downgrade() -> None:
    TABLES.drop_all(op.get_bind(), checkfirst=True)
