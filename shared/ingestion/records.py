"""Records: items whose text comes inline (a table row, an event), not from a file.

A record is identified like a file, by (source, key), and versioned by the sha256 of its
title and text, so the same change detection, dead letters and run records apply. Its
readers may be its own (a row's groups column) rather than the run's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from shared.ingestion.sources import SourceItem, sha256_file


def record_item(
    source: str,
    key: str,
    text: str | None,
    *,
    title: str = "",
    groups: Sequence[str] | None = None,
    invalid: str | None = None,
) -> SourceItem:
    """One record of `source`; `invalid` says why it could not be read (it becomes a dead letter)."""
    body = text or ""
    return SourceItem(
        source=source,
        path=key,
        abs_path=None,
        size_bytes=len(body.encode("utf-8", "surrogatepass")),
        text=body,
        title=title or "",
        groups=tuple(sorted(set(groups))) if groups is not None else None,
        invalid=invalid,
    )


def item_hash(item: SourceItem) -> str:
    """The version of an item: its file's bytes, or a record's title and text."""
    if item.abs_path is not None:
        return sha256_file(item.abs_path)
    h = hashlib.sha256()
    h.update(item.title.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update((item.text or "").encode("utf-8", "surrogatepass"))
    return h.hexdigest()
