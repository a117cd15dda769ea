"""The composition root: one `loopline serve` process opens its metadata database once.

Before, the rag plugin, the vision plugin, the monitoring plugin and the metrics collector
each opened their own store (four engines on one database). The app built with every
installed plugin is exercised through each of them here, and the engines on the metadata
database are counted.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

ADMIN = {"X-API-Key": "root-key-0123456789"}


def engines_on(url: str) -> set[int]:
    gc.collect()
    return {id(o) for o in gc.get_objects() if type(o) is Engine and str(o.url) == url}


@pytest.mark.slow
def test_one_metadata_engine_serves_every_plugin(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", monitor_interval_s=0)
    url = settings.resolved_database_url
    app = create_app(settings, keys=KeyRegistry([UserEntry(name="root", key=ADMIN["X-API-Key"], admin=True)]))
    ctx = app.state.ctx
    assert {p.name for p in ctx.plugins} >= {"rag", "vision", "monitoring"}
    with TestClient(app) as client:
        assert ctx.services["rag"].warmup.wait(120)  # the embedding model loads in the background at start
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.post("/v1/query", json={"question": "Anything?"}, headers=ADMIN).status_code == 200
        assert client.post("/v1/feedback", json={"question": "q", "rating": 1}, headers=ADMIN).status_code == 201
        assert client.get("/v1/sources", headers=ADMIN).status_code == 200
        assert client.post("/v1/monitoring/check", headers=ADMIN).status_code == 200
        assert client.get("/v1/monitoring/status", headers=ADMIN).status_code == 200
        assert client.get("/metrics").status_code == 200
        assert engines_on(url) == {id(ctx.metadata.engine)}
    assert ctx.services["rag"].service.metadata is ctx.metadata
    assert ctx.services["vision"].drift.monitor is ctx.drift
    assert ctx.services["monitoring"].monitor.store is ctx.metadata
    assert ctx.services["monitoring"].monitor.drift.__self__ is ctx.drift  # one drift monitor, not one per check


def test_auth_is_declared_once(tmp_path: Path) -> None:
    """Every router takes the caller from shared.dependencies: a key works the same everywhere."""
    settings = Settings(home=tmp_path / "home", monitor_interval_s=0)
    keys = KeyRegistry([UserEntry(name="ada", key="ada-key-0123456789", groups=["eng"])])
    with TestClient(create_app(settings, keys=keys)) as client:
        for method, path in (("get", "/v1/documents"), ("get", "/v1/sources"), ("get", "/v1/monitoring/status")):
            for headers in ({"X-API-Key": "ada-key-0123456789"}, {"Authorization": "Bearer ada-key-0123456789"}):
                r = client.request(method.upper(), path, headers=headers)
                assert r.status_code in (200, 403), (path, r.status_code)
            r = client.request(method.upper(), path, headers={"X-API-Key": "wrong-key-0123456789"})
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.get("/v1/devices/me", headers={"Authorization": "Bearer ada-key-0123456789"})
        assert r.status_code == 401  # a user's key is no device token
