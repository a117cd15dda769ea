"""Measure what the job machinery costs per job: no-op jobs through each queue, end to end.

    python -m evaluation.benchmarks.queue_throughput [--jobs N] [--workers 1,2] [--brokers rabbitmq,redis] [--json]

A `jobs.probe` job does nothing, so its time is the queue's own: the job record written,
the id sent to the broker, a `loopline worker` claiming it, renewing nothing, recording its
result. For each set-up, N jobs are submitted at once through the same `Jobs.submit` the API
calls, and the clock runs from the first submit until the last record reads `succeeded`:

- `in-process`: the embedded default (no broker; the API process's thread);
- `rabbitmq` / `redis` with 1 and 2 worker processes (one job at a time each), started
  and warmed up (each has run a job) before the clock starts.

Reported: jobs/s, and the median and 95th percentile of each job's latency (created →
finished, from its record). The metadata database is SQLite in a temporary home (as the
embedded default); workers and this process share the machine's cores. Brokers are the
machine's own (amqp://guest:guest@127.0.0.1:5672//, redis://127.0.0.1:6379/15 unless
--amqp-url / --redis-url say otherwise); their queues are deleted afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click

from evaluation.benchmarks.command import given_args

log = logging.getLogger(__name__)

MODULE = "evaluation.benchmarks.queue_throughput"
PROBE = "jobs.probe"


def _local_admin():  # noqa: ANN202
    from shared.auth import Principal

    return Principal(name="benchmark", admin=True, local=True)


def _settings(home: Path, queue_url: str | None, namespace: str):  # noqa: ANN202
    from shared.config import Settings

    return Settings(home=home, queue_url=queue_url, queue_namespace=namespace, job_lease_s=30)


def _worker_env(settings) -> dict[str, str]:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(
        LOOPLINE_HOME=str(settings.home),
        LOOPLINE_QUEUE_URL=settings.queue_url,
        LOOPLINE_QUEUE_NAMESPACE=settings.queue_namespace,
        LOOPLINE_JOB_LEASE_S=str(settings.job_lease_s),
    )
    return env


def _wait_all(ctx, ids: list[str], timeout: float) -> list:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        if time.monotonic() > deadline:
            raise click.ClickException(f"{len(pending)} of {len(ids)} jobs did not end within {timeout:.0f} s")
        for job_id in list(pending):
            job = ctx.jobs.store.get(job_id)
            if job is not None and job.state in ("succeeded", "failed"):
                if job.state == "failed":
                    raise click.ClickException(f"job {job_id} failed: {job.error}")
                pending.discard(job_id)
        time.sleep(0.02)
    return [ctx.jobs.store.get(i) for i in ids]


def run_setup(name: str, queue_url: str | None, workers: int, jobs: int, workdir: Path) -> dict:
    """Submit `jobs` probes through one set-up and time them to the last record."""
    from shared.context import AppContext

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    settings = _settings(workdir / f"{name}-{workers}", queue_url, namespace)
    settings.ensure_home()
    ctx = AppContext.build(settings, metrics=False)
    procs: list[subprocess.Popen] = []
    who = _local_admin()
    try:
        ctx.jobs.start()
        loopline = str(Path(sys.executable).with_name("loopline"))
        for i in range(workers if queue_url else 0):
            log_file = (workdir / f"{name}-{workers}-worker-{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [loopline, "worker"], env=_worker_env(settings), stdout=log_file, stderr=subprocess.STDOUT
                )
            )
        # warm-up: every worker has connected and run a job before the clock starts
        warm = [ctx.jobs.submit(PROBE, {"seconds": 0.5}, who).id for _ in range(max(1, len(procs)))]
        _wait_all(ctx, warm, timeout=180)
        t0 = time.perf_counter()
        ids = [ctx.jobs.submit(PROBE, {}, who).id for _ in range(jobs)]
        submitted_s = time.perf_counter() - t0
        done = _wait_all(ctx, ids, timeout=600)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if queue_url:
            _delete_queues(queue_url, namespace)
        ctx.close()
    latencies = sorted((j.finished_at - j.created_at).total_seconds() * 1000 for j in done)
    ran_on = {j.worker.split("/")[0] for j in done if j.worker}
    return {
        "setup": name,
        "workers": workers if queue_url else 1,
        "jobs": jobs,
        "wall_s": round(wall, 3),
        "submit_s": round(submitted_s, 3),
        "jobs_per_s": round(jobs / wall, 1),
        "latency_ms_p50": round(statistics.median(latencies), 1),
        "latency_ms_p95": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
        "processes_used": len(ran_on),
    }


def _delete_queues(queue_url: str, namespace: str) -> None:
    from shared.jobs.queues import celery_app, queue_name

    app = celery_app(queue_url, namespace=namespace, lease_s=30)
    with app.connection_for_write() as conn:
        for queue in ("default", "train"):
            try:
                conn.default_channel.queue_delete(queue_name(namespace, queue))
            except Exception:  # noqa: BLE001 - a queue never declared
                log.debug("queue %s.%s not deleted", namespace, queue)


@click.command("queue", short_help="No-op jobs per second through each job queue.")
@click.option("--jobs", "n_jobs", type=click.IntRange(1), default=200, show_default=True, help="Jobs per set-up.")
@click.option("--workers", default="1,2", show_default=True, help="Worker processes to try, comma-separated.")
@click.option("--brokers", default="rabbitmq,redis", show_default=True, help="Brokers to try (rabbitmq, redis).")
@click.option("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672//", show_default=True)
@click.option("--redis-url", default="redis://127.0.0.1:6379/15", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def queue_throughput(
    ctx: click.Context, n_jobs: int, workers: str, brokers: str, amqp_url: str, redis_url: str, as_json: bool
) -> None:
    """No-op jobs through the in-process queue and through workers on RabbitMQ and Redis."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    urls = {"rabbitmq": amqp_url, "redis": redis_url}
    counts = [int(w) for w in workers.split(",") if w.strip()]
    chosen = [b.strip() for b in brokers.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(urls))
    if unknown:
        raise click.BadParameter(f"unknown broker(s) {', '.join(unknown)}: use rabbitmq, redis", param_hint="--brokers")
    rows = []
    with tempfile.TemporaryDirectory(prefix="loopline-queue-bench-") as tmp:
        plan = [("in-process", None, 1)] + [(b, urls[b], w) for b in chosen for w in counts]
        for name, url, w in plan:
            click.echo(f"{name} with {w} worker(s): {n_jobs} jobs…", err=True)
            rows.append(run_setup(name, url, w, n_jobs, Path(tmp)))
    result = {
        "rows": rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": " ".join([f"python -m {MODULE}", *given_args(ctx)]),
    }
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render(result))


def render(result: dict) -> str:
    lines = [
        f"{'queue':<11} {'workers':>7} {'jobs':>5} {'wall s':>7} {'jobs/s':>7} {'p50 ms':>8} {'p95 ms':>8}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['setup']:<11} {r['workers']:>7} {r['jobs']:>5} {r['wall_s']:>7.2f} {r['jobs_per_s']:>7.1f} "
            f"{r['latency_ms_p50']:>8.1f} {r['latency_ms_p95']:>8.1f}"
        )
    m = result["machine"]
    lines += ["", f"{m['cpus']} CPUs, Python {m['python']}; SQLite job records; command: {result['command']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    queue_throughput()
