"""Schema migrations: homes made before Alembic upgrade in place, head matches the models, one migrator at a time.

The fixtures under fixtures/ were made by the code before migrations (make_pre_migrations.py):
a SQLite home with a few rows of every table, and the DDL its `create_all` sent to
PostgreSQL. Each backend gets today's schema from them, is opened by the new stores and
must show the same rows through them (`_assert_home_survived`, written once for both).
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Column, Integer, MetaData, create_engine, create_mock_engine, event, inspect, select, text

from rag.feedback import FeedbackStore
from shared.metadata import migrate
from shared.metadata.store import MetadataStore
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.drift_store import DriftStore
from vision.datasets.version_store import DatasetVersionStore

FIXTURES = Path(__file__).parent / "fixtures"
OLD_SQLITE = FIXTURES / "pre_migrations.sqlite"
OLD_POSTGRES_DDL = FIXTURES / "pre_migrations.postgresql.sql"
REPO = Path(__file__).resolve().parents[2]
FROM_SCRATCH = f"-> {migrate.BASELINE},"  # Alembic's log line of a migration from an empty database
MONITORING_TABLES = (
    "monitoring_alerts",
    "retraining_requests",
    "drift_buckets",
    "drift_references",
    "drift_reference_requests",
    "drift_cursors",
)


def _old_home(tmp_path: Path) -> str:
    """A copy of the pre-migration SQLite home (the committed file is never opened for writing)."""
    db = tmp_path / "home" / "metadata.db"
    db.parent.mkdir(parents=True)
    shutil.copyfile(OLD_SQLITE, db)
    return f"sqlite:///{db}"


def _ddl_statements() -> list[str]:
    body = "\n".join(line for line in OLD_POSTGRES_DDL.read_text().splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def _old_postgres(url: str) -> None:
    """Today's schema on PostgreSQL, by the recorded DDL, holding the SQLite fixture's rows."""
    source = create_engine(f"sqlite:///{OLD_SQLITE}")
    target = create_engine(url)
    try:
        with target.begin() as conn:
            for statement in _ddl_statements():
                conn.exec_driver_sql(statement)
        old, new = MetaData(), MetaData()
        old.reflect(source)
        new.reflect(target)
        with source.connect() as src, target.begin() as dst:
            for table in new.sorted_tables:
                rows = [dict(r) for r in src.execute(select(old.tables[table.name])).mappings()]
                if rows:
                    dst.execute(table.insert(), rows)
                if "id" in table.c and isinstance(table.c.id.type, Integer):
                    dst.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name}")
                    )
    finally:
        source.dispose()
        target.dispose()


def _assert_home_survived(store: MetadataStore) -> None:
    """The fixture's rows, read through the new stores, then written to."""
    docs = store.list_documents()
    assert [(d.id, d.path, d.groups) for d in docs] == [
        ("doc-eng", "engineering/oncall.md", ("engineering", "sales")),
        ("doc-people", "people-ops/leave.md", ("people-ops",)),
        ("doc-public", "public/visitors.md", ("everyone",)),
    ]
    assert [d.id for d in store.list_documents(groups=["people-ops"])] == ["doc-people"]
    assert store.find_document("folder:/srv/handbook", "engineering/oncall.md").content_hash == "a" * 64
    runs = store.recent_runs()
    assert [(r.id, r.kind, r.status) for r in runs] == [
        (3, "dataset", "succeeded"),
        (2, "sync", "failed"),
        (1, "ingest", "partial"),
    ]
    assert (runs[2].added, runs[2].failed, runs[2].chunks, runs[1].error) == (3, 1, 6, "RuntimeError: disk full")
    assert [d.path for d in store.dead_letters()] == ["big.bin", "broken.pdf"]
    assert [d.path for d in store.dead_letters(run_id=1)] == ["broken.pdf"]

    feedback = FeedbackStore(store)
    assert [(f.user, f.rating, f.comment, f.extra) for f in feedback.recent()] == [
        ("bob", 1, "wrong", {"doc": "doc-people"}),
        ("ada", 5, "", {}),
    ]
    version = DatasetVersionStore(store).get("plates")
    assert version is not None and version.ref == "plates@0123456789ab"
    assert (version.classes, version.run_id, version.counts["train"]["boxes"]) == (("scratch", "dent"), 3, 2)
    assert [a.key for a in AlertStore(store).open_alerts()] == ["rag/query_length"]
    assert [r.stream for r in AlertStore(store).open_retraining_requests()] == ["vision"]
    drift = DriftStore(store)
    assert [(r.feature, r.label) for r in drift.references()] == [("query_length", "v1")]
    assert [r.label for r in drift.open_requests()] == ["v2"]

    # and the old tables take new rows (ids continue after the old ones)
    assert feedback.add(user="cy", question="q", answer="a", rating=4) == 3
    assert store.start_run("src") == 4
    store.upsert_document(
        doc_id="doc-new",
        source="src",
        path="n.md",
        title="n",
        content_hash="d",
        groups=["x"],
        size_bytes=1,
        chunk_count=1,
    )
    assert store.get_document("doc-new").groups == ("x",)
    with store.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
        assert migrate.differences(conn) == []


def _reopened(url: str) -> MetadataStore:
    store = MetadataStore(url)
    _assert_home_survived(store)
    store.close()
    again = MetadataStore(url)  # a second start: already at head
    assert [f.user for f in FeedbackStore(again).recent()] == ["cy", "bob", "ada"]
    return again


# --- homes made before migrations ------------------------------------------------------
def test_a_sqlite_home_from_before_migrations_is_stamped_and_upgraded(tmp_path: Path) -> None:
    url = _old_home(tmp_path)
    _reopened(url).close()


def test_a_postgres_database_from_before_migrations_is_stamped_and_upgraded(postgres_url: str) -> None:
    _old_postgres(postgres_url)
    _reopened(postgres_url).close()


def test_a_home_that_never_monitored_gets_the_monitoring_tables(tmp_path: Path) -> None:
    """Before migrations the alert and drift tables were made at first use: an older home may lack them."""
    url = _old_home(tmp_path)
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    for table in MONITORING_TABLES:
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()

    store = MetadataStore(url)
    try:
        assert set(MONITORING_TABLES) <= set(inspect(store.engine).get_table_names())
        assert AlertStore(store).open_alerts() == []
        assert [f.user for f in FeedbackStore(store).recent()] == ["bob", "ada"]
        with store.engine.connect() as c:
            assert migrate.current_revision(c) == migrate.head()
            assert migrate.differences(c) == []
    finally:
        store.close()


def test_tables_of_our_names_but_other_columns_are_refused_and_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY, stars INTEGER)")
    conn.commit()
    conn.close()

    with pytest.raises(
        migrate.SchemaMismatch, match=r"table feedback: missing columns \[.*'rating'.*unknown columns \['stars'\]"
    ):
        MetadataStore(f"sqlite:///{db}")

    conn = sqlite3.connect(db)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["feedback"]
    conn.close()


def test_a_database_migrated_by_a_newer_loopline_is_refused(sqlite_url: str) -> None:
    MetadataStore(sqlite_url).close()
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'from_the_future'"))
    engine.dispose()

    with pytest.raises(migrate.SchemaMismatch, match="revision from_the_future, which this loopline does not know"):
        MetadataStore(sqlite_url)


# --- the first revision is today's schema ----------------------------------------------
def test_the_first_revision_sends_postgres_the_ddl_create_all_sent() -> None:
    statements: list[str] = []
    engine = create_mock_engine(
        "postgresql+psycopg://", lambda sql, *a, **kw: statements.append(str(sql.compile(dialect=engine.dialect)))
    )
    baseline = migrate.baseline_module()
    baseline.TABLES.create_all(engine, checkfirst=False)
    assert sorted(s.strip() for s in statements) == sorted(_ddl_statements())


def test_the_first_revision_makes_the_sqlite_schema_create_all_made(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), migrate.BASELINE)  # only the first revision
    engine.dispose()

    def schema(db: Path) -> set[tuple]:
        conn = sqlite3.connect(db)
        try:
            rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE '%alembic%'")
            return set(rows)
        finally:
            conn.close()

    assert schema(tmp_path / "new.db") == schema(OLD_SQLITE)


# --- head against the models ------------------------------------------------------------
def test_the_migrations_at_head_match_the_models(store: MetadataStore) -> None:
    """A table or column changed in a model without a revision fails here.

    The fix: `python -m shared.metadata.migrate revision "what changed"`, then read the file.
    """
    with store.engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
        assert migrate.differences(conn) == []


def test_the_comparison_sees_a_model_change_without_a_migration(sqlite_store: MetadataStore) -> None:
    changed = MetaData()
    for table in migrate.schema_metadata().tables.values():
        table.to_metadata(changed)
    changed.tables["feedback"].append_column(Column("never_migrated", Integer, nullable=True))

    with sqlite_store.engine.connect() as conn:
        diff = migrate.differences(conn, changed)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "feedback", "never_migrated")]


def test_every_table_module_is_part_of_the_schema() -> None:
    """A package adding tables must declare its module (shared: SHARED_TABLE_MODULES, verticals: the
    `loopline.tables` entry points), or the comparison misses them."""
    defining = set()
    for package in ("shared", "rag", "vision", "edge", "evaluation"):
        for path in (REPO / package).rglob("*.py"):
            if "migrations" not in path.parts and re.search(r"^\s+__tablename__ = ", path.read_text(), re.M):
                defining.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    assert defining == set(migrate.schema_modules())


# --- once per engine, one migrator at a time ---------------------------------------------
def test_an_engine_at_head_is_not_asked_again(sqlite_store: MetadataStore) -> None:
    statements: list[str] = []
    event.listen(sqlite_store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    migrate.upgrade_to_head(sqlite_store.engine)
    assert statements == []


def test_a_second_store_on_a_database_at_head_runs_no_migration(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    MetadataStore(sqlite_url).close()
    with caplog.at_level(logging.INFO, logger="alembic"):
        MetadataStore(sqlite_url).close()
    assert not [r for r in caplog.records if "Running" in r.getMessage()]


def test_postgres_migrates_under_an_advisory_lock(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """While one process migrates (holding the lock), another start waits, then finds head."""
    holder = create_engine(postgres_url)
    opened: list[MetadataStore] = []
    errors: list[BaseException] = []

    def second_start() -> None:
        try:
            opened.append(MetadataStore(postgres_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    try:
        with caplog.at_level(logging.INFO, logger="alembic"), holder.connect() as conn:
            migrate._lock(conn)
            migrate._upgrade(conn)  # the first process, mid-migration: not committed yet
            waiter = threading.Thread(target=second_start)
            waiter.start()
            time.sleep(0.5)
            assert waiter.is_alive() and not opened
            conn.commit()
        waiter.join(30)
        assert errors == [] and len(opened) == 1
        assert len([r for r in caplog.records if FROM_SCRATCH in r.getMessage()]) == 1
        assert FeedbackStore(opened[0]).recent() == []
    finally:
        for store in opened:
            store.close()
        holder.dispose()


START_TOGETHER = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
from shared.metadata.store import MetadataStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
MetadataStore(sys.argv[1]).close()
"""


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_processes_starting_together_migrate_once(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    start_at = str(time.time() + 3.0)  # both have imported by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", START_TOGETHER, url, start_at],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(out.count(FROM_SCRATCH) for out in outputs) == 1, outputs
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head()
    finally:
        engine.dispose()
