"""`GET /metrics` as Prometheus scrapes it: request latency by route template and status.

A tiny plugin stands in for a vertical (shared/ knows no vertical): one route with a path
parameter behind the API key, one that fails. The page is parsed with prometheus_client's
own parser, never matched as text, and values are compared before and after real requests.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends, HTTPException
from fastapi.testclient import TestClient
from live_server import serve_in_thread
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from shared.auth import KeyRegistry, Principal, UserEntry
from shared.config import Settings
from shared.dependencies import require_user
from shared.metadata.store import MetadataStore
from shared.metrics import OTHER, UNMATCHED_ROUTE, ServiceMetrics
from shared.server import ApiPlugin, AppContext, create_app

KEY = "test-key-ada-0123456789"
DURATION = "loopline_http_request_duration_seconds"


def items_plugin(ctx: AppContext) -> ApiPlugin:
    router = APIRouter(prefix="/v1")

    @router.get("/items/{item_id}")
    def item(item_id: str, who: Principal = Depends(require_user)) -> dict:
        if item_id == "missing":
            raise HTTPException(404, detail="no such item")
        return {"id": item_id, "user": who.name}

    @router.get("/boom")
    def boom() -> dict:
        raise RuntimeError("a bug in a handler")

    return ApiPlugin(name="items", router=router)


def make_app(tmp_path: Path, **kw):
    settings = Settings(home=tmp_path / "home", **kw.pop("settings", {}))
    keys = KeyRegistry([UserEntry(name="ada", key=KEY, groups=[], admin=False)])
    return create_app(settings, plugins=[items_plugin], keys=keys, **kw)


def samples(page: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of a Prometheus text page."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(page)
        for s in fam.samples
    }


def value(page: str, name: str, **labels: str) -> float:
    return samples(page).get((name, frozenset(labels.items())), 0.0)


def scrape(client: TestClient) -> str:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def test_requests_are_counted_by_route_template_and_status(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path), raise_server_exceptions=False) as client:
        before = scrape(client)
        assert client.get("/v1/items/a1", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/v1/items/b2", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/v1/items/c3").status_code == 401
        assert client.get("/v1/items/missing", headers={"X-API-Key": KEY}).status_code == 404
        assert client.get("/v1/boom").status_code == 500
        assert client.get("/no/such/path-with-secret-42").status_code == 404
        after = scrape(client)

    def moved(route: str, status: str) -> float:
        labels = {"method": "GET", "route": route, "status": status}
        return value(after, f"{DURATION}_count", **labels) - value(before, f"{DURATION}_count", **labels)

    assert moved("/v1/items/{item_id}", "200") == 2
    assert moved("/v1/items/{item_id}", "401") == 1
    assert moved("/v1/items/{item_id}", "404") == 1
    assert moved("/v1/boom", "500") == 1
    assert moved(UNMATCHED_ROUTE, "404") == 1
    # Raw paths never become labels: neither the ids nor the unknown path appear.
    for raw in ("a1", "b2", "c3", "path-with-secret-42"):
        assert raw not in after
    ok = {"method": "GET", "route": "/v1/items/{item_id}", "status": "200"}
    assert value(after, f"{DURATION}_sum", **ok) > 0
    assert value(after, f"{DURATION}_bucket", **ok, le="+Inf") == value(after, f"{DURATION}_count", **ok)


def test_two_apps_in_one_process_keep_their_own_counts(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path / "a")) as a, TestClient(make_app(tmp_path / "b")) as b:
        for _ in range(3):
            a.get("/v1/items/x", headers={"X-API-Key": KEY})
        labels = {"method": "GET", "route": "/v1/items/{item_id}", "status": "200"}
        assert value(scrape(a), f"{DURATION}_count", **labels) == 3
        assert value(scrape(b), f"{DURATION}_count", **labels) == 0


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    app = make_app(tmp_path, metrics=False)
    assert app.state.ctx.metrics.enabled is False
    with TestClient(app) as client:
        assert client.get("/v1/items/x", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/metrics").status_code == 404
    switched_by_setting = make_app(tmp_path, settings={"metrics_enabled": False})
    with TestClient(switched_by_setting) as client:
        assert client.get("/metrics").status_code == 404


def test_a_metrics_token_protects_the_page(tmp_path: Path) -> None:
    app = make_app(tmp_path, settings={"metrics_token": "scrape-token-0123456789"})
    with TestClient(app) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401 and "LOOPLINE_METRICS_TOKEN" in refused.json()["detail"]
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 401  # an API key is not enough
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})
        assert ok.status_code == 200
        assert value(ok.text, f"{DURATION}_count", method="GET", route="/metrics", status="401") == 3


def test_scraped_over_http_from_a_real_server(tmp_path: Path) -> None:
    with serve_in_thread(make_app(tmp_path)) as url, httpx.Client(base_url=url) as http:
        for _ in range(4):
            assert http.get("/v1/items/q", headers={"X-API-Key": KEY}).status_code == 200
        assert http.get("/healthz").status_code == 200
        page = http.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"] == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(page.text)}
    assert families[DURATION].type == "histogram"
    assert value(page.text, f"{DURATION}_count", method="GET", route="/v1/items/{item_id}", status="200") == 4
    assert value(page.text, f"{DURATION}_count", method="GET", route="/healthz", status="200") == 1
    # The counters the verticals fill are on the page from the start, at zero.
    assert value(page.text, "loopline_answers_total", mode="extractive") == 0
    assert value(page.text, "loopline_abstentions_total") == 0


def test_a_scrape_survives_a_monitoring_store_that_fails(tmp_path: Path) -> None:
    """Drift and freshness come from the database at scrape time; if reading it fails, the rest still shows."""
    import sqlite3

    app = make_app(tmp_path)
    db = tmp_path / "home" / "metadata.db"
    with TestClient(app) as client:
        client.get("/healthz")
        with sqlite3.connect(db) as conn:  # the tables the scrape reads are gone under the running service
            for table in ("ingest_runs", "drift_buckets", "drift_references"):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        page = scrape(client)
        assert scrape(client)  # and again: a failed read is retried, not cached as broken
    assert value(page, f"{DURATION}_count", method="GET", route="/healthz", status="200") == 1
    names = {f.name for f in text_string_to_metric_families(page)}
    assert {"loopline_drift_psi", "loopline_source_freshness_age_seconds"} <= names


def scrape_metrics_of(url: str, now: float) -> str:
    metrics = ServiceMetrics(store=lambda: MetadataStore(url), clock=lambda: now)
    try:
        return metrics.exposition().decode()
    finally:
        metrics.close()


def test_freshness_age_per_source_is_read_at_scrape_time(tmp_path: Path) -> None:

    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    store = MetadataStore(url)
    store.finish_run(store.start_run("folder:/docs", kind="sync"), status="succeeded")
    store.finish_run(store.start_run("folder:/wiki", kind="ingest"), status="succeeded")
    store.finish_run(store.start_run("folder:/wiki", kind="ingest"), status="failed", error="disk gone")
    finished = {r.source: r.finished_at for r in store.recent_runs() if r.status == "succeeded"}
    store.close()
    now = 1_900_000_000.0  # a fixed clock, well after the runs
    page = scrape_metrics_of(url, now)
    for source, at in finished.items():
        expected = now - at.replace(tzinfo=at.tzinfo or UTC).timestamp()
        assert value(page, "loopline_source_freshness_age_seconds", source=source) == pytest.approx(expected, abs=1e-3)
    # Scraped later, the same sources are older by exactly the time that passed.
    later = scrape_metrics_of(url, now + 3600)
    assert value(later, "loopline_source_freshness_age_seconds", source="folder:/docs") == pytest.approx(
        value(page, "loopline_source_freshness_age_seconds", source="folder:/docs") + 3600
    )


def test_drift_psi_per_stream_and_feature_is_read_at_scrape_time(tmp_path: Path) -> None:
    drift = pytest.importorskip("shared.monitoring.drift", reason="drift monitor not built yet")
    import random

    url = f"sqlite:///{tmp_path / 'metadata.db'}"
    store = MetadataStore(url)
    clock = [1_900_000_000.0]
    monitor = drift.DriftMonitor(store, clock=lambda: clock[0])
    rng = random.Random(7)
    monitor.record("vision:line-1", "brightness", [rng.gauss(100, 10) for _ in range(800)])
    assert monitor.freeze_reference("vision:line-1", label="v1")
    clock[0] += 3 * 24 * 3600  # days later, the frames are brighter
    monitor.record("vision:line-1", "brightness", [rng.gauss(130, 10) for _ in range(800)])
    expected = {(s.stream, s.feature): s.psi for s in monitor.status() if s.psi is not None}
    store.close()
    assert expected, "a shifted stream with a reference has a PSI"
    page = scrape_metrics_of(url, clock[0])
    for (stream, feature), psi in expected.items():
        assert value(page, "loopline_drift_psi", stream=stream, feature=feature) == pytest.approx(psi)
    assert value(page, "loopline_drift_psi", stream="vision:line-1", feature="brightness") > 0.25  # a 3-sigma shift


def test_device_supplied_labels_are_bounded() -> None:
    metrics = ServiceMetrics(max_label_values=2)
    for reason in ("uncertain", "rare-class", "third_rule", "uncertain", "bad label with spaces", None):
        metrics.record_frame("cam-01", "line-1", reason, None)
    page = metrics.exposition().decode()
    frames = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples(page).items()
        if name == "loopline_frames_received_total"
    }
    # Two distinct reasons are kept; the third and the malformed one fold into "other".
    assert frames == {"uncertain": 2, "rare-class": 1, OTHER: 2, "none": 1}


def test_the_model_in_use_is_the_last_one_reported_per_fleet() -> None:
    metrics = ServiceMetrics()
    metrics.record_frame("cam-01", "line-1", "uncertain", "3")
    metrics.record_frame("cam-02", "line-2", "uncertain", "3")
    metrics.record_frame("cam-01", "line-1", "uncertain", "4")
    in_use = {
        (dict(labels)["fleet"], dict(labels)["version"]): v
        for (name, labels), v in samples(metrics.exposition().decode()).items()
        if name == "loopline_model_version_in_use"
    }
    assert in_use == {("line-1", "4"): 1, ("line-2", "3"): 1}
