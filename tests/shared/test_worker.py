"""`loopline worker` processes run the API's jobs through a real broker (RabbitMQ, Redis).

The API runs in the test (its lifespan on), the workers are real `loopline worker` processes
on the machine's broker. A worker killed in the middle of an ingest leaves its job to the
next worker once the lease runs out: it is retried, never lost, never run twice at once.
Under CI=true a missing broker fails the run instead of skipping it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

import shared.jobs.api
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

BROKERS = {
    "rabbitmq": os.environ.get("LOOPLINE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis": os.environ.get("LOOPLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
}
ADMIN = {"X-API-Key": "test-key-root-0123456789"}
LEASE_S = 2.0
LOOPLINE = str(Path(sys.executable).with_name("loopline"))


def broker_url(name: str) -> str:
    url = BROKERS[name]
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires {name} at {parts.hostname}:{parts.port}: {exc}", pytrace=False)
        pytest.skip(f"{name} is not running at {parts.hostname}:{parts.port}")
    return url


@pytest.fixture(params=sorted(BROKERS))
def broker(request: pytest.FixtureRequest) -> str:
    return request.param


class Deployment:
    """One API (in this process) and the settings its workers share: home, database, broker, namespace."""

    def __init__(self, tmp_path: Path, queue_url: str, **settings: object) -> None:
        self.namespace = f"loopline-test-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            home=tmp_path / "home",
            queue_url=queue_url,
            queue_namespace=self.namespace,
            job_lease_s=LEASE_S,
            **settings,
        )
        self.workers: list[subprocess.Popen] = []
        self.logs = tmp_path / "workers"
        self.logs.mkdir()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
        s = self.settings
        env.update(
            LOOPLINE_HOME=str(s.home),
            LOOPLINE_QUEUE_URL=s.queue_url,
            LOOPLINE_QUEUE_NAMESPACE=s.queue_namespace,
            LOOPLINE_JOB_LEASE_S=str(s.job_lease_s),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        return env

    def start_worker(self, *queues: str) -> subprocess.Popen:
        args = [LOOPLINE, "worker", *[f"--queue={q}" for q in queues or ("default",)]]
        log = (self.logs / f"worker-{len(self.workers)}.log").open("wb")
        # a session of its own: killing it takes its children (the parse worker) too, like a container's end
        proc = subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        return proc

    def worker_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.iterdir()))

    def stop_workers(self) -> None:
        """SIGTERM: Celery's warm shutdown; then whatever is left of each worker's session is killed."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.stop_workers()
        from shared.jobs.queues import celery_app, queue_name

        app = celery_app(self.settings.queue_url, namespace=self.namespace, lease_s=LEASE_S)
        with app.connection_for_write() as conn:  # the test's queues are durable: leave none behind
            for queue in ("default", "train"):
                try:
                    conn.default_channel.queue_delete(queue_name(self.namespace, queue))
                except Exception:  # noqa: S110 - never declared by this test
                    pass


@pytest.fixture
def deployment_factory(tmp_path: Path) -> Iterator:
    made: list[Deployment] = []

    def make(queue_url: str, **settings: object) -> Deployment:
        made.append(Deployment(tmp_path, queue_url, **settings))
        return made[-1]

    yield make
    for d in made:
        d.stop()


def api(settings: Settings) -> TestClient:
    keys = KeyRegistry([UserEntry(name="root", key=ADMIN["X-API-Key"], groups=[], admin=True)])
    return TestClient(create_app(settings, plugins=[shared.jobs.api.plugin], keys=keys))


def wait_for(client: TestClient, job_id: str, until, deployment: Deployment, timeout: float = 120) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()
        if until(job):
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} never got there: {job}\n{deployment.worker_logs()}")


def test_a_worker_runs_the_jobs_of_its_queue(broker: str, deployment_factory) -> None:
    deployment = deployment_factory(broker_url(broker))
    with api(deployment.settings) as client:
        # submitted before any worker runs: the broker keeps the jobs
        for_trainer = client.post("/v1/jobs", headers=ADMIN, json={"kind": "jobs.probe-train"}).json()
        probe = client.post("/v1/jobs", headers=ADMIN, json={"kind": "jobs.probe"}).json()
        assert probe["state"] == "queued" and probe["queue"] == "default" and for_trainer["queue"] == "train"
        worker = deployment.start_worker("default")

        done = wait_for(client, probe["job_id"], lambda j: j["state"] == "succeeded", deployment)
        assert done["result"]["pid"] == worker.pid and done["worker"].startswith("worker@")
        assert done["attempts"] == 1 and done["error"] is None
        # a default-queue worker leaves the train queue to trainers
        assert client.get(f"/v1/jobs/{for_trainer['job_id']}", headers=ADMIN).json()["state"] == "queued"

        trainer = deployment.start_worker("train")
        done = wait_for(client, for_trainer["job_id"], lambda j: j["state"] == "succeeded", deployment)
        assert done["result"]["pid"] == trainer.pid


def write_docs(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        body = "\n\n".join(
            f"## Part {p}\n\nShelf {i}-{p} of the archive in room {100 + i} keeps the {p}th binder of project {i}."
            for p in range(6)
        )
        (folder / f"binder-{i:03d}.md").write_text(f"# Binder {i}\n\n{body}\n")
    return folder


def test_a_job_whose_worker_is_killed_is_retried_by_another_and_runs_once(tmp_path: Path, deployment_factory) -> None:
    docs = write_docs(tmp_path / "drive" / "binders", 60)
    deployment = deployment_factory(broker_url("rabbitmq"), ingest_roots=str(tmp_path / "drive"))
    with api(deployment.settings) as client:
        job = client.post(
            "/v1/jobs", headers=ADMIN, json={"kind": "rag.ingest", "params": {"path": str(docs), "groups": ["ops"]}}
        ).json()
        first = deployment.start_worker()
        running = wait_for(
            client, job["job_id"], lambda j: (j["progress"] or {}).get("done", 0) >= 3, deployment, timeout=180
        )
        os.killpg(first.pid, signal.SIGKILL)  # mid-ingest: no warm shutdown, no ack, no release
        first.wait()
        assert running["state"] == "running" and running["progress"]["done"] < 60

        # the job is neither lost nor taken over while its lease may still be alive
        lost = client.get(f"/v1/jobs/{job['job_id']}", headers=ADMIN).json()
        assert lost["state"] == "running" and lost["attempts"] == 1

        deployment.start_worker()
        done = wait_for(client, job["job_id"], lambda j: j["state"] in ("succeeded", "failed"), deployment, 240)

    assert done["state"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["history"][0]["outcome"].startswith("worker lost") and done["history"][1]["outcome"] == "succeeded"
    assert done["history"][0]["worker"] != done["history"][1]["worker"]
    run = done["result"]["run"]
    # what the killed attempt indexed is found unchanged; the rest is added once
    assert run["added"] + run["unchanged"] == 60 and run["added"] < 60 and run["status"] == "succeeded"
    deployment.stop_workers()  # they hold the embedded vector store

    from rag.service import RagService
    from shared.auth import Principal

    ops = Principal(name="ops-reader", groups=["ops"])
    with RagService(deployment.settings) as svc:
        paths = [d.path for d in svc.list_documents(ops)]
        assert sorted(paths) == sorted(paths_of(docs)) and len(set(paths)) == 60  # each once
        answer = svc.ask("Which room keeps the binders of project 42?", ops, top_k=3)
        assert answer.citations and answer.citations[0].source.endswith("binder-042.md")


def paths_of(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()]


def test_workers_beside_an_api_on_the_embedded_vector_store_fail_the_job_saying_what_to_set(
    tmp_path: Path, deployment_factory
) -> None:
    import rag.api

    docs = write_docs(tmp_path / "drive" / "binders", 1)
    deployment = deployment_factory(broker_url("rabbitmq"), ingest_roots=str(tmp_path / "drive"))
    keys = KeyRegistry([UserEntry(name="root", key=ADMIN["X-API-Key"], groups=[], admin=True)])
    app = create_app(deployment.settings, plugins=[rag.api.plugin, shared.jobs.api.plugin], keys=keys)
    with TestClient(app) as client:  # this API holds the embedded store
        job = client.post(
            "/v1/jobs", headers=ADMIN, json={"kind": "rag.ingest", "params": {"path": str(docs), "groups": ["ops"]}}
        ).json()
        deployment.start_worker()
        done = wait_for(client, job["job_id"], lambda j: j["state"] in ("succeeded", "failed"), deployment)
    assert done["state"] == "failed" and "LOOPLINE_QDRANT_URL" in done["error"], done
