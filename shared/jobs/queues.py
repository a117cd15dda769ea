"""The job queue port: how a job id reaches a process that runs it.

Two adapters, one small interface (`dispatch(job)`):
- `InProcessQueue`, the embedded default: a thread pool inside the API process. Jobs left
  queued or running by a process that stopped are picked up at the next start.
- `CeleryQueue`, when LOOPLINE_QUEUE_URL names a broker (RabbitMQ or Redis): the id goes to
  the broker and `loopline worker` processes run it (shared/jobs/cli.py). Celery is the
  existing engine: durable queues, late acknowledgement (a message is acked only once its
  job ended), redelivery when a worker's connection drops.
Either way the job record (records.py) decides who runs a job, so a message delivered twice
never runs it twice.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from shared.jobs.records import Job
from shared.jobs.runner import JobRunner, Outcome

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)
RUN_JOB_TASK = "loopline.run_job"


class QueueUnavailable(RuntimeError):
    """The broker did not take the job; it stays queued and is sent again (an outage delays, never loses)."""


class JobQueue(Protocol):
    remote: bool  # True: other processes run the jobs

    def dispatch(self, job: Job) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class InProcessQueue:
    """Runs jobs on `workers` threads of this process."""

    remote = False

    def __init__(self, runner: JobRunner, *, workers: int) -> None:
        self.runner = runner
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def dispatch(self, job: Job) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="loopline-job")
            self._pool.submit(self._run, job.id)

    def _run(self, job_id: str) -> None:
        try:
            if self.runner.run(job_id) is Outcome.BUSY:  # another process on this database runs it
                log.info("job %s is run by another process", job_id)
        except Exception:
            log.exception("job %s: the runner failed", job_id)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.runner.stop()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def queue_name(namespace: str, queue: str) -> str:
    return f"{namespace}.{queue}"


def celery_app(broker_url: str, *, namespace: str, lease_s: float) -> Celery:
    """The Celery app both sides use: the API sends with it, `loopline worker` consumes with it."""
    from celery import Celery
    from kombu import Queue

    app = Celery("loopline", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acked when the job ended: a worker lost mid-job leaves the message to redeliver
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # a failed job is recorded as failed: do not redeliver it
        worker_prefetch_multiplier=1,  # a worker holds only the job it runs
        worker_cancel_long_running_tasks_on_connection_loss=True,  # its message is redelivered: stop, do not run twice
        task_ignore_result=True,  # results live in the job records
        task_default_queue=queue_name(namespace, "default"),
        task_queues=[Queue(queue_name(namespace, q)) for q in ("default", "train")],
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": max(3600, 3 * lease_s)},  # Redis: redelivery of unacked jobs
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    return app


class CeleryQueue:
    """Sends job ids to the broker; `loopline worker` processes run them."""

    remote = True

    def __init__(self, broker_url: str, *, namespace: str, lease_s: float) -> None:
        self.namespace = namespace
        self.app = celery_app(broker_url, namespace=namespace, lease_s=lease_s)

    def dispatch(self, job: Job) -> None:
        try:
            self.app.send_task(
                RUN_JOB_TASK,
                args=[job.id],
                queue=queue_name(self.namespace, job.queue),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:  # kombu's OperationalError and socket errors: the broker is away
            raise QueueUnavailable(
                f"the job queue ({_redacted(self.app.conf.broker_url)}) is unavailable: {exc}"
            ) from exc

    def start(self) -> None:
        pass

    def stop(self) -> None:
        try:
            self.app.close()
        except Exception:  # noqa: S110 - closing a pool that never connected
            pass


def _redacted(url: Any) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(str(url))
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}"
