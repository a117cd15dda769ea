"""Tables followed by `loopline serve` (LOOPLINE_TABLE_SOURCES_FILE): live changes, an outage, a schema change."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

import rag.api
from evaluation.benchmarks.pg_cluster import LogicalCluster
from rag.table_sources import FollowedTables, TableSourceConfig, load_table_sources
from shared.auth import Principal
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.alerts import AlertManager
from shared.server import create_app

ADMIN = Principal(name="root", admin=True)


@pytest.fixture
def kb(pg: LogicalCluster) -> str:
    name = f"kb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg.dsn.replace("dbname=postgres", f"dbname={name}")
    _sql(dsn, "CREATE TABLE faq (id text PRIMARY KEY, question text, answer text)")
    _sql(dsn, "INSERT INTO faq VALUES ('wifi', 'Wi-Fi', 'The guest Wi-Fi password is printed at reception.')")
    return dsn


def _sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _says(service, question: str, words: str) -> Callable[[], bool]:
    return lambda: words in service.ask(question, ADMIN).answer


def _config(**over) -> TableSourceConfig:
    return TableSourceConfig(
        **{"dsn_env": "FAQ_DSN", "table": "faq", "id": "id", "text": "answer", "title": "question", **over}
    )


def test_a_followed_table_survives_an_outage_of_its_database(make_service, kb, pg, monkeypatch):
    monkeypatch.setenv("FAQ_DSN", kb)
    service = make_service()
    tables = FollowedTables([_config(interval_s=0.1)], service, AlertManager(service.metadata))
    tables.start()
    try:
        assert _eventually(_says(service, "Where is the guest Wi-Fi password?", "reception"))
        pg.stop()
        assert _eventually(lambda: tables.states["faq"].startswith("retrying"), timeout=20)
        pg.start()
        _sql(
            kb, "UPDATE faq SET answer = 'The guest Wi-Fi password is on the badge of each visitor.' WHERE id = 'wifi'"
        )
        assert _eventually(_says(service, "Where is the guest Wi-Fi password?", "badge"), timeout=60)
        assert tables.states["faq"] == "following"
    finally:
        tables.stop()


def test_a_followed_table_whose_column_goes_away_stops_with_an_alert(make_service, kb, monkeypatch):
    monkeypatch.setenv("FAQ_DSN", kb)
    service = make_service()
    tables = FollowedTables([_config(interval_s=0.1)], service, AlertManager(service.metadata))
    tables.start()
    try:
        assert _eventually(_says(service, "Where is the guest Wi-Fi password?", "reception"))
        _sql(kb, "ALTER TABLE faq RENAME COLUMN answer TO reply", "INSERT INTO faq VALUES ('bike', 'Bikes', 'Racks.')")
        assert _eventually(lambda: tables.states["faq"].startswith("stopped"))
        assert "column 'answer' (--text) is missing" in tables.states["faq"]
        (alert,) = AlertStore(service.metadata).open_alerts("source_schema")
        assert alert.severity == "critical" and alert.key.endswith("/public.faq")
    finally:
        tables.stop()


def test_serve_follows_the_tables_of_its_sources_file(make_service, kb, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FAQ_DSN", kb)
    sources = tmp_path / "tables.yaml"
    sources.write_text("tables:\n  - {dsn_env: FAQ_DSN, table: faq, id: id, text: answer, title: question}\n")
    service = make_service(table_sources_file=sources)
    app = create_app(service.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=service)])
    with TestClient(app) as client:
        assert _eventually(_says(service, "Where is the guest Wi-Fi password?", "reception"))
        ready = client.get("/readyz").json()
        assert ready["rag"]["tables"] == {"faq": "following"}


def test_a_sources_file_that_does_not_fit_says_where(tmp_path: Path):
    bad = tmp_path / "tables.yaml"
    bad.write_text("tables:\n  - {dsn: x, dsn_env: Y, table: faq, id: id, text: answer}\n")
    with pytest.raises(ValueError, match="exactly one of dsn and dsn_env"):
        load_table_sources(bad)
    bad.write_text("tables:\n  - {dsn: x, table: faq, id: id, text: answer, colour: blue}\n")
    with pytest.raises(ValueError, match="colour"):
        load_table_sources(bad)
