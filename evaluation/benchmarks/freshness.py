"""How fresh are answers: seconds from a committed change to an answer that reflects it.

    python -m evaluation.benchmarks.freshness CORPUS [--rows 200] [--changes 200] [--folder-changes 20]
        [--dsn DSN] [--events 400] [--nats-url nats://127.0.0.1:4222] [--json]

One run, one machine, side by side:

- **table (CDC)**: CORPUS's Markdown files become the rows of a PostgreSQL table (a private
  cluster with wal_level=logical started for the run, unless --dsn names a database that has
  it); `TableFollower.follow` runs as `loopline rag ingest-table --follow` does (a look every
  0.25 s when idle). Each of --changes changes appends a section with a fresh code to one row
  and commits; the clock runs from the commit's return until `RagService.ask` (extractive, as
  an employee asks) answers the question about that code with it in the answer or its cited
  passages. Before each change, untimed, the previous row gets its text back, so one such
  section exists at a time (two hundred near-identical ones would compete in retrieval). Reported: p50 / p95 / max seconds, and the changes that never showed (30 s).
  Then every row is changed in one transaction: rows/s and chunks/s of one catch-up with
  embedding.
- **events (JetStream)**: --events document events published to a stream of NATS
  JetStream, drained by the durable consumer with embedding: events/s (skipped with the
  reason when NATS cannot be reached).
- **folder**: the same documents as files; a change is a rewritten file, and what makes it
  answerable is a re-sync of the folder (`loopline rag ingest FOLDER`, which a scheduled
  sync runs every LOOPLINE_SYNC_INTERVAL): seconds from the write to the answer, the sync's
  own duration included but not the wait for the schedule.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import click

from evaluation.benchmarks.command import given_args
from shared.redact import masked_text

log = logging.getLogger(__name__)
MODULE = "evaluation.benchmarks.freshness"
TIMEOUT_S = 30.0
MAX_CHARS = 6_000  # per document: the benchmark is about latency, not about long documents


def _documents(corpus: Path, limit: int) -> list[tuple[str, str]]:
    """(title, text) of the first `limit` non-empty Markdown files of the corpus, in path order."""
    docs = []
    for path in sorted(corpus.rglob("*.md")):
        if any(part.startswith(".") for part in path.relative_to(corpus).parts):
            continue
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        if len(text) < 200:
            continue
        docs.append((path.stem.replace("_", " ").replace("-", " "), _cut(text)))
        if len(docs) == limit:
            break
    if len(docs) < limit:
        raise click.ClickException(f"{corpus} has only {len(docs)} Markdown files of 200+ characters; lower --rows")
    return docs


def _cut(text: str) -> str:
    """The document up to MAX_CHARS, cut at a paragraph, with a code fence left open closed again
    (or the section appended by a change would be read as code, not as a heading)."""
    if len(text) > MAX_CHARS:
        head = text[:MAX_CHARS]
        for mark in ("\n\n", "\n"):  # a paragraph, else a line (a long table), in the second half
            if head.rfind(mark) > MAX_CHARS // 2:
                head = head[: head.rfind(mark)]
                break
        text = head
    return text + "\n```" if text.count("```") % 2 else text


def _marker(n: int) -> tuple[str, str, str]:
    """A section with a fresh code under a made-up cabinet name, the question about it, and the code.

    The name is a nonsense word of its own, so the question finds that section and no other; a
    section of its own (a heading) keeps it out of the row's last chunk, where the rest of the
    text would dilute its similarity below the abstention threshold.
    """
    rng = random.Random(n)
    name = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))
    code = f"{rng.randrange(10_000):04d}-{n:04d}"
    return (
        f"\n\n## The {name} cabinet\n\nThe locker code of the {name} cabinet is {code}.",
        f"What is the locker code of the {name} cabinet?",
        code,
    )


def _shows(service, question: str, code: str) -> bool:  # noqa: ANN001
    from shared.auth import Principal

    got = service.ask(question, Principal(name="bench", admin=True))
    return code in got.answer or any(code in c.text for c in got.citations)


def _wait_answer(service, question: str, code: str) -> float | None:  # noqa: ANN001
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < TIMEOUT_S:
        if _shows(service, question, code):
            return time.perf_counter() - t0
        time.sleep(0.02)
    return None


def _summary(latencies: list[float | None]) -> dict:
    seen = sorted(x for x in latencies if x is not None)
    if not seen:
        return {"n": len(latencies), "missed": len(latencies)}
    return {
        "n": len(latencies),
        "missed": len(latencies) - len(seen),
        "p50_s": round(statistics.median(seen), 3),
        "p95_s": round(seen[min(len(seen) - 1, int(0.95 * len(seen)))], 3),
        "max_s": round(seen[-1], 3),
    }


def _service(home: Path):  # noqa: ANN202
    from rag.service import RagService
    from shared.config import Settings

    return RagService(Settings(home=home))


def bench_table(dsn: str, docs: list[tuple[str, str]], changes: int, work: Path) -> dict:
    """Snapshot, then `changes` single-row commits followed live, then one bulk change, in a
    database of its own that goes afterwards (with its replication slot), whatever happens."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    db = f"freshness_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    db_dsn = make_conninfo(dsn, dbname=db)
    try:
        return _bench_table(db_dsn, docs, changes, work)
    finally:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()"
            )
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')


def _bench_table(db_dsn: str, docs: list[tuple[str, str]], changes: int, work: Path) -> dict:
    import psycopg

    from rag.table_sources import table_sink
    from shared.ingestion.pg_cdc import TableFollower
    from shared.ingestion.pg_table import TableSpec

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE pages (id integer PRIMARY KEY, title text NOT NULL, body text NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pages VALUES (%s, %s, %s)", [(i, t, b) for i, (t, b) in enumerate(docs, start=1)]
            )
    spec = TableSpec(dsn=db_dsn, table="pages", id="id", text="body", title="title")
    out: dict = {"rows": len(docs)}
    with _service(work / "table-home") as service, psycopg.connect(db_dsn, autocommit=True) as conn:
        service.warm_up()
        follower = TableFollower(spec, service.metadata, table_sink(service, spec), poll_s=0.25).open()
        t0 = time.perf_counter()
        snap = follower.catch_up()
        snap_s = time.perf_counter() - t0
        out["snapshot"] = {
            "seconds": round(snap_s, 2),
            "rows_per_s": round(len(docs) / snap_s, 1),
            "chunks_per_s": round(snap.counts()["chunks"] / snap_s, 1),
            "chunks": snap.counts()["chunks"],
        }
        stop = threading.Event()
        thread = threading.Thread(target=follower.follow, args=(stop,), name="follow", daemon=True)
        thread.start()
        latencies: list[float | None] = []
        try:
            previous: tuple[int, str, str] | None = None
            for n in range(changes):
                sentence, question, code = _marker(n)
                row = n % len(docs) + 1
                if previous is not None:  # one code at a time: near-identical sections would compete in retrieval
                    _take_back(conn, service, docs, previous)
                conn.execute("UPDATE pages SET body = %s WHERE id = %s", (docs[row - 1][1] + sentence, row))
                latencies.append(_wait_answer(service, question, code))
                previous = (row, question, code)
                if latencies[-1] is None:
                    log.warning("change %d (row %d): no answer showed %s within %.0f s", n, row, code, TIMEOUT_S)
                if (n + 1) % 50 == 0:
                    click.echo(f"  table: {n + 1}/{changes} changes", err=True)
        finally:
            stop.set()
            thread.join(30)
        out["change_to_answer"] = _summary(latencies)
        conn.execute("UPDATE pages SET body = body || ' (revised)'")
        t0 = time.perf_counter()
        bulk = follower.catch_up()
        bulk_s = time.perf_counter() - t0
        out["bulk_change"] = {
            "rows": bulk.counts()["updated"],
            "seconds": round(bulk_s, 2),
            "rows_per_s": round(bulk.counts()["updated"] / bulk_s, 1),
            "chunks_per_s": round(bulk.counts()["chunks"] / bulk_s, 1),
        }
        follower.close()
    return out


def _take_back(conn, service, docs: list[tuple[str, str]], previous: tuple[int, str, str]) -> None:  # noqa: ANN001
    """Restore the row of the previous change (untimed) and wait until its code no longer answers."""
    row, question, code = previous
    conn.execute("UPDATE pages SET body = %s WHERE id = %s", (docs[row - 1][1], row))
    deadline = time.perf_counter() + TIMEOUT_S
    while _shows(service, question, code) and time.perf_counter() < deadline:
        time.sleep(0.02)


def bench_folder(docs: list[tuple[str, str]], changes: int, work: Path) -> dict:
    """The same documents as files: a change is answerable after the folder's next sync."""
    folder = work / "folder"
    folder.mkdir()
    paths = []
    for i, (title, body) in enumerate(docs, start=1):
        p = folder / f"page-{i:04d}.md"
        p.write_text(f"# {title}\n\n{body}", encoding="utf-8")
        paths.append(p)
    out: dict = {"files": len(docs)}
    with _service(work / "folder-home") as service:
        service.warm_up()
        t0 = time.perf_counter()
        service.ingest(folder, ["public"])
        out["first_sync_s"] = round(time.perf_counter() - t0, 2)
        latencies: list[float | None] = []
        syncs = []
        originals = [p.read_text(encoding="utf-8") for p in paths]
        for n in range(changes):
            sentence, question, code = _marker(10_000 + n)
            i = n % len(paths)
            if n:  # as for the table: the previous file gets its text back first, untimed
                paths[(n - 1) % len(paths)].write_text(originals[(n - 1) % len(paths)], encoding="utf-8")
                service.ingest(folder, ["public"])
            t0 = time.perf_counter()
            paths[i].write_text(originals[i] + sentence, encoding="utf-8")
            service.ingest(folder, ["public"])
            syncs.append(time.perf_counter() - t0)
            waited = _wait_answer(service, question, code)
            latencies.append(None if waited is None else time.perf_counter() - t0)
        out["change_to_answer"] = _summary(latencies)
        out["sync_s_p50"] = round(statistics.median(syncs), 3)
    return out


def bench_events(url: str, docs: list[tuple[str, str]], events: int, work: Path) -> dict:
    """Document events through NATS JetStream with embedding: events/s of one drain."""
    from evaluation.benchmarks.event_throughput import measure_event_throughput

    with _service(work / "events-home") as service:
        service.warm_up()
        return measure_event_throughput(service, url, docs, events)


@click.command("freshness", short_help="Seconds from a committed change to an answer (table, events, folder).")
@click.argument("corpus", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--rows", type=click.IntRange(1), default=200, show_default=True, help="Documents (rows, files).")
@click.option("--changes", type=click.IntRange(1), default=200, show_default=True, help="Row changes timed.")
@click.option("--folder-changes", type=click.IntRange(0), default=20, show_default=True, help="File changes timed.")
@click.option("--events", type=click.IntRange(0), default=400, show_default=True, help="Document events drained.")
@click.option("--dsn", default=None, help="A PostgreSQL with wal_level=logical (default: a private cluster).")
@click.option("--nats-url", default="nats://127.0.0.1:4222", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def freshness(
    ctx: click.Context,
    corpus: Path,
    rows: int,
    changes: int,
    folder_changes: int,
    events: int,
    dsn: str | None,
    nats_url: str,
    as_json: bool,
) -> None:
    """Change-to-answer seconds through change data capture, JetStream events and a folder re-sync."""
    from evaluation.benchmarks.pg_cluster import ClusterUnavailable, logical_cluster

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    docs = _documents(corpus, rows)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="loopline-freshness-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        if dsn is None:
            try:
                dsn = stack.enter_context(logical_cluster()).dsn
            except ClusterUnavailable as exc:
                raise click.ClickException(f"{exc}; give --dsn of a PostgreSQL with wal_level=logical") from exc
        click.echo(f"table: {rows} rows, {changes} changes…", err=True)
        result["table"] = bench_table(dsn, docs, changes, work)
        if events:
            click.echo(f"events: {events} through JetStream…", err=True)
            try:
                result["events"] = bench_events(nats_url, docs, events, work)
            except (OSError, TimeoutError, ConnectionError) as exc:
                result["events"] = {"skipped": masked_text(f"NATS at {nats_url} not reachable: {exc}")}
        if folder_changes:
            click.echo(f"folder: {rows} files, {folder_changes} changes…", err=True)
            result["folder"] = bench_folder(docs, folder_changes, work)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    result["command"] = masked_text(" ".join([f"python -m {MODULE}", *given_args(ctx)]))
    click.echo(json.dumps(result, indent=2) if as_json else render(result))


def render(result: dict) -> str:
    lines = [f"{'path':<26} {'n':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'missed':>6}"]
    for name, label in (("table", "table (CDC, follow)"), ("folder", "folder (re-sync)")):
        got = result.get(name, {}).get("change_to_answer")
        if got:
            lines.append(
                f"{label:<26} {got['n']:>5} {got.get('p50_s', float('nan')):>7.3f} "
                f"{got.get('p95_s', float('nan')):>7.3f} {got.get('max_s', float('nan')):>7.3f} {got['missed']:>6}"
            )
    table = result.get("table", {})
    if table:
        snap, bulk = table["snapshot"], table["bulk_change"]
        lines.append(
            f"table snapshot: {table['rows']} rows in {snap['seconds']} s ({snap['rows_per_s']} rows/s, "
            f"{snap['chunks_per_s']} chunks/s); one transaction changing every row: {bulk['rows_per_s']} rows/s, "
            f"{bulk['chunks_per_s']} chunks/s"
        )
    events = result.get("events")
    if events:
        lines.append(
            "events: " + (events["skipped"] if "skipped" in events else json.dumps(events, separators=(", ", ": ")))
        )
    folder = result.get("folder")
    if folder:
        lines.append(
            f"folder: first sync {folder['first_sync_s']} s, a re-sync after one change {folder['sync_s_p50']} s"
        )
    m = result["machine"]
    lines += ["", f"{m['cpus']} CPUs, Python {m['python']}; command: {result['command']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    freshness()
