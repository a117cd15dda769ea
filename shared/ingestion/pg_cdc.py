"""Following a PostgreSQL table: a snapshot, then its changes, with a position that survives crashes.

Change data capture reads the table's publication through a logical replication slot with
PostgreSQL's own `pgoutput` plugin, over the SQL interface of logical decoding
(`pg_logical_slot_peek_binary_changes`): psycopg 3 has no replication-protocol connection, and
the SQL interface needs no extra package nor a long-lived walsender. Changes are only *peeked*;
the slot is advanced past a transaction after its rows reached the index, so a crash between
read and write replays them, and change detection by content hash makes the replay a no-op
for what was already written. From the stream only the keys of touched rows are taken: the
rows are re-read after the commit (a key no longer there was deleted), so the index converges
on the table whatever the order of events. A TRUNCATE re-reads the whole table.

Without logical replication (wal_level below `logical`, or a role without REPLICATION), the
polling fallback re-reads rows whose updated-at column moved (with an overlap window for late
commits). It has the same guarantees except one: a deleted row is only noticed by a full
snapshot (`snapshot=True`), never by polling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.ingestion.pg_table import (
    SchemaChanged,
    SourceUnavailable,
    TableColumn,
    TableSourceError,
    TableSpec,
    check_columns,
    read_rows,
    table_columns,
)
from shared.ingestion.pgoutput import Commit, Relation, RowChange, Truncate, decode, lsn_text
from shared.ingestion.pipeline import RunSummary, fingerprint, summed_counts
from shared.ingestion.records import item_hash
from shared.ingestion.sources import SourceItem
from shared.metadata.store import MetadataStore

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[SourceItem], Sequence[str], bool], RunSummary]
"""`sink(items, removed_keys, complete)`: index rows (all the table has when `complete`), drop removed keys."""
Mode = Literal["auto", "cdc", "poll"]
RUN_KIND = "table"
IDLE_S = {"cdc": 0.25, "poll": 5.0}  # default seconds between looks at an idle table


@dataclass
class CatchUp:
    """What one catch-up did: its runs (none when nothing changed) and the position reached."""

    mode: str
    runs: list[RunSummary]
    position: str
    snapshot: bool = False
    changes: int = 0  # row events read from the stream
    transactions: int = 0

    def counts(self) -> dict[str, int]:
        """The runs' counts added up (a long backlog is written in several windows)."""
        return summed_counts(self.runs)


@dataclass
class _Pending:
    keys: set[str] = field(default_factory=set)
    truncated: bool = False
    end_lsn: int | None = None
    transactions: int = 0
    changes: int = 0


class TableFollower:
    """Keeps one table's rows in the index: `catch_up()` once, or `follow(stop)` until stopped."""

    def __init__(
        self,
        spec: TableSpec,
        store: MetadataStore,
        sink: Sink,
        *,
        mode: Mode = "auto",
        poll_s: float | None = None,
        overlap_s: float = 60.0,
        heartbeat_s: float = 300.0,
        peek_limit: int = 10_000,
        connect: Callable[[str], Any] | None = None,
    ) -> None:
        self.spec = spec
        self.source = spec.source()
        self.store = store
        self.sink = sink
        self.requested = mode
        self.poll_s = poll_s  # seconds between looks when idle; None: 0.25 (cdc) or 5 (poll) once open
        self.overlap_s = overlap_s
        self.heartbeat_s = heartbeat_s
        self.peek_limit = peek_limit
        self._connect = connect or _autocommit_connection
        self._conn: Any = None
        self._columns: dict[str, TableColumn] = {}
        self._id_index: int | None = None  # the id column's place in the relation's rows
        self.mode: str | None = None

    # --- lifecycle ---------------------------------------------------------------------
    def open(self) -> TableFollower:
        """Connect, check the table against the declaration, choose the mode, set up the slot."""
        self._conn = self._connect(self.spec.dsn)
        self._columns = table_columns(self._conn, self.spec)
        state = self._state()
        try:
            check_columns(self.spec, self._columns, id_type_oid=state.get("id_type_oid"))
        except SchemaChanged as exc:
            self._stopped(exc)
            raise
        self.mode = self._choose_mode(state)
        if self.poll_s is None:
            self.poll_s = IDLE_S[self.mode]
        if self.mode == "cdc":
            self._ensure_publication_and_slot()
        log.info("table source %s: %s mode", self.source, self.mode)
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> TableFollower:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------
    def catch_up(self, *, snapshot: bool = False) -> CatchUp:
        """Bring the index up to the table as of now: the snapshot the first time (or when asked:
        polling sees deleted rows only then), then the changes."""
        try:
            state = self._state()
            if snapshot or self._needs_snapshot(state):
                return self._snapshot()
            if self.mode == "cdc":
                return self._catch_up_cdc()
            return self._catch_up_poll(state)
        except SchemaChanged as exc:
            self._stopped(exc)
            raise

    def _stopped(self, exc: SchemaChanged) -> None:
        """A failed run says why the source stopped (the run_failed alert and freshness see it)."""
        run_id = self.store.start_run(self.source, RUN_KIND)
        self.store.finish_run(run_id, status="failed", error=str(exc))
        log.error("table source %s stopped: %s", self.source, exc)

    def follow(self, stop: threading.Event, on_catch_up: Callable[[CatchUp], None] | None = None) -> None:
        """Catch up again and again (every `poll_s` when idle) until `stop` is set.

        While nothing changes an empty run is recorded every `heartbeat_s`, so the source's
        freshness says it is followed, not abandoned.
        """
        last_run = time.monotonic()
        while not stop.is_set():
            done = self.catch_up()
            if not done.runs and time.monotonic() - last_run >= self.heartbeat_s:
                done.runs.append(self.sink([], [], False))
            if done.runs:
                last_run = time.monotonic()
                if on_catch_up is not None:
                    on_catch_up(done)
            if not done.runs:
                stop.wait(self.poll_s or IDLE_S["cdc"])

    # --- modes ---------------------------------------------------------------------------
    def _choose_mode(self, state: dict) -> str:
        ok, why = self._logical_replication()
        if self.requested == "cdc" and not ok:
            raise TableSourceError(
                f"change data capture is not possible here: {why}; use --mode poll with --updated-at"
            )
        if self.requested == "cdc" or (self.requested == "auto" and ok):
            return "cdc"
        if not self.spec.updated_at:
            raise TableSourceError(
                f"change data capture is not possible here ({why}) and the polling fallback needs --updated-at COL"
            )
        if self.requested == "auto":
            log.warning(
                "table source %s: %s; polling %s instead (deleted rows are not seen between snapshots)",
                self.source,
                why,
                self.spec.updated_at,
            )
        return "poll"

    def _logical_replication(self) -> tuple[bool, str]:
        kind = self._conn.execute(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (self.spec.schema_name, self.spec.table_name),
        ).fetchone()[0]
        if kind not in ("r", "p"):  # a view (a query as a source) or a foreign table: nothing to publish
            return False, f"{self.spec.qualified} is not a table (a view is read by polling)"
        wal_level = self._conn.execute("SHOW wal_level").fetchone()[0]
        if wal_level != "logical":
            return False, f"wal_level is '{wal_level}' (set wal_level = logical and restart PostgreSQL)"
        allowed = self._conn.execute(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()[0]
        if not allowed:
            return False, "this role lacks the REPLICATION attribute (ALTER ROLE … WITH REPLICATION)"
        return True, ""

    def _ensure_publication_and_slot(self) -> None:
        self._check_replica_identity()
        name = self.spec.slug()
        if self._conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone() is None:
            from psycopg import errors, sql

            try:
                self._conn.execute(
                    sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.{}").format(
                        sql.Identifier(name),
                        sql.Identifier(self.spec.schema_name),
                        sql.Identifier(self.spec.table_name),
                    )
                )
            except errors.InsufficientPrivilege as exc:
                raise TableSourceError(
                    f"creating the publication needs the table's owner: ask them to run "
                    f"CREATE PUBLICATION {name} FOR TABLE {self.spec.qualified}; ({exc.diag.message_primary})"
                ) from exc
            log.info("created publication %s for %s", name, self.spec.qualified)
        if self._conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone() is None:
            self._conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
            log.info("created replication slot %s (drop it when this source is retired: it keeps WAL)", name)
            self._save(position="", snapshot_done=False)

    def _check_replica_identity(self) -> None:
        """Deletes carry only the replica identity: the id column must be it (or the identity FULL)."""
        ident, keys = self._conn.execute(
            """
            SELECT c.relreplident::text,
                   array(SELECT a.attname::text FROM pg_index i
                         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                         WHERE i.indrelid = c.oid
                           AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relname = %s
            """,
            (self.spec.schema_name, self.spec.table_name),
        ).fetchone()
        if ident == "f" or list(keys) == [self.spec.id]:
            return
        raise TableSourceError(
            f"{self.spec.qualified}: change data capture needs '{self.spec.id}' as the primary key (or REPLICA IDENTITY "
            f"FULL): deletes carry only the replica identity, and publishing a table without one refuses its UPDATEs; "
            "add one, or use --mode poll"
        )

    def _needs_snapshot(self, state: dict) -> bool:
        return not state.get("snapshot_done") or state.get("mode") != self.mode

    def _snapshot(self) -> CatchUp:
        """Every row, as all the source has (rows indexed before and gone now leave the index)."""
        position = self._current_lsn() if self.mode == "cdc" else ""
        watermark = self._max_updated_at() if self.mode == "poll" else None
        items = list(read_rows(self._conn, self.spec, self.source))
        run = self.sink(items, [], True)
        if position:  # what committed before the read is in it: the slot need not replay it
            self._advance(position)
        self._save(position=position or watermark or "", snapshot_done=True)
        log.info("table source %s: snapshot of %d rows indexed (run #%s)", self.source, len(items), run.run_id)
        return CatchUp(mode=str(self.mode), runs=[run], position=self._state().get("position", ""), snapshot=True)

    def _catch_up_cdc(self) -> CatchUp:
        """Read the slot up to the WAL position of now, a window of transactions at a time.

        Each window's rows are written before the slot moves past it. Rows are read as they are
        now, so a table whose columns no longer fit stops the catch-up (SchemaChanged) before any
        write; once the table or the declaration is fixed, the next catch-up goes on from there.
        """
        target = self._current_lsn()
        slot = self.spec.slug()
        done = CatchUp(mode="cdc", runs=[], position="")
        while True:
            rows = self._conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, %s, "
                "'proto_version', '1', 'publication_names', %s)",
                (slot, target, self.peek_limit, slot),
            ).fetchall()
            window = _Pending()
            self._read_changes(rows, window)
            if window.end_lsn is not None:
                self._check_schema()  # rows are re-read as they are now: their columns must still fit
            done.changes += window.changes
            done.transactions += window.transactions
            if window.truncated:
                done.runs.append(self.sink(list(read_rows(self._conn, self.spec, self.source)), [], True))
                done.snapshot = True
                log.info("table source %s: truncated at the source; the table was read again", self.source)
            elif window.keys:
                done.runs.append(self._apply_keys(sorted(window.keys)))
            if window.end_lsn is None:  # nothing (more) of this table committed before the target
                # Other tables' transactions send nothing (PostgreSQL 15+ skips them), so the slot
                # is moved to the target by hand: decoding stops at commits, none of ours lies before it.
                self._advance(target)
                break
            self._advance(lsn_text(window.end_lsn))
        done.position = self._state().get("position", "")
        return done

    def _read_changes(self, rows: Sequence[tuple], pending: _Pending) -> None:
        """Gather the keys of the committed transactions among `rows`."""
        txn_keys: set[str] = set()
        txn_truncated = False
        txn_changes = 0
        for (data,) in rows:
            msg = decode(data)
            if isinstance(msg, Relation):
                if msg.qualified == self.spec.qualified:
                    names = [c.name for c in msg.columns]
                    self._id_index = names.index(self.spec.id) if self.spec.id in names else None
            elif isinstance(msg, RowChange) and self._id_index is not None:
                # An UPDATE of the id names the old one too: re-reading it finds nothing, so it is removed.
                for values in (msg.values, msg.old_values or ()):
                    if len(values) > self._id_index and isinstance(values[self._id_index], str):
                        txn_keys.add(values[self._id_index])
                txn_changes += 1
            elif isinstance(msg, Truncate):
                txn_truncated = True
            elif isinstance(msg, Commit):
                pending.keys |= txn_keys
                pending.truncated |= txn_truncated
                pending.changes += txn_changes
                pending.transactions += 1
                pending.end_lsn = msg.end_lsn
                txn_keys, txn_truncated, txn_changes = set(), False, 0

    def _check_schema(self) -> None:
        """The table's columns from the catalog against the declaration; SchemaChanged stops the source
        before anything of the changed table is written (the slot stays where it was)."""
        try:
            self._columns = table_columns(self._conn, self.spec)
        except TableSourceError as exc:  # it was there when the source started: dropped or renamed since
            raise SchemaChanged(f"{exc}. The source is stopped; restore the table or declare the new one") from exc
        check_columns(self.spec, self._columns, id_type_oid=self._state().get("id_type_oid"))

    def _apply_keys(self, keys: Sequence[str]) -> RunSummary:
        id_type = self._columns[self.spec.id].type
        items = list(read_rows(self._conn, self.spec, self.source, ids=keys, id_type=id_type))
        found = {it.path for it in items}
        removed = [self.spec.key(k) for k in keys if self.spec.key(k) not in found]
        return self.sink(items, removed, False)

    def _advance(self, lsn: str) -> None:
        self._conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.spec.slug(), lsn))
        self._save(position=lsn, snapshot_done=True)

    def _catch_up_poll(self, state: dict) -> CatchUp:
        self._check_schema()
        since = state.get("position") or None
        watermark = self._max_updated_at()
        column_type = self._columns[str(self.spec.updated_at)].type
        rows = read_rows(
            self._conn, self.spec, self.source, changed_since=since, since_type=column_type, overlap_s=self.overlap_s
        )
        items = self._not_indexed(rows)
        runs = [self.sink(items, [], False)] if items else []
        position = watermark or state.get("position", "")
        self._save(position=position, snapshot_done=True)
        return CatchUp(mode="poll", runs=runs, position=position, changes=len(items))

    def _not_indexed(self, items: Iterable[SourceItem]) -> list[SourceItem]:
        """Rows of the overlap window that the index already holds as they are are left out."""
        indexed = self.store.documents_of_source(self.source)
        versions = {path: fingerprint(doc.content_hash, doc.groups) for path, doc in indexed.items()}
        readers = self.spec.default_groups
        return [
            it
            for it in items
            if it.invalid
            or versions.get(it.path) != fingerprint(item_hash(it), it.groups if it.groups is not None else readers)
        ]

    # --- position ----------------------------------------------------------------------
    def _state(self) -> dict:
        row = self.store.source_position(self.source)
        if row is None:
            return {}
        return {**row.state, "position": row.position}

    def _save(self, *, position: str, snapshot_done: bool) -> None:
        id_col = self._columns.get(self.spec.id)
        state = {
            "mode": self.mode,
            "snapshot_done": snapshot_done,
            "id_type_oid": id_col.type_oid if id_col else None,
            "columns": {c: self._columns[c].type for c in self.spec.columns().values() if c in self._columns},
        }
        if self.mode == "cdc":
            state["slot"] = state["publication"] = self.spec.slug()
        self.store.save_source_position(self.source, kind=f"table-{self.mode}", position=position, state=state)

    def _current_lsn(self) -> str:
        return self._conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

    def _max_updated_at(self) -> str | None:
        """The newest updated-at, as text in the column's own type (a naive timestamp stays naive)."""
        from psycopg import sql

        return self._conn.execute(
            sql.SQL("SELECT max({})::text FROM {}.{}").format(
                sql.Identifier(self.spec.updated_at or self.spec.id),
                sql.Identifier(self.spec.schema_name),
                sql.Identifier(self.spec.table_name),
            )
        ).fetchone()[0]

    def drop(self) -> None:
        """Retire the source at PostgreSQL: drop its slot (which holds WAL) and publication.

        Needs only a connection: a table that is gone or changed must not keep its slot.
        """
        if self._conn is None:
            self._conn = self._connect(self.spec.dsn)
        name = self.spec.slug()
        if self._conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (name,)).fetchone():
            self._conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        from psycopg import sql

        self._conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
        self.store.forget_source_position(self.source)


def _autocommit_connection(dsn: str) -> Any:
    import psycopg

    try:
        # Bounded waits: a half-open connection must fail over to a reconnect, not hang the follower.
        return psycopg.connect(
            dsn,
            autocommit=True,
            application_name="loopline-table-source",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
    except psycopg.OperationalError as exc:
        raise SourceUnavailable(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc
