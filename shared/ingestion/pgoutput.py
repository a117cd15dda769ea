"""A decoder for PostgreSQL's `pgoutput` logical replication messages, protocol version 1.

Change data capture needs only which rows a transaction touched (their keys), where each
transaction ends, and what the table looks like (relation messages, to see a dropped or
retyped column). Values are kept as the text PostgreSQL sent; the row itself is re-read from
the table after the commit, so unchanged TOASTed columns need no special care.
Message layout: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

UNCHANGED = object()  # a TOASTed value the update did not touch ('u')


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    key: bool  # part of the replica identity


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault: primary key), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True)
class Begin:
    final_lsn: int
    xid: int


@dataclass(frozen=True)
class Commit:
    commit_lsn: int
    end_lsn: int


@dataclass(frozen=True)
class RowChange:
    op: Literal["insert", "update", "delete"]
    relation: int
    values: tuple[object, ...]  # str, None (NULL), bytes (binary) or UNCHANGED, in column order
    old_values: tuple[object, ...] | None = None  # an UPDATE that changed the key: the old key (or row)


@dataclass(frozen=True)
class Truncate:
    relations: tuple[int, ...]


@dataclass(frozen=True)
class Other:
    """A message CDC has no use for (type, origin, logical message)."""

    tag: str


Message = Begin | Commit | Relation | RowChange | Truncate | Other


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it: 0/16B3748."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def byte(self) -> str:
        self.pos += 1
        return chr(self.data[self.pos - 1])

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        text = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return text

    def tuple_data(self) -> tuple[object, ...]:
        (count,) = self.unpack("!h")
        values: list[object] = []
        for _ in range(count):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED)
            elif kind in "tb":
                (length,) = self.unpack("!i")
                raw = self.data[self.pos : self.pos + length]
                self.pos += length
                values.append(raw.decode("utf-8") if kind == "t" else bytes(raw))
            else:
                raise ValueError(f"pgoutput: unknown tuple value kind {kind!r}")
        return tuple(values)


def decode(data: bytes) -> Message:
    """One pgoutput message (one row of pg_logical_slot_peek_binary_changes)."""
    r = _Reader(bytes(data))
    tag = r.byte()
    if tag == "B":
        final_lsn, _ts, xid = r.unpack("!qqi")
        return Begin(final_lsn=final_lsn, xid=xid)
    if tag == "C":
        _flags, commit_lsn, end_lsn, _ts = r.unpack("!bqqq")
        return Commit(commit_lsn=commit_lsn, end_lsn=end_lsn)
    if tag == "R":
        (oid,) = r.unpack("!i")
        namespace, name = r.string(), r.string()
        identity = r.byte()
        (ncols,) = r.unpack("!h")
        cols = []
        for _ in range(ncols):
            (flags,) = r.unpack("!b")
            col_name = r.string()
            type_oid, _typmod = r.unpack("!ii")
            cols.append(Column(name=col_name, type_oid=type_oid & 0xFFFFFFFF, key=bool(flags & 1)))
        return Relation(oid & 0xFFFFFFFF, namespace or "pg_catalog", name, identity, tuple(cols))
    if tag == "I":
        (oid,) = r.unpack("!i")
        r.byte()  # 'N'
        return RowChange("insert", oid & 0xFFFFFFFF, r.tuple_data())
    if tag == "U":
        (oid,) = r.unpack("!i")
        kind = r.byte()
        old = None
        if kind in "KO":  # the old key (or whole old row), sent when the key changed: the new tuple follows
            old = r.tuple_data()
            kind = r.byte()
        return RowChange("update", oid & 0xFFFFFFFF, r.tuple_data(), old)
    if tag == "D":
        (oid,) = r.unpack("!i")
        r.byte()  # 'K' (key columns) or 'O' (the whole old row)
        return RowChange("delete", oid & 0xFFFFFFFF, r.tuple_data())
    if tag == "T":
        (count,) = r.unpack("!i")
        r.unpack("!b")
        return Truncate(tuple(v & 0xFFFFFFFF for v in r.unpack(f"!{count}i")))
    return Other(tag)
