"""A PostgreSQL table as a source: which columns say what, its declared schema, and its rows.

The user names the table and its columns (id, text, optional title, groups, updated-at). The
table's columns are checked against that declaration before anything is read, and every row
is validated by a pydantic model built from it: a row that does not fit (a NULL text, groups
that are not text) becomes a dead letter naming the column and the reason; a column that
is gone or changed to an unusable type stops the source (`SchemaChanged`) instead of quietly
indexing less. The source's name holds host, port, database and table, never credentials.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from shared.ingestion.records import record_item
from shared.ingestion.schema import SchemaError, validate_record
from shared.ingestion.sources import SourceItem

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
# pg_type.typcategory each role accepts: S string, N numeric, U user (uuid), D date/time, A array.
ACCEPTED = {
    "id": {"S", "N", "U"},
    "text": {"S"},
    "title": {"S"},
    "groups": {"A", "S"},  # text[] or a comma-separated string
    "updated_at": {"D"},
}


class SchemaChanged(RuntimeError):
    """The table no longer matches the source's declaration: the source stops until it does."""


class TableSourceError(ValueError):
    """The declaration itself is unusable (unknown table, bad column name, missing rights)."""


class SourceUnavailable(ConnectionError):
    """The database does not answer: an outage delays the source, the next try goes on."""


@dataclass(frozen=True)
class TableSpec:
    """What a table source reads: the table and the role of each column."""

    dsn: str
    table: str  # name or schema.name
    id: str
    text: str
    title: str | None = None
    groups: str | None = None
    updated_at: str | None = None
    default_groups: tuple[str, ...] = ("public",)

    def __post_init__(self) -> None:
        for part in self.table.split("."):
            if not _IDENT.match(part):
                raise TableSourceError(f"table '{self.table}': write it as name or schema.name (letters, digits, _)")
        for role, col in self.columns().items():
            if not _IDENT.match(col):
                raise TableSourceError(f"--{role.replace('_', '-')} '{col}': not a plain column name")

    @property
    def schema_name(self) -> str:
        return self.table.split(".")[0] if "." in self.table else "public"

    @property
    def table_name(self) -> str:
        return self.table.split(".")[-1]

    @property
    def qualified(self) -> str:
        return f"{self.schema_name}.{self.table_name}"

    def columns(self) -> dict[str, str]:
        """{role: column} of the declared columns."""
        roles = {"id": self.id, "text": self.text, "title": self.title, "groups": self.groups}
        roles["updated_at"] = self.updated_at
        return {role: col for role, col in roles.items() if col}

    def source(self) -> str:
        """`table:host:port/database/schema.table`: the dsn's password and user stay out of it."""
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self.dsn)
        host = info.get("host") or info.get("hostaddr") or "localhost"
        port = info.get("port") or "5432"
        database = info.get("dbname") or info.get("user") or "postgres"
        return f"table:{host}:{port}/{database}/{self.qualified}"

    def slug(self) -> str:
        """A name for this source's replication slot and publication (lower case, ≤ 63 bytes)."""
        digest = hashlib.sha256(self.source().encode()).hexdigest()[:16]
        return f"loopline_{digest}"

    def key(self, row_id: str) -> str:
        """A row's path in the index: what citations show (`schema.table/id`)."""
        return f"{self.qualified}/{row_id}"


class TableColumn(BaseModel):
    name: str
    type: str  # format_type, e.g. "text", "integer", "text[]"
    type_oid: int
    category: str  # pg_type.typcategory


def table_columns(conn: Any, spec: TableSpec) -> dict[str, TableColumn]:
    """The table's columns now, from the catalog; raises TableSourceError when it does not exist."""
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int, t.typcategory
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_type t ON t.oid = a.atttypid
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (spec.schema_name, spec.table_name),
    ).fetchall()
    if not rows:
        raise TableSourceError(f"table {spec.qualified} not found (or this role may not see it)")
    return {name: TableColumn(name=name, type=typ, type_oid=oid, category=cat) for name, typ, oid, cat in rows}


def check_columns(spec: TableSpec, found: dict[str, TableColumn], *, id_type_oid: int | None = None) -> None:
    """Raise SchemaChanged when a declared column is missing or of a type its role cannot use."""
    problems = []
    for role, col in spec.columns().items():
        have = found.get(col)
        if have is None:
            problems.append(f"column '{col}' (--{role.replace('_', '-')}) is missing")
        elif have.category not in ACCEPTED[role] or (
            role == "updated_at" and not (have.type.startswith("timestamp") or have.type == "date")
        ):
            problems.append(f"column '{col}' (--{role.replace('_', '-')}) is {have.type}, which it cannot use")
    id_now = found.get(spec.id)
    if id_type_oid is not None and id_now is not None and id_now.type_oid != id_type_oid:
        problems.append(f"id column '{spec.id}' changed type (now {id_now.type}): the rows' keys are not comparable")
    if problems:
        raise SchemaChanged(
            f"{spec.qualified} no longer matches this source: {'; '.join(problems)}. The source is stopped; "
            "fix the table or run ingest-table with the new column names"
        )


class Row(BaseModel):
    """A row as the index takes it, by role; errors are reported under the table's column names."""

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    title: str | None = None
    groups: list[str] | None = None
    updated_at: datetime | None = None

    @field_validator("groups", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [g.strip() for g in value.split(",") if g.strip()]
        return value


def select_sql(spec: TableSpec) -> Any:
    """SELECT of the declared columns (an id of any type comes back as text)."""
    from psycopg import sql

    cols = [sql.SQL("{}::text").format(sql.Identifier(spec.id))]
    cols += [sql.Identifier(col) for role, col in spec.columns().items() if role != "id"]
    return sql.SQL("SELECT {} FROM {}.{}").format(
        sql.SQL(", ").join(cols), sql.Identifier(spec.schema_name), sql.Identifier(spec.table_name)
    )


def to_item(spec: TableSpec, source: str, values: Sequence[Any]) -> SourceItem:
    """One row as a record item, or as an invalid one naming the table's column and the reason."""
    columns = spec.columns()
    row_id = str(values[0])
    try:
        row = validate_record(Row, dict(zip(columns, values, strict=True)))
    except SchemaError as exc:
        role = exc.field.split(".")[0]
        return record_item(source, spec.key(row_id), None, invalid=f"column '{columns.get(role, role)}' {exc.problem}")
    # NULL: the defaults; an empty list: nobody but admins (clearing the readers revokes access).
    groups = row.groups if row.groups is not None else list(spec.default_groups)
    return record_item(source, spec.key(row.id), row.text, title=row.title or "", groups=groups)


def read_rows(
    conn: Any,
    spec: TableSpec,
    source: str,
    *,
    ids: Sequence[str] | None = None,
    id_type: str = "text",
    changed_since: str | None = None,
    since_type: str = "timestamptz",
    overlap_s: float = 0.0,
) -> Iterator[SourceItem]:
    """Rows as items: the whole table, those of `ids` (keys absent from the result were deleted),
    or those whose updated-at column is at or after `changed_since` (text of the column's type,
    compared in that type) minus `overlap_s`."""
    from psycopg import sql

    query = select_sql(spec)
    params: tuple = ()
    if ids is not None:  # cast to the column's type (from the catalog) so its index serves the lookup
        query = sql.SQL("{} WHERE {} = ANY(%s::{}[])").format(query, sql.Identifier(spec.id), sql.SQL(id_type))
        params = (list(ids),)
    elif changed_since is not None and spec.updated_at:
        query = sql.SQL("{} WHERE {} >= %s::{} - make_interval(secs => %s)").format(
            query, sql.Identifier(spec.updated_at), sql.SQL(since_type)
        )
        params = (changed_since, overlap_s)
    with conn.cursor() as cur:
        cur.execute(query, params)
        for values in cur:
            yield to_item(spec, source, values)
