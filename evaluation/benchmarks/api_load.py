"""Load-test the document Q&A API on loopback with locust: queries/s and latency per concurrency.

    python -m evaluation.benchmarks.api_load CORPUS [--max-docs N] [--qa QA.jsonl]
        [--users 1,8,32] [--seconds S] [--max-requests N] [--json]

What it builds, all in a temporary folder removed at exit: a LOOPLINE_HOME, a subset of CORPUS
(`--max-docs` files, the QA sources first) ingested by `loopline rag ingest` for one group, an
API keys file with one key for that group, and `loopline serve` started as an operator would
(a child process, its defaults, a free loopback port, no LLM configured). When /readyz
answers 200 it asks every question once to warm up, then runs one locust level per `--users`
value, each in its own child process (api_load_locustfile), each bounded by `--seconds` and
`--max-requests`.

The endpoint is POST /v1/query. The API has no search-only route; with no LLM configured
(the benchmark removes LOOPLINE_LLM_* and OPENAI_* from the server's environment) an answer
is retrieval (embed the question, hybrid search filtered by the caller's groups) plus the
extractive answer (sentences picked from the retrieved chunks, no model), so nothing but
retrieval costs. An answer in another mode counts as an error.

Per level: answers, queries/s, p50/p95/p99 latency, errors, and the server's own median time
(`timings.total_ms` of the answers: the rest of the latency is queueing and HTTP). The load
generator and the server run on the same machine and share its CPUs; the output says how many
and how much CPU each took, so the figures are for that machine, not for a server alone.

A table goes to stdout (JSON with --json), progress to stderr; it exits 1 when any request
failed. The server is stopped at the end, on an error and on Ctrl-C.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import httpx

from evaluation.benchmarks.command import given_args
from evaluation.benchmarks.machine import CpuWatch, cpu_model, loadavg, package_versions, wait_for_quiet
from evaluation.benchmarks.rag.corpus import copy_subset, select_subset, supported_files

log = logging.getLogger(__name__)

MODULE = "evaluation.benchmarks.api_load"
REPO_ROOT = Path(__file__).resolve().parents[2]
GROUP = "bench"
USER = "load-tester"
QUERY_PATH = "/v1/query"
KEY_ENV = "LOOPLINE_BENCH_API_KEY"  # how the locust child gets the key (not on its command line)
STOP_TIMEOUT_S = 60.0  # the most a user may take to finish its last request once a level ends
WARMUP_QUESTIONS = 30
READY_TIMEOUT_S = 300.0
VERSIONED_PACKAGES = ("loopline", "locust", "fastapi", "uvicorn", "torch", "sentence-transformers", "qdrant-edge-py")
# What the children must not inherit: another home, database or vector server, or an LLM.
_DROPPED_ENV_PREFIXES = ("LOOPLINE_", "OPENAI_")


def _say(message: str) -> None:
    click.echo(f"[api-load] {message}", err=True)


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without loopline's settings or an LLM endpoint, with `home` as LOOPLINE_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV_PREFIXES)}
    return env | {
        "LOOPLINE_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cpus_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- the home: corpus subset, index, keys ---------------------------------------------------
def prepare_corpus(corpus: Path, qa: Path | None, max_docs: int, dst: Path) -> tuple[list[str], list[str]]:
    """Copy the subset to `dst`; (files copied, QA questions or [])."""
    questions: list[str] = []
    qa_items = []
    if qa is not None:
        from evaluation.rag_eval import load_qa

        qa_items = load_qa(qa)
        questions = [q.question for q in qa_items]
    files = select_subset(supported_files(corpus), qa_items, max_docs)
    if not files:
        raise click.ClickException(f"{corpus}: no supported documents")
    copy_subset(corpus, files, dst)
    return files, questions


def ingest(folder: Path, env: dict[str, str]) -> dict:
    """`loopline rag ingest FOLDER --groups GROUP`, in a child; its summary."""
    cmd = [sys.executable, "-m", "shared.cli", "rag", "ingest", str(folder), "--groups", GROUP, "--json"]
    done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"the ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_keys(home: Path, key: str) -> Path:
    """The API keys file with one user who reads GROUP (and public)."""
    import yaml

    path = home / "api_keys.yaml"
    path.write_text(yaml.safe_dump({"users": [{"name": USER, "key": key, "groups": [GROUP]}]}), encoding="utf-8")
    path.chmod(0o600)
    return path


# --- the server ---------------------------------------------------------------------------
@contextmanager
def running_server(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`loopline serve` on a free loopback port until the block ends (also on errors and Ctrl-C)."""
    port = free_port()
    with open(log_path, "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, proc, log_path)
            yield url, proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log_tail(log_path: Path, chars: int = 3000) -> str:
    try:
        return log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


def wait_until_ready(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Wait for /healthz (the process is up), then /readyz 200 (the stores answer, the model is loaded)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for path in ("/healthz", "/readyz"):
        while True:
            if proc.poll() is not None:
                raise click.ClickException(f"loopline serve exited ({proc.returncode}):\n{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"loopline serve was not ready in {READY_TIMEOUT_S:.0f} s")
            try:
                if httpx.get(url + path, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)


def titles_as_questions(url: str, key: str) -> list[str]:
    """The titles of the documents the key may read: the questions when no QA file is given."""
    resp = httpx.get(f"{url}/v1/documents", headers={"X-API-Key": key}, timeout=60)
    resp.raise_for_status()
    return sorted({d["title"].strip() for d in resp.json() if d["title"].strip()})


def warm_up(url: str, key: str, questions: list[str]) -> float:
    """Ask the first questions once, checking they are answered without an LLM; the seconds taken."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
        for q in questions[:WARMUP_QUESTIONS]:
            resp = client.post(QUERY_PATH, json={"question": q})
            if resp.status_code != 200:
                raise click.ClickException(f"warm-up: {QUERY_PATH} answered {resp.status_code}: {resp.text[:300]}")
            if resp.json().get("mode") != "extractive":
                raise click.ClickException(
                    f"warm-up: answers come from mode {resp.json().get('mode')!r}, not extractive"
                )
    return time.perf_counter() - t0


# --- the levels ---------------------------------------------------------------------------
def run_level(
    url: str,
    key: str,
    questions: list[str],
    users: int,
    seconds: float,
    max_requests: int,
    work: Path,
    server: subprocess.Popen,
    quiet_wait_s: float,
) -> dict:
    """One locust level in its own process, after waiting for a quiet machine; its result, with the
    CPU the server, the load generator and every other process took while it ran."""
    plan = work / f"level-{users}.json"
    plan.write_text(
        json.dumps(
            {"host": url, "questions": questions, "users": users, "seconds": seconds, "max_requests": max_requests}
        ),
        encoding="utf-8",
    )
    cmd = [sys.executable, "-m", "evaluation.benchmarks.api_load_locustfile", str(plan)]
    quiet = wait_for_quiet(quiet_wait_s) if quiet_wait_s > 0 else None
    watch = CpuWatch()
    watch.start()
    server0, kids0, t0 = cpu_seconds(server.pid), _children_cpu_s(), time.perf_counter()
    out = run_locust(cmd, os.environ | {KEY_ENV: key}, server, work, seconds + STOP_TIMEOUT_S + 120)
    server1, kids1, wall = cpu_seconds(server.pid), _children_cpu_s(), time.perf_counter() - t0
    watched = watch.stop()
    result = json.loads(out.strip().splitlines()[-1])
    result["quiet_before"] = quiet
    # CPU % of one CPU over the child's whole run (its start included), so slightly under the share under load.
    loadgen = kids1 - kids0
    result["loadgen_cpu_pct"] = round(loadgen / wall * 100, 1)
    if server0 is not None and server1 is not None:
        server = server1 - server0
        result["server_cpu_pct"] = round(server / wall * 100, 1)
        if watched.get("others_cpu_share") is not None:  # the machine's busy time less this run's processes
            rest = watched["others_cpu_share"] - (server + loadgen) / (wall * (os.cpu_count() or 1))
            result["other_processes_cpu_share"] = round(max(0.0, rest), 3)
    return result


def run_locust(cmd: list[str], env: dict[str, str], server: subprocess.Popen, work: Path, timeout_s: float) -> str:
    """Run a locust level to its end and return its stdout; stop it at once if the server exits."""
    out_path, err_path = work / "locust.out", work / "locust.err"
    with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None:
                if server.poll() is not None:
                    raise click.ClickException(
                        f"loopline serve exited during the test:\n{_log_tail(work / 'serve.log')}"
                    )
                if time.monotonic() > deadline:
                    raise click.ClickException(f"the locust level did not end in {timeout_s:.0f} s")
                time.sleep(0.2)
        finally:
            stop(proc)
    if proc.returncode != 0:
        raise click.ClickException(f"the locust level failed ({proc.returncode}): {_log_tail(err_path)}")
    return out_path.read_text(encoding="utf-8")


def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the locust levels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    corpus: Path,
    qa: Path | None,
    max_docs: int,
    users: list[int],
    seconds: float,
    max_requests: int,
    quiet_wait_s: float,
    work: Path,
) -> dict:
    home = work / "home"
    home.mkdir()
    files, questions = prepare_corpus(corpus, qa, max_docs, work / "corpus")
    _say(f"ingesting {len(files)} documents of {corpus}")
    env = child_env(home)
    t0 = time.perf_counter()
    summary = ingest(work / "corpus", env)
    ingest_s = time.perf_counter() - t0
    _say(
        f"ingested: {summary['added']} documents, {summary['chunks']} chunks, {summary['failed']} failed ({ingest_s:.0f} s)"
    )
    key = secrets.token_urlsafe(24)
    write_keys(home, key)
    levels: list[dict] = []
    _say("starting loopline serve")
    with running_server(env, work / "serve.log") as (url, proc):
        _say(f"serving at {url}")
        source = f"the QA file {qa}" if questions else "the documents' titles"
        if not questions:
            questions = titles_as_questions(url, key)
        if not questions:
            raise click.ClickException("no questions: the documents have no titles; pass --qa")
        warm_s = warm_up(url, key, questions)
        _say(f"warmed up with {min(len(questions), WARMUP_QUESTIONS)} questions ({warm_s:.1f} s)")
        for n in users:
            _say(f"{n} user{'s' if n > 1 else ''} for up to {seconds:g} s or {max_requests} answers")
            level = run_level(url, key, questions, n, seconds, max_requests, work, proc, quiet_wait_s)
            levels.append(level)
            _say(
                f"{n} user{'s' if n > 1 else ''}: {level['requests']} answers, {level['queries_per_s']} q/s, "
                f"p50 {level['p50_ms']:.0f} ms, p95 {level['p95_ms']:.0f} ms, {level['errors']} errors"
                if level["p50_ms"] is not None
                else f"{n} user{'s' if n > 1 else ''}: {level['requests']} answers, {level['errors']} errors"
            )
            if proc.poll() is not None:
                raise click.ClickException(f"loopline serve exited during the test:\n{_log_tail(work / 'serve.log')}")
    cpus = cpus_available()
    return {
        "endpoint": f"POST {QUERY_PATH} (no LLM configured: retrieval + extractive answer)",
        "corpus": {
            "path": str(corpus),
            "documents": summary["added"],
            "chunks": summary["chunks"],
            "failed": summary["failed"],
            "ingest_s": round(ingest_s, 1),
        },
        "questions": {"source": source, "count": len(questions)},
        "server": "loopline serve: one uvicorn process (its default; no workers option), sync handlers on "
        "AnyIO's thread pool, access log at INFO to a file, embedded stores (SQLite metadata, qdrant-edge vectors)",
        "load": f"locust {package_versions(['locust'], keep_missing=True)['locust']}, FastHttpUser, "
        "closed loop (no think time), each level in a fresh process",
        "sharing": f"server and load generator share this machine's {cpus} CPUs; the figures are for both on it",
        "levels": levels,
    }


def render(result: dict) -> str:
    """The result as a table per user level, with the lines that say what was measured."""
    head = (
        f"{'users':>5} {'requests':>8} {'q/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} {'server p50':>10} {'server CPU':>10} {'locust CPU':>10} {'other CPU':>9}"
    )
    lines = [head]

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for lv in result["levels"]:
        lines.append(
            f"{lv['users']:>5} {lv['requests']:>8} {num(lv['queries_per_s'], '.1f'):>7} {num(lv['p50_ms'], '.0f'):>7} "
            f"{num(lv['p95_ms'], '.0f'):>7} {num(lv['p99_ms'], '.0f'):>7} {lv['errors']:>6} "
            f"{num(lv['server_p50_ms'], '.0f') + ' ms':>10} {num(lv.get('server_cpu_pct'), '.0f') + ' %':>10} "
            f"{num(lv.get('loadgen_cpu_pct'), '.0f') + ' %':>10} {_share(lv.get('other_processes_cpu_share')):>9}"
        )
    c = result["corpus"]
    lines += [
        f"endpoint: {result['endpoint']}",
        f"corpus: {c['documents']} documents, {c['chunks']} chunks of {c['path']}; "
        f"questions: {result['questions']['count']} from {result['questions']['source']}",
        f"server: {result['server']}",
        f"load: {result['load']}",
        f"note: {result['sharing']}; server and locust CPU in % of one CPU, other CPU: what other "
        "processes took of all CPUs during the level; server p50: the answers' own timings.total_ms",
        f"machine: {result['machine']['cpu_model']}; load average before {result['machine']['loadavg_before']}",
    ]
    for lv in result["levels"]:
        for reason, count in lv["failures"].items():
            lines.append(f"errors at {lv['users']} users: {count} x {reason}")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _user_levels(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        levels = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter("a comma-separated list of user counts, e.g. 1,8,32") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter("a comma-separated list of user counts, each at least 1")
    return levels


@click.command("api-load", short_help="Queries/s and latency of the Q&A API under 1, 8 and 32 users (locust).")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-docs", type=click.IntRange(1), default=100, show_default=True, help="Documents to ingest.")
@click.option(
    "--qa",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="QA JSONL: ask its questions (their sources are ingested first); else the documents' titles.",
)
@click.option("--users", default="1,8,32", show_default=True, callback=_user_levels, help="Concurrent users per level.")
@click.option("--seconds", type=click.FloatRange(1), default=20.0, show_default=True, help="The longest a level runs.")
@click.option(
    "--max-requests",
    type=click.IntRange(1),
    default=5000,
    show_default=True,
    help="The most answers a level waits for.",
)
@click.option(
    "--quiet-wait",
    "quiet_wait_s",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Before each level, wait up to this long for other processes to leave the CPUs (0: do not wait).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def api_load(
    ctx: click.Context,
    corpus: Path,
    max_docs: int,
    qa: Path | None,
    users: list[int],
    seconds: float,
    max_requests: int,
    quiet_wait_s: float,
    as_json: bool,
) -> None:
    """Load-test the document Q&A API on loopback with locust: queries/s and latency per concurrency."""
    logging.basicConfig(level=logging.WARNING)
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="loopline-bench-api-load-") as tmp:
        result = measure(corpus.resolve(), qa, max_docs, users, seconds, max_requests, quiet_wait_s, Path(tmp))
    result["machine"] = {
        "cpu_model": cpu_model(),
        "cpus": cpus_available(),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "packages": package_versions(VERSIONED_PACKAGES, keep_missing=False),
    }
    result["command"] = " ".join([f"python -m {MODULE}", *given_args(ctx)])
    click.echo(json.dumps(result, indent=2) if as_json else render(result))
    errors = sum(lv["errors"] for lv in result["levels"])
    if errors:
        _say(f"{errors} requests failed")
        ctx.exit(1)


if __name__ == "__main__":
    api_load(prog_name=f"python -m {MODULE}")
