"""Alembic's environment for the metadata database: migrate the connection shared.metadata.migrate hands over.

No alembic.ini and no URL here: `migrate.alembic_config` passes the connection (inside the
caller's locked transaction, which the caller commits) and, only to autogenerate, the
models' metadata. Offline (`--sql`) mode is not supported.
"""

from __future__ import annotations

from alembic import context

from shared.metadata.migrate import VERSION_TABLE, only_tables_of

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "loopline's migrations run through shared.metadata.migrate (python -m shared.metadata.migrate --help); "
        "there is no alembic.ini"
    )
target_metadata = config.attributes.get("target_metadata")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    version_table=VERSION_TABLE,
    include_name=only_tables_of(target_metadata),
    compare_type=True,
    render_as_batch=True,  # SQLite cannot ALTER most things: autogenerate batch operations
)
with context.begin_transaction():
    context.run_migrations()
