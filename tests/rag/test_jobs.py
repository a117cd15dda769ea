"""Long work as jobs through the API (in process, the embedded default): submit, follow, resume."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import rag.api
import shared.jobs.api
from shared.auth import PUBLIC_GROUP, KeyRegistry, UserEntry
from shared.server import create_app

ADMIN = {"X-API-Key": "test-key-root-0123456789"}
ADA = {"X-API-Key": "test-key-ada-0123456789"}


def keys() -> KeyRegistry:
    return KeyRegistry(
        [
            UserEntry(name="root", key=ADMIN["X-API-Key"], groups=[], admin=True),
            UserEntry(name="ada", key=ADA["X-API-Key"], groups=["engineering"], admin=False),
        ]
    )


def app_for(svc):  # noqa: ANN001, ANN201
    return create_app(
        svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc), shared.jobs.api.plugin], keys=keys()
    )


def write_docs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"note-{i:02d}.md").write_text(
            f"# Note {i}\n\nRoom {100 + i} in the Lisbon office holds the {i}th robot prototype of the lab.\n"
        )
    return folder


def wait_for(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not end: {job}")


def test_an_ingest_job_answers_at_once_and_reports_its_run(make_service, tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "drive" / "notes", 6)
    svc = make_service(home=tmp_path / "home", ingest_roots=str(tmp_path / "drive"))
    client = TestClient(app_for(svc))

    r = client.post(
        "/v1/jobs", headers=ADMIN, json={"kind": "rag.ingest", "params": {"path": str(docs), "groups": ["engineering"]}}
    )
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["kind"] == "rag.ingest" and queued["owner"] == "root" and queued["state"] in ("queued", "running")

    job = wait_for(client, queued["job_id"])
    assert job["state"] == "succeeded", job
    assert job["result"]["run"]["added"] == 6 and job["result"]["run"]["status"] == "succeeded"
    assert job["progress"]["done"] == job["progress"]["total"] == 6
    assert job["attempts"] == 1 and [h["outcome"] for h in job["history"]] == ["succeeded"]
    assert len(client.get("/v1/documents", headers=ADA).json()) == 6
    assert [j["job_id"] for j in client.get("/v1/jobs", headers=ADMIN).json()] == [queued["job_id"]]
    assert [j["job_id"] for j in client.get("/v1/jobs?state=failed", headers=ADMIN).json()] == []

    # jobs are for admins: their parameters name server paths, their results every source
    for method, url, body in (
        ("get", f"/v1/jobs/{queued['job_id']}", None),
        ("get", "/v1/jobs", None),
        ("get", "/v1/jobs/kinds", None),
        ("post", "/v1/jobs", {"kind": "rag.sync", "params": {}}),
    ):
        assert client.request(method, url, headers=ADA, json=body).status_code == 403
    assert client.get(f"/v1/jobs/{queued['job_id']}").status_code == 401
    assert client.get("/v1/jobs/nope", headers=ADMIN).status_code == 404


def test_admin_ingest_is_a_job_unless_the_caller_waits(make_service, tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "drive" / "notes", 2)
    svc = make_service(home=tmp_path / "home", ingest_roots=str(tmp_path / "drive"))
    client = TestClient(app_for(svc))
    r = client.post("/v1/admin/ingest", headers=ADMIN, json={"path": str(docs), "groups": [PUBLIC_GROUP]})
    assert r.status_code == 202 and r.json()["kind"] == "rag.ingest"
    assert wait_for(client, r.json()["job_id"])["result"]["run"]["added"] == 2
    r = client.post("/v1/admin/ingest?wait=true", headers=ADMIN, json={"path": str(docs), "groups": [PUBLIC_GROUP]})
    assert r.status_code == 200 and r.json()["unchanged"] == 2


def test_bad_jobs_are_refused_with_the_reason_and_nothing_is_queued(make_service, tmp_path: Path) -> None:
    write_docs(tmp_path / "drive" / "notes", 1)
    (tmp_path / "elsewhere").mkdir()
    svc = make_service(home=tmp_path / "home", ingest_roots=str(tmp_path / "drive"))
    client = TestClient(app_for(svc))

    r = client.post("/v1/jobs", headers=ADMIN, json={"kind": "rag.reindex-everything", "params": {}})
    assert r.status_code == 422 and "rag.ingest" in r.json()["detail"]  # the known kinds are named
    r = client.post("/v1/jobs", headers=ADMIN, json={"kind": "rag.ingest", "params": {"path": str(tmp_path / "drive")}})
    assert r.status_code == 422 and "groups" in r.json()["detail"]
    r = client.post(
        "/v1/jobs",
        headers=ADMIN,
        json={"kind": "rag.ingest", "params": {"path": str(tmp_path / "elsewhere"), "groups": ["x"]}},
    )
    assert r.status_code == 403 and "LOOPLINE_INGEST_ROOTS" in r.json()["detail"]
    r = client.post(
        "/v1/jobs",
        headers=ADMIN,
        json={"kind": "rag.ingest", "params": {"path": str(svc.settings.home), "groups": ["x"]}},
    )
    assert r.status_code == 403  # never the service's own home
    assert client.get("/v1/jobs", headers=ADMIN).json() == []

    kinds = {k["kind"]: k for k in client.get("/v1/jobs/kinds", headers=ADMIN).json()}
    assert {"rag.ingest", "rag.sync"} <= set(kinds)
    assert "groups" in kinds["rag.ingest"]["params_schema"]["properties"]


def test_a_job_left_by_a_stopped_process_runs_at_the_next_start(make_service, tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "drive" / "notes", 3)
    svc = make_service(home=tmp_path / "home", ingest_roots=str(tmp_path / "drive"))
    first = app_for(svc)
    # the process recorded the job, then stopped before running it (a crash, a deploy)
    left = first.state.ctx.jobs.store.create(
        "rag.ingest", {"path": str(docs), "groups": ["public"]}, queue="default", owner="root"
    )
    first.state.ctx.close()
    svc.close()

    restarted = make_service(home=tmp_path / "home", ingest_roots=str(tmp_path / "drive"))
    with TestClient(app_for(restarted)) as client:  # the next start: a new process
        job = wait_for(client, left.id)
    assert job["state"] == "succeeded" and job["result"]["run"]["added"] == 3
