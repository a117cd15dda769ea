"""The revisions of the metadata database's schema, oldest first (0001: the schema before Alembic)."""
