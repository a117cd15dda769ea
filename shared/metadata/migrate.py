"""Schema migrations of the metadata database: one Alembic revision chain for every package's tables.

The ingestion core, the monitoring core and the verticals put their tables on one
declarative `Base` (shared/metadata/tables.py) in one database; the revisions under
`migrations/versions/` create and change all of them. `MetadataStore` calls
`upgrade_to_head` when it opens a database:
- once per engine: after that, nothing; before, one query when the database is at head;
- under a lock: a PostgreSQL advisory lock held by the migrating transaction (so two
  processes starting at once migrate once; the second waits, then finds head), or on SQLite
  a `BEGIN IMMEDIATE` transaction;
- a database made before migrations (tables, no version row) is checked against the first
  revision's tables, given the tables it lacks and stamped as that revision, then upgraded.

There is no alembic.ini: `alembic_config` points Alembic at the package folder and hands
env.py the connection. The application never imports the verticals' table modules here;
only `schema_metadata` does, for comparing and autogenerating (tests and developers). For a
table change: edit the model, then `python -m shared.metadata.migrate revision "what changed"`
in a checkout writes the revision, which tests/shared/test_migrations.py then checks.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, inspect, text

SCRIPT_LOCATION = Path(__file__).resolve().parent / "migrations"
# Not Alembic's default `alembic_version`: MLflow (or another app) may share the database.
VERSION_TABLE = "loopline_alembic_version"
BASELINE = "0001"  # the schema made by create_all before migrations
PG_LOCK_KEY = int.from_bytes(b"loopline", "big")  # pg_advisory_xact_lock key of schema changes
# The core's modules that define tables on Base; the verticals name theirs in the
# `loopline.tables` entry-point group (shared never imports a vertical by name).
SHARED_TABLE_MODULES = (
    "shared.metadata.tables",
    "shared.monitoring.alert_store",
    "shared.monitoring.drift_store",
    "shared.jobs.records",
)
TABLES_GROUP = "loopline.tables"

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()
_ready_lock = threading.Lock()


class SchemaMismatch(RuntimeError):
    """The database holds a schema this loopline cannot migrate: foreign tables of its names, or a newer revision."""


def alembic_config(connection: Connection | None = None, *, target_metadata: MetaData | None = None) -> Config:
    """Alembic's configuration without an ini file; env.py runs on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    cfg.attributes["target_metadata"] = target_metadata
    return cfg


@lru_cache(maxsize=1)
def head() -> str:
    """The newest revision (read from the version files once per process)."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if found is None:
        raise RuntimeError(f"no revision under {SCRIPT_LOCATION / 'versions'}; the package is incomplete")
    return found


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None for a new database or one made before migrations.

    Read directly (not through Alembic's MigrationContext, which logs at every open).
    """
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    found = list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    if len(found) > 1:
        raise RuntimeError(f"{VERSION_TABLE} holds {found}: loopline's revisions form one chain; merge the heads")
    return found[0] if found else None


def upgrade_to_head(engine: Engine) -> None:
    """Bring the engine's database to the newest revision; once per engine, cheap at head."""
    if engine in _ready:
        return
    with _ready_lock:
        if engine in _ready:
            return
        with engine.connect() as conn:
            at_head = current_revision(conn) == head()
        if not at_head:
            with engine.connect() as conn:
                _lock(conn)
                _upgrade(conn)
                conn.commit()
        _ready.add(engine)


def _lock(conn: Connection) -> None:
    """Hold the schema lock until this connection's transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock now, not at the first write


def _upgrade(conn: Connection) -> None:
    """Under the lock: recognise a database made before migrations, then upgrade to head."""
    cfg = alembic_config(conn)
    where = conn.engine.url.render_as_string(hide_password=True)
    rev = current_revision(conn)  # again: another process may have migrated meanwhile
    if rev is not None and rev not in {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}:
        raise SchemaMismatch(
            f"database {where} is at schema revision {rev}, which this loopline does not know (its newest is "
            f"{head()}): a newer loopline migrated it. Run that version, or restore a backup made before"
        )
    if rev is None:
        baseline = baseline_module()
        if set(inspect(conn).get_table_names()) & set(baseline.TABLES.tables):
            problems = baseline.mismatches(conn)
            if problems:
                raise SchemaMismatch(
                    f"database {where} has tables of loopline's names that differ from its schema before "
                    f"migrations: {'; '.join(problems)}. Point LOOPLINE_DATABASE_URL at loopline's own database "
                    "(or an empty one); this one was left unchanged"
                )
            baseline.create(conn)  # a home made before migrations may lack the monitoring tables
            command.stamp(cfg, BASELINE)
    command.upgrade(cfg, "head")


def baseline_module() -> ModuleType:
    """The first revision's module: its frozen `TABLES`, `mismatches` and `create`."""
    script = ScriptDirectory.from_config(alembic_config()).get_revision(BASELINE)
    assert script is not None and script.module is not None
    return script.module


def schema_modules() -> list[str]:
    """Every module whose tables belong to the schema: the core's and those installed packages declare."""
    from importlib.metadata import entry_points

    return [*SHARED_TABLE_MODULES, *sorted(ep.value for ep in entry_points(group=TABLES_GROUP))]


def schema_metadata() -> MetaData:
    """Base.metadata with every package's tables: what the revisions at head must create."""
    for name in schema_modules():
        importlib.import_module(name)
    from shared.metadata.tables import Base

    return Base.metadata


def only_tables_of(metadata: MetaData | None) -> Callable[..., bool]:
    """An `include_name` hook: compare only `metadata`'s tables (other apps' tables are not ours)."""

    def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
        return type_ != "table" or metadata is None or name in metadata.tables

    return include_name


def differences(conn: Connection, metadata: MetaData | None = None) -> list:
    """What autogenerate would change to make the database match the models (empty: nothing)."""
    metadata = metadata or schema_metadata()
    ctx = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "include_name": only_tables_of(metadata), "version_table": VERSION_TABLE},
    )
    return compare_metadata(ctx, metadata)


def make_revision(message: str, url: str | None = None) -> str:
    """Autogenerate a revision for the models' changes since head (developers, in a checkout).

    Compared on a scratch SQLite database at head, or on `url` (at head) to see what
    PostgreSQL reflects. The file is tidied by ruff when it is installed; read it before committing.
    """
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(url or f"sqlite:///{tmp}/scratch.db")
        try:
            upgrade_to_head(engine)
            with engine.begin() as conn:
                cfg = alembic_config(conn, target_metadata=schema_metadata())
                _ruff_hooks(cfg)
                script = command.revision(cfg, message=message, autogenerate=True)
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return script.path


def _ruff_hooks(cfg: Config) -> None:
    """Run `ruff check --fix` and `ruff format` on a written revision (Alembic's post-write hooks)."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        return
    cfg.set_section_option("post_write_hooks", "hooks", "ruff_fix, ruff_format")
    for name, options in (("ruff_fix", "check --fix --quiet"), ("ruff_format", "format --quiet")):
        cfg.set_section_option("post_write_hooks", f"{name}.type", "exec")
        cfg.set_section_option("post_write_hooks", f"{name}.executable", ruff)
        cfg.set_section_option("post_write_hooks", f"{name}.options", f"{options} REVISION_SCRIPT_FILENAME")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.metadata.migrate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rev = sub.add_parser("revision", help="autogenerate a revision from the models' changes")
    rev.add_argument("message")
    rev.add_argument("--url", help="compare on this database (at head) instead of a scratch SQLite file")
    up = sub.add_parser("upgrade", help="migrate a database to head")
    up.add_argument("url")
    args = parser.parse_args(argv)
    if args.cmd == "revision":
        make_revision(args.message, args.url)  # Alembic prints the file's path
    else:
        engine = create_engine(args.url)
        try:
            upgrade_to_head(engine)
            with engine.connect() as conn:
                print(current_revision(conn))
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
