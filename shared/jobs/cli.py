"""`loopline worker` (runs jobs from the broker) and `loopline jobs` (reads job records)."""

from __future__ import annotations

import json
import logging

import click

from shared.jobs.kinds import QUEUES

log = logging.getLogger(__name__)


@click.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice(QUEUES),
    default=("default",),
    show_default=True,
    help="Queues to take jobs from (repeat it): `train` holds training, export and loop cycles (a trainer's GPU).",
)
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64), help="Jobs run at once.")
def worker(queues: tuple[str, ...], concurrency: int) -> None:
    """Run jobs that the API enqueued on LOOPLINE_QUEUE_URL's broker, until stopped.

    A job's record (`GET /v1/jobs/{id}`) shows its progress. SIGTERM finishes the running
    jobs first (Celery's warm shutdown); a worker killed mid-job leaves its job to another
    worker after LOOPLINE_JOB_LEASE_S, up to LOOPLINE_JOB_MAX_ATTEMPTS tries.
    """
    from shared.config import Settings

    settings = Settings()
    if not settings.queue_url:
        raise click.ClickException(
            "no broker configured: jobs run inside `loopline serve`. To run them on workers, set LOOPLINE_QUEUE_URL "
            "(e.g. amqp://guest:guest@localhost:5672// or redis://localhost:6379/0) for the API and the workers"
        )
    try:
        import celery  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"workers need the 'queue' extra: pip install 'loopline[queue]' ({exc})") from exc
    from shared.context import AppContext
    from shared.jobs.queues import RUN_JOB_TASK, CeleryQueue, queue_name
    from shared.jobs.runner import JobRunner, Outcome, worker_name

    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    ctx = AppContext.build(settings, metrics=False)
    queue = ctx.jobs.queue
    assert isinstance(queue, CeleryQueue)
    name = worker_name("worker")
    runner = JobRunner(ctx, ctx.jobs.store, name=name)

    @queue.app.task(name=RUN_JOB_TASK, bind=True, max_retries=None)
    def run_job(self, job_id: str) -> None:  # noqa: ANN001
        outcome = runner.run(job_id)
        if outcome is Outcome.BUSY:  # another worker holds it: look again once its lease could have run out
            raise self.retry(countdown=settings.job_lease_s)
        if outcome is Outcome.RELEASED:  # this worker is stopping: another one takes it
            raise self.retry(countdown=1)

    names = ",".join(queue_name(settings.queue_namespace, q) for q in queues)
    click.echo(f"worker {name}: jobs from {names} ({concurrency} at a time)", err=True)
    try:
        queue.app.worker_main(
            [
                "worker",
                f"--queues={names}",
                f"--concurrency={concurrency}",
                "--pool=threads",
                "--without-gossip",
                "--without-mingle",
                f"--hostname={name.replace(':', '-')}",
                "--loglevel=INFO",
            ]
        )
    finally:
        runner.stop()
        ctx.close()


@click.group()
def jobs() -> None:
    """Job records: what ran, runs or waits, on this service's database."""


def _job_json(job) -> dict:  # noqa: ANN001
    from shared.jobs.api import JobOut

    return JobOut.of(job).model_dump(mode="json")


def _store():  # noqa: ANN202
    from shared.config import Settings
    from shared.jobs.records import JobStore
    from shared.metadata import MetadataStore

    settings = Settings()
    settings.ensure_home()
    return JobStore(
        MetadataStore(settings.resolved_database_url),
        lease_s=settings.job_lease_s,
        max_attempts=settings.job_max_attempts,
    )


@jobs.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--state", type=click.Choice(["queued", "running", "succeeded", "failed"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of job records.")
def list_jobs(limit: int, state: str | None, as_json: bool) -> None:
    """Recent jobs, newest first."""
    found = _store().recent(limit, state=state)
    if as_json:
        click.echo(json.dumps([_job_json(j) for j in found], indent=2))
        return
    if not found:
        click.echo("no jobs")
    for j in found:
        done = j.progress.get("done") if j.progress else None
        total = j.progress.get("total") if j.progress else None
        progress = f" {done}/{total}" if done is not None and total else ""
        click.echo(f"{j.id}  {j.kind:<14} {j.state:<9}{progress}  {j.created_at:%Y-%m-%d %H:%M:%S}  {j.error or ''}")


@jobs.command("show")
@click.argument("job_id")
def show_job(job_id: str) -> None:
    """One job's record as JSON (state, progress, result or error, attempts)."""
    job = _store().get(job_id)
    if job is None:
        raise click.ClickException(f"no job {job_id}")
    click.echo(json.dumps(_job_json(job), indent=2))
