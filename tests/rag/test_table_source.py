"""A PostgreSQL table as a document source: snapshot, change data capture, polling, schema checks.

CDC runs against a private cluster with wal_level=logical (tests/helpers/pg_logical.py); the
polling fallback against the machine's own server, whose wal_level=replica makes `auto`
fall back by itself.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from evaluation.benchmarks.pg_cluster import LogicalCluster
from rag.table_sources import table_sink
from shared.auth import Principal
from shared.ingestion.pg_cdc import TableFollower
from shared.ingestion.pg_table import SchemaChanged, TableSourceError, TableSpec

ADMIN = Principal(name="root", admin=True)
STAFF = Principal(name="sam", groups=["staff"])
HR = Principal(name="hana", groups=["hr"])

ROWS = [
    (1, "VPN", "The VPN password rotates every 90 days; the service desk resets it.", "{staff}"),
    (2, "Parking", "Visitors park for free on level 2 of the garage.", None),
    (3, "Payroll", "Salaries are paid on the 25th of each month by bank transfer.", "{hr}"),
]


@pytest.fixture
def cluster(pg: LogicalCluster) -> str:
    return pg.dsn


def _database(admin_dsn: str) -> str:
    name = f"kb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_dsn.replace("dbname=postgres", f"dbname={name}")


def _articles(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE articles (id integer PRIMARY KEY, title text, body text, readers text[], "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
        for row in ROWS:
            conn.execute("INSERT INTO articles (id, title, body, readers) VALUES (%s, %s, %s, %s)", row)


def _sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def kb(cluster: str) -> str:
    dsn = _database(cluster)
    _articles(dsn)
    return dsn


def _spec(dsn: str, **over) -> TableSpec:
    cols = {"table": "articles", "id": "id", "text": "body", "title": "title", "groups": "readers"}
    return TableSpec(dsn=dsn, **{**cols, "updated_at": "updated_at", **over})


def _follower(service, spec: TableSpec, **kw) -> TableFollower:
    return TableFollower(spec, service.metadata, table_sink(service, spec), **kw).open()


def _answer(service, question: str, who: Principal = ADMIN) -> str:
    got = service.ask(question, who)
    return "" if got.abstained else got.answer


def test_snapshot_then_changes_reach_answers_with_their_readers(make_service, kb):
    service = make_service()
    follower = _follower(service, _spec(kb))
    first = follower.catch_up()
    assert follower.mode == "cdc" and first.snapshot
    assert first.counts()["added"] == 3
    assert "90 days" in _answer(service, "How often does the VPN password rotate?", STAFF)
    assert _answer(service, "When are salaries paid?", STAFF) == ""  # the payroll row is hr's
    assert "25th" in _answer(service, "When are salaries paid?", HR)

    _sql(
        kb,
        "UPDATE articles SET body = 'The VPN password rotates every 30 days; the service desk resets it.' WHERE id = 1",
        "DELETE FROM articles WHERE id = 2",
        "UPDATE articles SET readers = '{staff}' WHERE id = 3",  # payroll opens to staff, closes to hr
        "INSERT INTO articles (id, title, body) VALUES (4, 'Lunch', 'The canteen serves lunch from noon to two.')",
    )
    second = follower.catch_up()
    assert not second.snapshot and second.transactions == 4
    counts = second.counts()
    assert (counts["added"], counts["updated"], counts["deleted"]) == (1, 2, 1)
    assert "30 days" in _answer(service, "How often does the VPN password rotate?", STAFF)
    assert "garage" not in _answer(service, "Where do visitors park?")
    assert "25th" in _answer(service, "When are salaries paid?", STAFF)
    assert _answer(service, "When are salaries paid?", HR) == ""
    assert "noon" in _answer(service, "When is lunch served?", STAFF)  # no groups column value: public
    assert follower.catch_up().runs == []  # nothing new: no run
    follower.close()


def test_a_changed_id_and_cleared_readers_leave_nothing_readable_behind(make_service, kb):
    service = make_service()
    spec = _spec(kb)
    follower = _follower(service, spec)
    follower.catch_up()
    _sql(kb, "UPDATE articles SET id = 20 WHERE id = 2", "UPDATE articles SET readers = '{}' WHERE id = 1")
    done = follower.catch_up()
    assert (done.counts()["added"], done.counts()["deleted"]) == (1, 1)
    assert service.metadata.find_document(spec.source(), spec.key("2")) is None
    assert service.store.count(doc_id=service.metadata.find_document(spec.source(), spec.key("20")).id) == 1
    assert _answer(service, "How often does the VPN password rotate?", STAFF) == ""  # no readers: admins only
    assert "90 days" in _answer(service, "How often does the VPN password rotate?", ADMIN)
    follower.close()


def test_an_idle_table_lets_its_slot_move_past_other_tables_writes(make_service, kb):
    service = make_service()
    spec = _spec(kb)
    follower = _follower(service, spec)
    follower.catch_up()
    _sql(kb, "CREATE TABLE busy (n integer)", "INSERT INTO busy SELECT generate_series(1, 1000)")
    with psycopg.connect(kb, autocommit=True) as conn:
        after = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        assert follower.catch_up().runs == []
        flushed = conn.execute(
            "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (after, spec.slug()),
        ).fetchone()[0]
    assert flushed  # the server may recycle that WAL: a quiet table does not pin it
    follower.close()


def test_a_crash_between_read_and_write_replays_without_loss_or_duplicates(make_service, kb):
    service = make_service()
    spec = _spec(kb)
    follower = _follower(service, spec)
    follower.catch_up()
    _sql(kb, "UPDATE articles SET body = 'Visitors park for free on level 3 now.' WHERE id = 2")
    real_sink = follower.sink

    def crashing_sink(items, removed, complete):
        raise RuntimeError("killed between the read and the write")

    follower.sink = crashing_sink
    with pytest.raises(RuntimeError):
        follower.catch_up()
    follower.close()

    again = _follower(service, spec)  # a new process: the slot was not advanced
    again.sink = real_sink
    done = again.catch_up()
    assert done.counts()["updated"] == 1
    doc = service.metadata.find_document(spec.source(), spec.key("2"))
    assert service.store.count(doc_id=doc.id) == doc.chunk_count == 1  # the old version's chunk is gone
    assert "level 3" in _answer(service, "Where do visitors park?")
    assert again.catch_up().runs == []  # replayed once, not again
    again.close()


def test_a_row_that_does_not_fit_is_a_dead_letter_naming_the_column(make_service, kb):
    service = make_service()
    follower = _follower(service, _spec(kb))
    follower.catch_up()
    _sql(kb, "INSERT INTO articles (id, title, body) VALUES (9, 'Empty', NULL)")
    done = follower.catch_up()
    assert done.counts()["failed"] == 1
    (dead,) = done.runs[0].dead_letters
    assert dead["path"] == "public.articles/9"
    assert "column 'body'" in dead["reason"] and "string" in dead["reason"]
    assert service.metadata.dead_letters(limit=1)[0].reason == dead["reason"]
    follower.close()


def test_a_dropped_column_stops_the_source_with_an_alert(make_service, kb, tmp_path, monkeypatch):
    home = tmp_path / "cli-home"
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    args = ["rag", "ingest-table", kb, "--table", "articles", "--id", "id", "--text", "body", "--title", "title"]
    args += ["--groups", "readers", "--json"]
    from shared.cli import main

    runner = CliRunner()
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "cdc" and summary["snapshot"] and summary["added"] == 3

    _sql(
        kb,
        "INSERT INTO articles (id, title, body) VALUES (5, 'Before', 'Written before the column went away.')",
        "ALTER TABLE articles DROP COLUMN title",
        "INSERT INTO articles (id, body) VALUES (6, 'Written after the column went away.')",
    )
    stopped = runner.invoke(main, args)
    assert stopped.exit_code == 1
    assert "column 'title' (--title) is missing" in stopped.output and "stopped" in stopped.output

    from shared.config import Settings
    from shared.metadata import MetadataStore
    from shared.monitoring.alert_store import AlertStore

    store = MetadataStore(Settings().resolved_database_url)
    try:
        (alert,) = AlertStore(store).open_alerts("source_schema")
        assert alert.severity == "critical" and "title" in alert.message
        assert store.recent_runs(limit=1)[0].status == "failed"
        assert store.find_document(_spec(kb).source(), "public.articles/6") is None  # nothing indexed silently
    finally:
        store.close()

    # Declared anew without the title: it runs again and the alert is resolved.
    fixed = runner.invoke(main, [a for a in args if a not in {"--title", "title"}])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout.strip().splitlines()[-1])["added"] >= 1
    store = MetadataStore(Settings().resolved_database_url)
    try:
        assert AlertStore(store).open_alerts("source_schema") == []
    finally:
        store.close()


def test_follow_on_the_command_line_streams_until_sigterm_and_drop_retires_the_slot(kb, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path / "home")}
    loopline = str(Path(sys.executable).with_name("loopline"))
    args = [loopline, "rag", "ingest-table", kb, "--table", "articles", "--id", "id", "--text", "body", "--json"]
    proc = subprocess.Popen([*args, "--follow"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())  # the snapshot
        assert first["snapshot"] and first["added"] == 3
        _sql(kb, "INSERT INTO articles (id, title, body) VALUES (8, 'Mail', 'Parcels wait at the front desk.')")
        second = json.loads(proc.stdout.readline())
        assert (second["added"], second["transactions"]) == (1, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    spec = _spec(kb)
    _sql(kb, "DROP TABLE articles")  # a retired table: its slot must still go
    dropped = subprocess.run([*args, "--drop"], env=env, capture_output=True, text=True, timeout=120)
    assert dropped.returncode == 0, dropped.stderr
    with psycopg.connect(kb, autocommit=True) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (spec.slug(),)).fetchone()[0]
            == 0
        )


def test_a_retyped_column_inside_the_stream_stops_before_any_write_and_resumes_once_fixed(make_service, kb):
    service = make_service()
    spec = _spec(kb)
    follower = _follower(service, spec)
    follower.catch_up()
    _sql(
        kb,
        "INSERT INTO articles (id, title, body) VALUES (5, 'Bikes', 'Bicycles go in the courtyard rack.')",
        "ALTER TABLE articles ALTER COLUMN body TYPE integer USING length(body)",
        "INSERT INTO articles (id, title, body) VALUES (6, 'After', 7)",
    )
    with pytest.raises(SchemaChanged, match="'body' .* is integer"):
        follower.catch_up()
    assert service.metadata.find_document(spec.source(), spec.key("5")) is None  # nothing indexed as a number
    assert service.metadata.dead_letters() == []
    assert service.metadata.recent_runs(limit=1)[0].status == "failed"

    _sql(
        kb,
        "ALTER TABLE articles ALTER COLUMN body TYPE text",
        "UPDATE articles SET body = 'Bicycles go in the rack.' WHERE id = 5",
    )
    done = follower.catch_up()  # the slot stayed put: the same changes, read again
    assert done.counts()["added"] == 2
    assert "rack" in _answer(service, "Where do bicycles go?")
    follower.close()


def test_follow_streams_changes_until_stopped(make_service, kb):
    service = make_service()
    follower = _follower(service, _spec(kb), poll_s=0.05)
    stop = threading.Event()
    seen = []
    thread = threading.Thread(target=follower.follow, args=(stop,), kwargs={"on_catch_up": seen.append})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        _sql(
            kb, "INSERT INTO articles (id, title, body) VALUES (7, 'Badges', 'Lost badges are replaced at reception.')"
        )
        while time.monotonic() < deadline and "reception" not in _answer(service, "Where are lost badges replaced?"):
            time.sleep(0.1)
        assert "reception" in _answer(service, "Where are lost badges replaced?")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    follower.close()


def test_without_logical_replication_it_polls_the_updated_at_column(make_service, postgres_url):
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    _articles(dsn)
    service = make_service()
    follower = _follower(service, _spec(dsn))  # the machine's server: wal_level=replica
    assert follower.mode == "poll"
    assert follower.catch_up().counts()["added"] == 3
    _sql(dsn, "UPDATE articles SET body = 'Visitors park on level 4.', updated_at = now() WHERE id = 2")
    done = follower.catch_up()
    assert (done.counts()["updated"], done.counts()["unchanged"]) == (1, 0)
    assert "level 4" in _answer(service, "Where do visitors park?")
    assert follower.catch_up().runs == []  # the overlap window re-reads nothing it already holds
    _sql(dsn, "DELETE FROM articles WHERE id = 2")
    follower.catch_up()
    assert "level 4" in _answer(service, "Where do visitors park?")  # polling does not see deletes (documented)
    assert follower.catch_up(snapshot=True).counts()["deleted"] == 1  # a snapshot does
    assert "level 4" not in _answer(service, "Where do visitors park?")
    follower.close()
    with pytest.raises(TableSourceError, match="wal_level"):
        TableFollower(_spec(dsn), service.metadata, lambda *a: None, mode="cdc").open()
    with pytest.raises(TableSourceError, match="--updated-at"):
        TableFollower(_spec(dsn, updated_at=None), service.metadata, lambda *a: None).open()


def test_polling_a_naive_timestamp_column_east_of_utc_misses_nothing(make_service, postgres_url, monkeypatch):
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # the session's time zone, 9 hours east of UTC
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    _sql(
        dsn,
        "CREATE TABLE notes (id integer PRIMARY KEY, body text, changed timestamp NOT NULL DEFAULT localtimestamp)",
        "INSERT INTO notes (id, body) VALUES (1, 'The library closes at six.')",
    )
    service = make_service()
    spec = TableSpec(dsn=dsn, table="notes", id="id", text="body", updated_at="changed")
    follower = _follower(service, spec)
    assert follower.mode == "poll"
    follower.catch_up()
    _sql(dsn, "UPDATE notes SET body = 'The library closes at nine.', changed = localtimestamp WHERE id = 1")
    assert follower.catch_up().counts()["updated"] == 1
    assert "nine" in _answer(service, "When does the library close?")
    follower.close()


def test_an_updated_at_column_that_is_not_a_timestamp_is_refused(make_service, postgres_url):
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    _sql(dsn, "CREATE TABLE notes (id integer PRIMARY KEY, body text, changed time)")
    service = make_service()
    with pytest.raises(SchemaChanged, match="'changed' .* is time without time zone"):
        _follower(service, TableSpec(dsn=dsn, table="notes", id="id", text="body", updated_at="changed"))


def test_a_view_is_a_query_as_a_source_read_by_polling(make_service, kb):
    _sql(
        kb,
        "CREATE TABLE teams (id integer PRIMARY KEY, name text)",
        "INSERT INTO teams VALUES (1, 'Facilities')",
        "CREATE VIEW answers AS SELECT a.id, t.name || ': ' || a.body AS body, a.readers, a.updated_at "
        "FROM articles a JOIN teams t ON t.id = 1",
    )
    service = make_service()
    spec = TableSpec(dsn=kb, table="answers", id="id", text="body", groups="readers", updated_at="updated_at")
    follower = _follower(service, spec)  # wal_level=logical here, but a view has nothing to publish
    assert follower.mode == "poll"
    assert follower.catch_up().counts()["added"] == 3
    assert "Facilities: Visitors park" in _answer(service, "Where do visitors park?")
    follower.close()


def test_cdc_refuses_a_table_whose_deletes_would_not_name_the_id(make_service, cluster):
    dsn = _database(cluster)
    _sql(dsn, "CREATE TABLE notes (id integer, body text)")
    service = make_service()
    with pytest.raises(TableSourceError, match="primary key"):
        TableFollower(TableSpec(dsn=dsn, table="notes", id="id", text="body"), service.metadata, lambda *a: None).open()


def test_the_source_name_never_holds_credentials():
    spec = TableSpec(dsn="postgresql://app:s3cret@db.internal:6543/wiki", table="kb.pages", id="id", text="body")
    assert spec.source() == "table:db.internal:6543/wiki/kb.pages"
    assert "s3cret" not in spec.source() and "app" not in spec.source()
    with pytest.raises(TableSourceError):
        TableSpec(dsn="", table="pages; drop table x", id="id", text="body")
