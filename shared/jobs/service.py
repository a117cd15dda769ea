"""Jobs as the API and the CLI see them: submit, read, wait.

`Jobs` is built once by the composition root. Submitting checks the kind and its
parameters (and, for a network caller, the server paths it names), writes the job record,
then hands the id to the queue. If the broker is away, the record stays queued and a
background thread sends it again once the broker answers: an outage delays a job, never
loses it. The same thread sends again the jobs whose worker is gone (lease run out) and,
without a broker, picks up at start the jobs a stopped API process left queued.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.ingestion.roots import check_ingest_path, parse_roots
from shared.jobs.kinds import JobKind, job_kinds
from shared.jobs.queues import CeleryQueue, InProcessQueue, JobQueue, QueueUnavailable
from shared.jobs.records import ENDED, QUEUED, Job, JobStore
from shared.jobs.runner import JobRunner, worker_name

if TYPE_CHECKING:
    from shared.auth import Principal
    from shared.context import AppContext

log = logging.getLogger(__name__)
RESEND_EVERY_S = 5.0


class UnknownJobKind(LookupError):
    pass


class InvalidJob(ValueError):
    """The parameters do not fit the kind; the message names the field."""


class JobConflict(RuntimeError):
    """A job of an exclusive kind is already queued or running."""

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class Jobs:
    """The job records plus the queue that carries them to a runner."""

    def __init__(self, store: JobStore, queue: JobQueue, *, kinds: dict[str, JobKind] | None = None) -> None:
        self.store = store
        self.queue = queue
        self._kinds = kinds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_context(cls, ctx: AppContext) -> Jobs:
        s = ctx.settings
        store = JobStore(ctx.metadata, lease_s=s.job_lease_s, max_attempts=s.job_max_attempts)
        queue: JobQueue
        if s.queue_url:
            queue = CeleryQueue(s.queue_url, namespace=s.queue_namespace, lease_s=s.job_lease_s)
        else:
            queue = InProcessQueue(JobRunner(ctx, store, name=worker_name("api")), workers=s.jobs_in_process)
        return cls(store, queue)

    @property
    def kinds(self) -> dict[str, JobKind]:
        return self._kinds if self._kinds is not None else job_kinds()

    def submit(
        self,
        kind_name: str,
        params: dict[str, Any],
        who: Principal,
        *,
        ingest_roots: str = "",
        home: Path | None = None,
    ) -> Job:
        """Check, record and enqueue a job; returns its record (queued)."""
        kind = self.kinds.get(kind_name)
        if kind is None:
            raise UnknownJobKind(f"no job kind {kind_name!r}; known: {', '.join(sorted(self.kinds)) or 'none'}")
        try:
            checked = kind.params.model_validate(params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors())
            raise InvalidJob(f"{kind_name}: {problems}") from exc
        values = checked.model_dump(mode="json")
        if not who.local:  # a network caller names server paths only under the configured roots
            for name in kind.path_params:
                if values.get(name) is not None:
                    values[name] = str(
                        check_ingest_path(
                            str(values[name]), parse_roots(ingest_roots), protected=[home] if home else []
                        )
                    )
        if kind.exclusive and (active := self.store.active(kind_name)):
            raise JobConflict(f"a {kind_name} job is already {active[0].state} ({active[0].id})", active[0])
        job = self.store.create(kind_name, values, queue=kind.queue, owner=who.name)
        self._send(job)
        log.info("user %s submitted job %s (%s)", who.name, job.id, kind_name)
        return self.store.get(job.id) or job

    def _send(self, job: Job) -> bool:
        try:
            self.queue.dispatch(job)
        except QueueUnavailable as exc:
            log.warning("job %s stays queued until the queue answers: %s", job.id, exc)
            return False
        self.store.mark_dispatched(job.id)
        return True

    def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    def wait(self, job_id: str, *, timeout: float | None = None, poll_s: float = 0.2) -> Job:
        """Poll until the job ended, was given back by a shutdown, or `timeout` passed; returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job is None:
                raise LookupError(job_id)
            released = job.state == QUEUED and job.attempts > 0 and bool(job.error)
            if job.state in ENDED or released or self._stop.is_set():
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(poll_s)

    # --- background: resend what the broker missed; resume what a stopped process left ---------
    def start(self) -> None:
        self.queue.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._resend_loop, name="loopline-jobs", daemon=True)
            self._thread.start()

    def _resend_loop(self) -> None:
        first = True
        while first or not self._stop.wait(RESEND_EVERY_S):
            try:
                # At start in process, every queued job (a stopped process left them); then the jobs the
                # queue never took, and running ones whose worker is gone (a broker redelivers those too,
                # but Redis only after its visibility timeout). A claim decides who runs each.
                waiting = self.store.waiting(dispatched=first and not self.queue.remote, stale=True)
                for job in waiting:
                    if self._stop.is_set():
                        return
                    self._send(job)
                if first and waiting and not self.queue.remote:
                    log.info("resuming %d job(s) a stopped process left", len(waiting))
            except Exception:
                log.exception("sending waiting jobs failed; trying again in %.0f s", RESEND_EVERY_S)
            first = False

    def runner_stop(self) -> None:
        """Shutdown begins: jobs running in this process see `cancelled` and are given back."""
        runner = getattr(self.queue, "runner", None)
        if runner is not None:
            runner.stop()

    def stop(self) -> None:
        self._stop.set()
        self.queue.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
