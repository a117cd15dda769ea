"""Measure what the Prometheus metrics cost the central API per request.

    python -m evaluation.benchmarks.metrics_overhead [--rounds R] [--pings N] [--json]

Two apps in one process over ONE RagService (same stores, same loaded model), identical but
for `create_app(..., metrics=True|False)`: with metrics, every request passes the timing
middleware and every answer is counted; without, neither exists. Requests go through
FastAPI's in-process TestClient, alternately to each app (the order flips every round), so a
change of load on a shared machine hits both alike. Measured:

- POST /v1/query on the fictional handbook of `rag.samples` (a few questions, one that
  abstains): median latency with and without metrics, their ratio, and the median of the
  paired differences (same question, same round);
- GET /healthz, a handler that does nearly nothing: the same figures, which isolate the
  absolute per-request cost of the middleware;
- the recording itself, timed in a tight loop on the app's own `ServiceMetrics` (one
  request observation plus one answer, as a query records): a figure the machine's load
  hardly moves, set against the median query;
- GET /metrics: the cost of one scrape after the run.

A table goes to stdout (or JSON with --json), progress to stderr. Everything lives in a
temporary LOOPLINE_HOME removed at exit. It measures, it does not tune or judge.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click

from evaluation.benchmarks.command import given_args

log = logging.getLogger(__name__)

MODULE = "evaluation.benchmarks.metrics_overhead"

QUESTIONS = (
    "What are the core collaboration hours?",
    "Where does Fjordlight Robotics have offices?",
    "When are meetings not scheduled?",
    "What is the airspeed velocity of an unladen swallow?",  # abstains
)
ADMIN_KEY = "bench-admin-key-0123456789"


def _timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def _summary(on: list[float], off: list[float]) -> dict:
    diffs = [a - b for a, b in zip(on, off, strict=True)]
    med_on, med_off = statistics.median(on), statistics.median(off)
    return {
        "n": len(on),
        "median_ms_with_metrics": round(med_on * 1000, 4),
        "median_ms_without_metrics": round(med_off * 1000, 4),
        "ratio": round(med_on / med_off, 4),
        "median_paired_diff_us": round(statistics.median(diffs) * 1e6, 1),
    }


def measure(rounds: int, pings: int, workdir: Path) -> dict:
    """Build the service and the two apps under `workdir`, then time them interleaved."""
    from fastapi.testclient import TestClient

    import rag.api
    from rag.samples import write_handbook
    from rag.service import RagService
    from shared.auth import KeyRegistry, UserEntry
    from shared.config import Settings
    from shared.server import create_app

    settings = Settings(home=workdir / "home")
    svc = RagService(settings)
    try:
        plan = write_handbook(workdir / "handbook")
        for folder, groups in plan.items():
            svc.ingest(workdir / "handbook" / folder, groups)
        keys = KeyRegistry([UserEntry(name="root", key=ADMIN_KEY, groups=[], admin=True)])
        apps = {
            flag: create_app(settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys, metrics=flag)
            for flag in (True, False)
        }
        clients = {flag: TestClient(app) for flag, app in apps.items()}  # no lifespan: the service is closed here
        hdr = {"X-API-Key": ADMIN_KEY}

        def query(flag: bool, q: str) -> Callable[[], object]:
            def call() -> None:
                r = clients[flag].post("/v1/query", headers=hdr, json={"question": q})
                assert r.status_code == 200, r.text

            return call

        def ping(flag: bool) -> Callable[[], object]:
            return lambda: clients[flag].get("/healthz")

        for flag in (True, False):  # warm-up: model, caches, first-request paths
            for q in QUESTIONS:
                query(flag, q)()
            for _ in range(20):
                ping(flag)()

        times: dict[str, dict[bool, list[float]]] = {"query": {True: [], False: []}, "healthz": {True: [], False: []}}
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for q in QUESTIONS:
                for flag in order:
                    times["query"][flag].append(_timed(query(flag, q)))
            for _ in range(max(1, pings // rounds)):
                for flag in order:
                    times["healthz"][flag].append(_timed(ping(flag)))
            if (r + 1) % 10 == 0:
                print(f"round {r + 1}/{rounds}", file=sys.stderr)

        metrics = apps[True].state.ctx.metrics
        n_rec = 20_000
        t0 = time.perf_counter()
        for _ in range(n_rec):
            metrics.observe_request("POST", "/v1/query", 200, 0.02)
            metrics.record_answer("extractive", False)
        record_us = (time.perf_counter() - t0) / n_rec * 1e6
        query_ms = statistics.median(times["query"][False]) * 1000
        scrapes = [_timed(lambda: clients[True].get("/metrics")) for _ in range(50)]
        page = clients[True].get("/metrics").text
        return {
            "query": _summary(times["query"][True], times["query"][False]),
            "healthz": _summary(times["healthz"][True], times["healthz"][False]),
            "recording": {
                "n": n_rec,
                "us_per_query": round(record_us, 2),
                "share_of_median_query": round(record_us / 1000 / query_ms, 6),
            },
            "scrape": {
                "n": len(scrapes),
                "median_ms": round(statistics.median(scrapes) * 1000, 3),
                "page_bytes": len(page),
            },
        }
    finally:
        svc.close()


@click.command("metrics-overhead", short_help="What the Prometheus metrics cost per request.")
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Rounds; each asks every question once per app.",
)
@click.option(
    "--pings",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="GET /healthz pairs in all, spread over the rounds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def metrics_overhead(ctx: click.Context, rounds: int, pings: int, as_json: bool) -> None:
    """Measure what the Prometheus metrics cost the central API per request."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory(prefix="loopline-bench-metrics-") as tmp:
        result = measure(rounds, pings, Path(tmp))
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    result["command"] = " ".join([f"python -m {MODULE}", *given_args(ctx)])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render(result))


def render(result: dict) -> str:
    """The result as a table of medians and two summary lines."""
    lines = [f"{'requests':<10} {'n':>5} {'with (ms)':>10} {'without (ms)':>13} {'ratio':>7} {'paired diff (us)':>17}"]
    for name in ("query", "healthz"):
        s = result[name]
        lines.append(
            f"{name:<10} {s['n']:>5} {s['median_ms_with_metrics']:>10.3f} {s['median_ms_without_metrics']:>13.3f} "
            f"{s['ratio']:>7.3f} {s['median_paired_diff_us']:>17.1f}"
        )
    rec = result["recording"]
    lines.append(
        f"recording per query: {rec['us_per_query']:.2f} us = {rec['share_of_median_query']:.4%} of the median query"
    )
    sc = result["scrape"]
    lines.append(
        f"GET /metrics: median {sc['median_ms']:.3f} ms for a {sc['page_bytes']:,}-byte page ({sc['n']} scrapes)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    metrics_overhead(prog_name=f"python -m {MODULE}")
