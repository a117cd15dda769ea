"""Tables followed by `loopline serve`: the sources file, and a thread per table.

`loopline rag ingest-table --follow` follows one table from a shell; a service on the embedded
stores owns them, so there the tables it should follow are listed in LOOPLINE_TABLE_SOURCES_FILE
and followed on threads of the service, through the same `TableFollower`. An outage of
PostgreSQL delays a table (the thread reconnects with a growing pause; the slot keeps the
changes); a table whose columns no longer fit its declaration stops, with a `source_schema`
alert, until the service restarts with the table or the file fixed (a stopped table does not
catch up again by itself: the restart is what resolves the alert).

    tables:
      - dsn_env: WIKI_DSN          # the DSN from this variable (keeps a password out of the file)
        table: public.articles
        id: id
        text: body
        title: title
        groups: readers            # text[] or comma-separated; rows without: default_groups
        updated_at: updated_at     # the polling fallback's column
        default_groups: [public]
        mode: auto                 # cdc | poll | auto
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.service import RagService
from shared.ingestion.pg_cdc import CatchUp, Sink, TableFollower
from shared.ingestion.pg_table import SchemaChanged, TableSourceError, TableSpec
from shared.monitoring.alerts import AlertManager

log = logging.getLogger(__name__)
SCHEMA_ALERT = "source_schema"
RETRY_S = (1.0, 60.0)  # first and longest pause before reconnecting to a table's database


class TableSourceConfig(BaseModel):
    """One table of the sources file."""

    model_config = ConfigDict(extra="forbid")

    dsn: str | None = Field(None, description="libpq DSN or URL (no password: PGPASSWORD, ~/.pgpass or dsn_env).")
    dsn_env: str | None = Field(None, description="Environment variable holding the DSN.")
    table: str
    id: str
    text: str
    title: str | None = None
    groups: str | None = None
    updated_at: str | None = None
    default_groups: list[str] = Field(default_factory=lambda: ["public"], min_length=1)
    mode: Literal["auto", "cdc", "poll"] = "auto"
    interval_s: float | None = Field(None, ge=0.05, description="Seconds between looks when idle.")

    @model_validator(mode="after")
    def _one_dsn(self) -> TableSourceConfig:
        if (self.dsn is None) == (self.dsn_env is None):
            raise ValueError("give exactly one of dsn and dsn_env")
        return self

    def spec(self) -> TableSpec:
        dsn = self.dsn
        if self.dsn_env is not None:
            dsn = os.environ.get(self.dsn_env)
            if not dsn:
                raise TableSourceError(f"table {self.table}: the environment variable {self.dsn_env} is not set")
        return TableSpec(
            dsn=str(dsn),
            table=self.table,
            id=self.id,
            text=self.text,
            title=self.title,
            groups=self.groups,
            updated_at=self.updated_at,
            default_groups=tuple(sorted(set(self.default_groups))),
        )


class TableSourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tables: list[TableSourceConfig] = Field(default_factory=list)


def load_table_sources(path: Path) -> list[TableSourceConfig]:
    """The tables of the sources file; a file that does not fit says where (the service does not start)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return TableSourcesFile.model_validate(data).tables
    except OSError as exc:
        raise ValueError(f"LOOPLINE_TABLE_SOURCES_FILE {path}: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"LOOPLINE_TABLE_SOURCES_FILE {path}: {exc}") from exc


def schema_alert(alerts: AlertManager, spec: TableSpec, exc: SchemaChanged) -> None:
    """The critical alert of a stopped table (its key is the source; a good catch-up resolves it)."""
    alerts.raise_alert(
        SCHEMA_ALERT, spec.source(), "critical", str(exc), {"table": spec.qualified, "columns": spec.columns()}
    )


def table_sink(service: RagService, spec: TableSpec) -> Sink:
    """Where a table's rows go: the service's index, as runs of kind `table` of the table's source."""
    source, groups = spec.source(), list(spec.default_groups)

    def sink(items, removed, complete):  # noqa: ANN001, ANN202
        return service.ingest_records(source, items, removed=removed, groups=groups, complete=complete, kind="table")

    return sink


class FollowedTables:
    """One thread per configured table, each keeping its rows current in the service's index.

    A thread reconnects after an outage (pauses from 1 s to a minute; the slot keeps the
    changes) and stops for good on a schema change (with the alert) or an unusable declaration;
    `states` says which, per table.
    """

    def __init__(
        self,
        configs: Sequence[TableSourceConfig],
        service: RagService,
        alerts: AlertManager,
        *,
        on_catch_up: Callable[[CatchUp], None] | None = None,
    ) -> None:
        self.configs = list(configs)
        self.service = service
        self.alerts = alerts
        self.on_catch_up = on_catch_up
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.states: dict[str, str] = {}  # table → following | retrying: … | stopped: …

    def start(self) -> None:
        for config in self.configs:
            thread = threading.Thread(target=self._follow, args=(config,), name=f"table-{config.table}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def wait(self, stop: threading.Event) -> None:
        """Return when `stop` is set or every table has stopped on its own."""
        while not stop.wait(0.2):
            if not any(thread.is_alive() for thread in self._threads):
                return

    def _follow(self, config: TableSourceConfig) -> None:
        try:
            self._follow_until_stopped(config)
        except Exception as exc:  # never a silent death: the state and the log say why
            self.states[config.table] = f"stopped: {type(exc).__name__}: {exc}"
            log.exception("table %s is no longer followed", config.table)

    def _follow_until_stopped(self, config: TableSourceConfig) -> None:
        pause = RETRY_S[0]
        while not self._stop.is_set():
            try:
                spec = config.spec()
                follower = TableFollower(
                    spec,
                    self.service.metadata,
                    table_sink(self.service, spec),
                    mode=config.mode,
                    poll_s=config.interval_s,
                )
            except TableSourceError as exc:
                self._stopped(config, str(exc))
                return
            try:
                follower.open()
                self.states[config.table] = "following"
                pause = RETRY_S[0]
                follower.follow(self._stop, on_catch_up=lambda done, key=spec.source(): self._caught_up(key, done))
                return
            except SchemaChanged as exc:
                schema_alert(self.alerts, spec, exc)
                self._stopped(config, str(exc))
                return
            except TableSourceError as exc:
                self._stopped(config, str(exc))
                return
            except Exception as exc:  # the database went away: the slot keeps the changes, try again
                self.states[config.table] = f"retrying: {type(exc).__name__}: {str(exc).strip()[:200]}"
                log.warning("table %s: %s; reconnecting in %.0f s", config.table, exc, pause)
            finally:
                follower.close()
            self._stop.wait(pause)
            pause = min(pause * 2, RETRY_S[1])

    def _caught_up(self, source: str, done: CatchUp) -> None:
        self.alerts.resolve(SCHEMA_ALERT, source)
        if self.on_catch_up is not None:
            self.on_catch_up(done)

    def _stopped(self, config: TableSourceConfig, why: str) -> None:
        self.states[config.table] = f"stopped: {why}"
        log.error("table %s is not followed: %s", config.table, why)
