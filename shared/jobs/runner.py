"""Running one job: claim it, keep the lease while it runs, record how it ended.

The same code runs a job in the API process (no queue configured) and in a `loopline
worker`: the only difference is who delivered the job id. What a worker does with each
outcome: `DONE` acknowledges the message; `BUSY` (another worker holds the job) and
`RELEASED` (this process is shutting down) put it back for later.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.ingestion import Cancelled
from shared.jobs.kinds import JobKind, JobRun, job_kinds
from shared.jobs.records import Claim, JobStore

if TYPE_CHECKING:
    from shared.context import AppContext

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    DONE = "done"  # ended (succeeded or failed), or nothing to do
    BUSY = "busy"  # another worker holds a fresh lease: deliver again after a lease
    RELEASED = "released"  # given back unfinished (shutdown): deliver again


def worker_name(role: str) -> str:
    """Unique per process and start: host, pid and a short random tag."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobRunner:
    """Runs jobs by id for one process; `stop()` cancels the running ones (they are released)."""

    def __init__(self, ctx: AppContext, store: JobStore, *, name: str, kinds: dict[str, JobKind] | None = None) -> None:
        self.ctx = ctx
        self.store = store
        self.name = name
        self.kinds = kinds if kinds is not None else job_kinds()
        self.stopping = threading.Event()
        self._running: dict[str, JobRun] = {}
        self._lock = threading.Lock()

    def run(self, job_id: str) -> Outcome:
        if self.stopping.is_set():
            return Outcome.RELEASED
        worker = f"{self.name}/{threading.current_thread().name}"
        claim, job = self.store.claim(job_id, worker)
        if claim is Claim.BUSY:
            log.info("job %s runs on %s: delivered again later", job_id, job.worker if job else "?")
            return Outcome.BUSY
        if claim is Claim.EXHAUSTED:
            log.error("job %s failed: %s", job_id, job.error if job else "")
            return Outcome.DONE
        if claim is not Claim.CLAIMED or job is None:
            log.info("job %s: %s, nothing to run", job_id, claim.value)
            return Outcome.DONE
        kind = self.kinds.get(job.kind)
        if kind is None:
            self.store.fail(job_id, worker, f"this worker does not know the job kind {job.kind!r}: install its extra")
            return Outcome.DONE
        try:
            params = kind.params.model_validate(job.params)
        except ValidationError as exc:
            self.store.fail(job_id, worker, f"invalid parameters: {exc}")
            return Outcome.DONE
        run = JobRun(self.ctx, params, job_id)
        with self._lock:
            self._running[job_id] = run
        beat = _Heartbeat(self.store, job_id, worker, run, interval=self.store.lease.total_seconds() / 3)
        t0 = time.perf_counter()
        log.info("job %s (%s) attempt %d on %s", job_id, job.kind, job.attempts, worker)
        try:
            result = kind.run(run)
        except Cancelled as exc:
            beat.stop()
            self.store.release(job_id, worker, f"interrupted by a shutdown ({exc}); it runs again")
            log.warning("job %s interrupted by a shutdown: given back to the queue", job_id)
            return Outcome.RELEASED
        except Exception as exc:
            beat.stop()
            if self.stopping.is_set() or run.cancelled.is_set():
                self.store.release(job_id, worker, f"interrupted by a shutdown ({type(exc).__name__}); it runs again")
                return Outcome.RELEASED
            log.exception("job %s (%s) failed", job_id, job.kind)
            self.store.fail(job_id, worker, f"{type(exc).__name__}: {exc}")
            return Outcome.DONE
        finally:
            beat.stop()
            with self._lock:
                self._running.pop(job_id, None)
        if not self.store.finish(
            job_id, worker, {**result, "seconds": round(time.perf_counter() - t0, 3)}, run.snapshot()
        ):
            log.error(
                "job %s finished on %s after its lease was taken over: its result was not recorded", job_id, worker
            )
        else:
            log.info("job %s (%s) succeeded in %.1f s", job_id, job.kind, time.perf_counter() - t0)
        return Outcome.DONE

    def stop(self) -> None:
        """The process is shutting down: running jobs see `cancelled`; no new job starts."""
        self.stopping.set()
        with self._lock:
            running = list(self._running.values())
        for run in running:
            try:
                run.cancel()
            except Exception:
                log.exception("cancelling job %s failed", run.job_id)


class _Heartbeat:
    """Renews a job's lease on a thread and writes its latest progress; stops with the job."""

    def __init__(self, store: JobStore, job_id: str, worker: str, run: JobRun, *, interval: float) -> None:
        self._store, self._job_id, self._worker, self._run = store, job_id, worker, run
        self._interval = max(0.2, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"loopline-lease-{job_id[:8]}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._store.heartbeat(self._job_id, self._worker, self._run.snapshot() or None):
                    log.error("job %s: its lease was taken over; this run's result will not be recorded", self._job_id)
                    return
            except Exception:  # the database is away for a moment: the lease has slack for that
                log.exception("job %s: renewing its lease failed; trying again", self._job_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
