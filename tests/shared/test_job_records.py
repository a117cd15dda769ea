"""Job records decide who runs a job: claims, leases, lost workers and attempts, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest

from shared.jobs.records import FAILED, QUEUED, RUNNING, SUCCEEDED, Claim, JobStore
from shared.metadata import MetadataStore

LEASE_S = 0.4


@pytest.fixture
def jobs(store: MetadataStore) -> JobStore:
    return JobStore(store, lease_s=LEASE_S, max_attempts=2)


def test_a_job_is_run_by_one_worker_at_a_time(jobs: JobStore) -> None:
    job = jobs.create("rag.sync", {}, queue="default", owner="root")
    assert job.state == QUEUED and job.attempts == 0

    claim, running = jobs.claim(job.id, "w1")
    assert claim is Claim.CLAIMED and running.state == RUNNING and running.worker == "w1" and running.attempts == 1
    # a second delivery while the lease is fresh: the other worker is told to come back later
    assert jobs.claim(job.id, "w2")[0] is Claim.BUSY
    assert jobs.heartbeat(job.id, "w1", {"done": 3, "total": 9})
    assert jobs.get(job.id).progress == {"done": 3, "total": 9}
    # only the claimant ends it
    assert not jobs.finish(job.id, "w2", {"x": 1})
    assert jobs.finish(job.id, "w1", {"x": 1}, {"done": 9, "total": 9})
    done = jobs.get(job.id)
    assert done.state == SUCCEEDED and done.result == {"x": 1} and done.progress == {"done": 9, "total": 9}
    assert done.finished_at is not None and [h["outcome"] for h in done.history] == ["succeeded"]
    # a late duplicate delivery finds it ended and runs nothing
    assert jobs.claim(job.id, "w2")[0] is Claim.ENDED


def test_a_lost_workers_job_runs_again_then_fails_when_its_attempts_are_used(jobs: JobStore) -> None:
    job = jobs.create("rag.ingest", {"path": "/x"}, queue="default", owner="root")
    assert jobs.claim(job.id, "w1")[0] is Claim.CLAIMED
    time.sleep(LEASE_S * 1.5)  # w1 was killed: no heartbeat, the lease runs out
    assert [j.id for j in jobs.waiting(dispatched=False, stale=True)] == [job.id]

    claim, again = jobs.claim(job.id, "w2")
    assert claim is Claim.CLAIMED and again.attempts == 2 and again.worker == "w2"
    assert again.history[0]["worker"] == "w1" and again.history[0]["outcome"].startswith("worker lost")
    assert not jobs.heartbeat(job.id, "w1")  # w1 came back from a pause: the job is not its own any more

    time.sleep(LEASE_S * 1.5)  # lost again: the attempts are used up
    claim, failed = jobs.claim(job.id, "w3")
    assert claim is Claim.EXHAUSTED and failed.state == FAILED
    assert "worker was lost 2 times" in failed.error
    assert [h["worker"] for h in failed.history] == ["w1", "w2"]


def test_a_released_job_is_queued_again_with_the_reason(jobs: JobStore) -> None:
    job = jobs.create("rag.sync", {}, queue="default", owner="root")
    jobs.claim(job.id, "w1")
    assert jobs.release(job.id, "w1", "interrupted by a shutdown")
    back = jobs.get(job.id)
    assert back.state == QUEUED and back.worker is None and "shutdown" in back.error
    assert jobs.claim(job.id, "w2")[0] is Claim.CLAIMED  # at once: a release is not a lost lease
    assert jobs.fail(job.id, "w2", "ValueError: bad")
    assert jobs.get(job.id).state == FAILED and jobs.counts() == {FAILED: 1}


def test_concurrent_claims_elect_exactly_one_worker(jobs: JobStore) -> None:
    job = jobs.create("rag.sync", {}, queue="default", owner="root")
    results: list[Claim] = []
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        barrier.wait()
        results.append(jobs.claim(job.id, name)[0])

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.value for r in results) == ["busy"] * 5 + ["claimed"]
    assert jobs.get(job.id).attempts == 1
