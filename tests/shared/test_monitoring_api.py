"""The monitoring API: admins only, the same status as the CLI, checks on demand and in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import shared.monitoring.api
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.server import create_app
from tests.helpers.run_records import record_run

ADMIN = {"X-API-Key": "key-of-the-ops-admin"}
USER = {"X-API-Key": "key-of-ada-engineer"}


def keys() -> KeyRegistry:
    return KeyRegistry(
        [
            UserEntry(name="ops", key=ADMIN["X-API-Key"], admin=True),
            UserEntry(name="ada", key=USER["X-API-Key"], groups=["engineering"]),
        ]
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    st = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
    record_run(st, "folder:/srv/wiki", kind="sync", status="failed", error="OSError: share unmounted")
    record_run(st, "folder:/srv/handbook", kind="sync", hours_ago=3)
    yield st
    st.close()


def app_for(store: MetadataStore, tmp_path: Path, interval_s: float = 0):
    settings = Settings(home=tmp_path / "home")

    def plugin(ctx):  # noqa: ANN001, ANN202
        return shared.monitoring.api.plugin(ctx, interval_s=interval_s)

    return create_app(settings, plugins=[plugin], keys=keys(), metadata=store)


def test_status_is_for_admins_only(store: MetadataStore, tmp_path: Path) -> None:
    client = TestClient(app_for(store, tmp_path))
    assert client.get("/v1/monitoring/status").status_code == 401
    assert client.get("/v1/monitoring/status", headers={"X-API-Key": "wrong-key-123"}).status_code == 401
    denied = client.get("/v1/monitoring/status", headers=USER)
    assert denied.status_code == 403 and "not an admin" in denied.json()["detail"]
    assert client.post("/v1/monitoring/check", headers=USER).status_code == 403

    shown = client.get("/v1/monitoring/status", headers=ADMIN)
    assert shown.status_code == 200
    body = shown.json()
    assert {"drift", "freshness", "recent_runs", "alerts"} <= set(body)
    assert [r["source"] for r in body["recent_runs"]] == ["folder:/srv/handbook", "folder:/srv/wiki"]
    assert body["alerts"] == []  # nothing checked yet: reading never raises


def test_an_admin_runs_the_checks_and_sees_the_alerts(store: MetadataStore, tmp_path: Path) -> None:
    client = TestClient(app_for(store, tmp_path))
    checked = client.post("/v1/monitoring/check", headers=ADMIN).json()
    assert [(a["kind"], a["key"]) for a in checked["raised"]] == [("run_failed", "folder:/srv/wiki")]

    alerts = client.get("/v1/monitoring/status", headers=ADMIN).json()["alerts"]
    assert [(a["kind"], a["severity"]) for a in alerts] == [("run_failed", "critical")]
    assert "share unmounted" in alerts[0]["message"]


def test_background_checks_run_on_their_own_and_stop_with_the_app(store: MetadataStore, tmp_path: Path) -> None:
    app = app_for(store, tmp_path, interval_s=0.05)
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            alerts = client.get("/v1/monitoring/status", headers=ADMIN).json()["alerts"]
            if alerts:
                break
            time.sleep(0.05)
        assert [a["key"] for a in alerts] == ["folder:/srv/wiki"]  # nobody asked: the thread checked
        assert client.get("/readyz").json()["monitoring"]["background_checks"] is True
    plugin = app.state.ctx.plugins[0]
    assert plugin.ready()["background_checks"] is False  # shut down with the app


def test_background_checks_are_off_when_the_interval_is_zero(store: MetadataStore, tmp_path: Path) -> None:
    with TestClient(app_for(store, tmp_path, interval_s=0)) as client:
        time.sleep(0.2)
        assert client.get("/v1/monitoring/status", headers=ADMIN).json()["alerts"] == []
        assert client.get("/readyz").json()["monitoring"]["background_checks"] is False
