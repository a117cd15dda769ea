"""`loopline rag ingest-table`: a PostgreSQL table's rows as documents, kept current.

Without `--follow`: one catch-up (the snapshot the first time, the changes since the last
acknowledged position after that), then the counts. With it: the same, again and again, until
SIGINT or SIGTERM. A table whose columns no longer match the declaration stops the command
with the reason, a failed run and a `source_schema` alert (resolved by the next good catch-up).
"""

from __future__ import annotations

import json
import signal
import threading
from typing import TYPE_CHECKING

import click

from shared.config import Settings

if TYPE_CHECKING:
    from shared.ingestion.pg_cdc import CatchUp


@click.command("ingest-table")
@click.argument("dsn")
@click.option("--table", required=True, help="The table: name or schema.name.")
@click.option("--id", "id_col", required=True, help="Column with each row's unique id (the primary key for CDC).")
@click.option("--text", "text_col", required=True, help="Column with the text to index (read as Markdown).")
@click.option("--title", "title_col", default=None, help="Column with the title.")
@click.option(
    "--groups",
    "groups_col",
    default=None,
    help="Column with the groups that may read the row (text[] or comma-separated text); rows without: --default-groups.",
)
@click.option(
    "--updated-at", "updated_col", default=None, help="Timestamp column the polling fallback follows (needed there)."
)
@click.option(
    "--default-groups", default="public", show_default=True, help="Groups of rows that name none (comma-separated)."
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "cdc", "poll"]),
    default="auto",
    show_default=True,
    help="cdc: logical replication (deletes too); poll: the updated-at column (deletes only at a snapshot); "
    "auto: cdc when the server and role allow it.",
)
@click.option("--follow", is_flag=True, help="Keep streaming changes until stopped (Ctrl-C, SIGTERM).")
@click.option(
    "--snapshot", is_flag=True, help="Read the whole table again first (with polling, how deleted rows are seen)."
)
@click.option(
    "--interval",
    type=click.FloatRange(0.05),
    default=None,
    help="With --follow: seconds between looks when idle (default 0.25 for cdc, 5 for poll).",
)
@click.option(
    "--drop", is_flag=True, help="Retire this source at PostgreSQL: drop its replication slot and publication."
)
@click.option("--json", "as_json", is_flag=True, help="Print each catch-up as one JSON object.")
def ingest_table(
    dsn: str,
    table: str,
    id_col: str,
    text_col: str,
    title_col: str | None,
    groups_col: str | None,
    updated_col: str | None,
    default_groups: str,
    mode: str,
    follow: bool,
    snapshot: bool,
    interval: float | None,
    drop: bool,
    as_json: bool,
) -> None:
    """Index the rows of a PostgreSQL table at DSN and keep them current.

    DSN is a libpq connection string or URL (postgresql://user@host:5432/db); keep the password
    in PGPASSWORD or ~/.pgpass rather than on the command line. Change data capture needs
    wal_level=logical, a role WITH REPLICATION and the table's owner for the publication (once);
    otherwise --updated-at enables polling. Rows' groups decide who may read them, at once.
    """
    from rag.cli import open_backend
    from rag.jobs import groups_of
    from rag.table_sources import schema_alert, table_sink
    from shared.ingestion import source_name
    from shared.ingestion.pg_cdc import TableFollower
    from shared.ingestion.pg_table import SchemaChanged, SourceUnavailable, TableSourceError, TableSpec
    from shared.monitoring.rules import Monitor

    groups = groups_of(default_groups)
    try:
        spec = TableSpec(
            dsn=dsn,
            table=table,
            id=id_col,
            text=text_col,
            title=title_col,
            groups=groups_col,
            updated_at=updated_col,
            default_groups=tuple(groups),
        )
    except TableSourceError as exc:
        raise click.UsageError(str(exc)) from exc
    settings = Settings()
    with open_backend(settings) as (kind, service):
        if kind == "remote":
            raise click.ClickException(
                "a running service owns the embedded stores: list the table in LOOPLINE_TABLE_SOURCES_FILE for "
                "the service to follow, stop the service, or run both on a Qdrant server (LOOPLINE_QDRANT_URL) "
                "and a shared database (LOOPLINE_DATABASE_URL)"
            )
        source = spec.source()
        follower = TableFollower(spec, service.metadata, table_sink(service, spec), mode=mode, poll_s=interval)  # type: ignore[arg-type]
        with Monitor.from_settings(settings, service.metadata) as monitor:  # type: ignore[attr-defined]
            report = _Report(source, as_json, monitor)
            try:
                if drop:
                    follower.drop()
                    click.echo(f"dropped the replication slot and publication of {source_name(source)}")
                    return
                follower.open()
                if snapshot or not follow:
                    report(follower.catch_up(snapshot=snapshot))
            except (TableSourceError, SourceUnavailable) as exc:
                raise click.ClickException(str(exc)) from exc
            except SchemaChanged as exc:
                schema_alert(monitor.manager, spec, exc)
                raise click.ClickException(str(exc)) from exc
            finally:
                follower.close()
            if follow:
                _follow(spec, mode, interval, service, monitor, report)


def _follow(spec, mode: str, interval: float | None, service, monitor, report) -> None:  # noqa: ANN001
    """Follow on the service's retrying thread until SIGINT/SIGTERM (an outage waits, a schema change stops)."""
    from rag.table_sources import FollowedTables, TableSourceConfig

    config = TableSourceConfig(
        dsn=spec.dsn,
        table=spec.table,
        id=spec.id,
        text=spec.text,
        title=spec.title,
        groups=spec.groups,
        updated_at=spec.updated_at,
        default_groups=list(spec.default_groups),
        mode=mode,
        interval_s=interval,
    )
    tables = FollowedTables([config], service, monitor.manager, on_catch_up=report)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda _sig, _frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        tables.start()
        tables.wait(stop)
    finally:
        tables.stop(timeout=30)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    state = tables.states.get(spec.table, "")
    if state.startswith("stopped"):
        raise click.ClickException(state.removeprefix("stopped: "))


class _Report:
    """Prints a catch-up (JSON or a line) and clears a schema alert the source no longer deserves."""

    def __init__(self, source: str, as_json: bool, monitor) -> None:  # noqa: ANN001
        self.source = source
        self.as_json = as_json
        self.monitor = monitor

    def __call__(self, done: CatchUp) -> None:
        from rag.table_sources import SCHEMA_ALERT
        from shared.ingestion import source_name

        self.monitor.manager.resolve(SCHEMA_ALERT, self.source)
        counts = done.counts()
        dead = [dl for run in done.runs for dl in run.dead_letters]
        out = {
            "source": source_name(self.source),
            "mode": done.mode,
            "snapshot": done.snapshot,
            "position": done.position,
            "run_id": done.runs[-1].run_id if done.runs else None,
            "run_ids": [run.run_id for run in done.runs],
            "status": _status(done),
            **counts,
            "changes": done.changes,
            "transactions": done.transactions,
            "seconds": round(sum(run.seconds for run in done.runs), 3),
            "dead_letters": dead,
        }
        if self.as_json:
            click.echo(json.dumps(out), nl=True)
            return
        what = "snapshot" if done.snapshot else f"{done.transactions} transactions" if done.mode == "cdc" else "changes"
        click.echo(
            f"{out['source']} ({done.mode}, {what}): {counts['added']} added, {counts['updated']} updated, "
            f"{counts['unchanged']} unchanged, {counts['deleted']} deleted, {counts['failed']} failed "
            f"({counts['chunks']} chunks) at {done.position or 'start'}"
        )
        for dl in dead:
            click.echo(f"  dead letter: {dl['path']}: {dl['reason']}")


def _status(done: CatchUp) -> str:
    if not done.runs:
        return "unchanged"
    return "partial" if any(run.status == "partial" for run in done.runs) else "succeeded"
