"""What the Q&A API reports at `/metrics`: answers by mode, abstentions, ingest runs and documents.

Real requests through the real app (embedded stores, the bundled embedding model) on a tiny
folder of documents; each expectation is read from the response or the run records the API
itself shows (`GET /v1/runs`), then found as a change on the scraped page.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import rag.api
from shared.auth import KeyRegistry, UserEntry
from shared.server import create_app

ADMIN = {"X-API-Key": "test-key-root-0123456789"}
READER = {"X-API-Key": "test-key-ada-0123456789"}
DOCS = {
    "vacation.md": "# Vacation\n\nEvery employee gets 27 vacation days per calendar year. "
    "Unused vacation days carry over until the end of March.\n",
    "laptops.md": "# Laptops\n\nEngineers receive a new laptop every three years. "
    "Broken laptops are replaced by the IT desk within two working days.\n",
}


def samples(page: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(page) for s in f.samples
    }


class Scraper:
    """Reads /metrics and tells how much a sample moved since the last look."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.last = self.read()

    def read(self) -> dict[tuple[str, frozenset], float]:
        r = self.client.get("/metrics")
        assert r.status_code == 200
        return samples(r.text)

    def moved(self) -> dict[tuple[str, frozenset], float]:
        now = self.read()
        delta = {k: v - self.last.get(k, 0.0) for k, v in now.items() if v != self.last.get(k, 0.0)}
        self.last = now
        return delta


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


@pytest.fixture
def api(make_service, tmp_path: Path):
    folder = tmp_path / "policies"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    svc = make_service(sync_folder=folder, ingest_roots=str(tmp_path))
    keys = KeyRegistry(
        [
            UserEntry(name="root", key=ADMIN["X-API-Key"], groups=[], admin=True),
            UserEntry(name="ada", key=READER["X-API-Key"], groups=["engineering"], admin=False),
        ]
    )
    app = create_app(svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys)
    with TestClient(app) as client:
        yield client, folder


def last_run(client: TestClient) -> dict:
    return client.get("/v1/runs?limit=1", headers=ADMIN).json()[0]


def test_ingests_through_the_api_are_counted_by_kind_status_and_outcome(api) -> None:
    client, folder = api
    m = Scraper(client)

    r = client.post("/v1/sync?wait=true", headers=ADMIN)
    assert r.status_code == 202
    run = last_run(client)
    assert (run["kind"], run["added"]) == ("sync", 2)
    moved = m.moved()
    assert moved[key("loopline_ingest_runs_total", kind="sync", status=run["status"])] == 1
    assert moved[key("loopline_ingest_documents_total", kind="sync", outcome="added")] == 2
    assert moved[key("loopline_ingest_duration_seconds_count", kind="sync")] == 1
    assert moved[key("loopline_ingest_duration_seconds_sum", kind="sync")] == pytest.approx(
        r.json()["run"]["seconds"], abs=1e-3
    )

    (folder / "vacation.md").write_text(DOCS["vacation.md"].replace("27", "30"))
    (folder / "laptops.md").unlink()
    assert (
        client.post(
            "/v1/admin/ingest?wait=true", headers=ADMIN, json={"path": str(folder), "groups": ["public"]}
        ).status_code
        == 200
    )
    run = last_run(client)
    moved = m.moved()
    assert moved[key("loopline_ingest_runs_total", kind="ingest", status=run["status"])] == 1
    for outcome in ("updated", "deleted"):
        assert run[outcome] == 1
        assert moved[key("loopline_ingest_documents_total", kind="ingest", outcome=outcome)] == 1

    ok = client.post(
        "/v1/documents",
        headers=ADMIN,
        files={"file": ("travel.md", b"# Travel\n\nBook trains for trips under 600 km.\n")},
    )
    bad = client.post("/v1/documents", headers=ADMIN, files={"file": ("broken.pdf", b"%PDF-1.4 garbage")})
    assert (ok.status_code, bad.status_code) == (201, 422)
    statuses = [r["status"] for r in client.get("/v1/runs?limit=2", headers=ADMIN).json()]
    moved = m.moved()
    assert (
        sum(
            v
            for (name, labels), v in moved.items()
            if name == "loopline_ingest_runs_total" and ("kind", "upload") in labels
        )
        == 2
    )
    for status in set(statuses):
        assert moved[key("loopline_ingest_runs_total", kind="upload", status=status)] == statuses.count(status)
    assert moved[key("loopline_ingest_documents_total", kind="upload", outcome="added")] == 1
    assert moved[key("loopline_ingest_documents_total", kind="upload", outcome="failed")] == 1
    # A refused upload (not admin) starts no run at all.
    assert client.post("/v1/documents", headers=READER, files={"file": ("x.md", b"# x\n")}).status_code == 403
    assert not [k for k in m.moved() if k[0].startswith("loopline_ingest")]


def test_answers_by_mode_and_abstentions(api) -> None:
    client, _ = api
    assert client.post("/v1/sync?wait=true", headers=ADMIN).status_code == 202
    m = Scraper(client)

    answered = client.post(
        "/v1/query", headers=READER, json={"question": "How many vacation days do I get per year?"}
    ).json()
    assert (answered["mode"], answered["abstained"]) == ("extractive", False)
    moved = m.moved()
    assert moved[key("loopline_answers_total", mode="extractive")] == 1
    assert key("loopline_abstentions_total") not in moved

    declined = client.post(
        "/v1/query", headers=READER, json={"question": "What is the airspeed velocity of an unladen swallow?"}
    ).json()
    assert declined["abstained"] is True
    moved = m.moved()
    assert moved[key("loopline_answers_total", mode="extractive")] == 1
    assert moved[key("loopline_abstentions_total")] == 1

    with client.stream(
        "POST", "/v1/query/stream", headers=READER, json={"question": "When are broken laptops replaced?"}
    ) as r:
        body = "".join(r.iter_text())
    assert "event: done" in body
    assert m.moved()[key("loopline_answers_total", mode="extractive")] == 1

    # Refused and invalid queries are requests, not answers; their latency is still recorded.
    assert client.post("/v1/query", json={"question": "vacation?"}).status_code == 401
    assert client.post("/v1/query", headers=READER, json={"question": ""}).status_code == 422
    moved = m.moved()
    assert not [k for k in moved if k[0] in ("loopline_answers_total", "loopline_abstentions_total")]
    count = "loopline_http_request_duration_seconds_count"
    assert moved[key(count, method="POST", route="/v1/query", status="401")] == 1
    assert moved[key(count, method="POST", route="/v1/query", status="422")] == 1
    # Questions never reach a label.
    page = client.get("/metrics").text
    assert "swallow" not in page and "vacation" not in page


def test_the_route_label_is_the_template(api) -> None:
    client, _ = api
    assert client.post("/v1/sync?wait=true", headers=ADMIN).status_code == 202
    m = Scraper(client)
    docs = client.get("/v1/documents", headers=ADMIN).json()
    for d in docs:
        assert client.get(f"/v1/documents/{d['id']}", headers=ADMIN).status_code == 200
    assert client.get("/v1/documents/not-a-document", headers=ADMIN).status_code == 404
    moved = m.moved()
    count = "loopline_http_request_duration_seconds_count"
    assert moved[key(count, method="GET", route="/v1/documents/{doc_id}", status="200")] == len(docs) == 2
    assert moved[key(count, method="GET", route="/v1/documents/{doc_id}", status="404")] == 1
    assert not [labels for (name, labels) in moved if any(d["id"] in str(labels) for d in docs)]
