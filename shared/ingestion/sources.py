"""Sources: a single file or a folder tree, listed as items with stable ids and hashes.

An item is identified by (source, path) — the source names the ingested root, the path is
relative to it — and versioned by the sha256 of its bytes. Uploads are written to a folder
by the API and ingested as the `upload` source. Records (table rows, events) are items too,
their text inline instead of in a file: see records.py.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_ID_NAMESPACE = uuid.UUID("6f1c3c2e-5d0b-4c5e-9a53-1f3f0e2b7a10")
_SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv"}


def document_id(source: str, path: str) -> str:
    """Stable id of a document: the same (source, path) keeps its id across versions."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{source}\n{path}"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class SourceItem:
    """One file of a source as found on disk, or one record with its text inline."""

    source: str
    path: str  # relative to the source root, with forward slashes; a record's key
    abs_path: Path | None
    size_bytes: int
    text: str | None = None  # a record's content (files have abs_path instead)
    title: str = ""
    groups: tuple[str, ...] | None = None  # a record's own readers; None: the run's groups
    invalid: str | None = None  # why the source could not read this record: it becomes a dead letter

    @property
    def doc_id(self) -> str:
        return document_id(self.source, self.path)

    @property
    def suffix(self) -> str:
        return self.abs_path.suffix.lower() if self.abs_path is not None else ""

    @property
    def is_record(self) -> bool:
        return self.abs_path is None


def folder_source(root: Path) -> str:
    return f"folder:{root.resolve()}"


def source_name(source: str) -> str:
    """What users are shown of a source: its folder's name, never the server's layout."""
    kind, sep, location = source.partition(":")
    if kind == "folder" and sep:
        return Path(location).name or location
    if kind == "table" and sep:  # table:host:port/database/schema.table → database/schema.table
        return location.split("/", 1)[-1]
    return source


def file_item(root: Path, path: Path) -> SourceItem:
    """One file as an item of the folder source `root` (its path relative to it)."""
    root = root.resolve()
    return _item(folder_source(root), root, path.resolve())


def file_source(file: Path) -> str:
    return f"folder:{file.resolve().parent}"


def scan_source(target: Path) -> tuple[str, list[SourceItem], bool]:
    """List the items of a file or folder; returns (source name, items, is_complete_tree).

    A folder scan is complete: documents of that source missing from it were removed.
    A single-file scan is not, so it never deletes its siblings from the index.
    """
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file or folder")
    if target.is_file():
        root = target.resolve().parent
        return file_source(target), [_item(folder_source(root), root, target.resolve())], False
    root = target.resolve()
    source = folder_source(root)
    return source, list(_walk(source, root)), True


def _walk(source: str, root: Path) -> Iterator[SourceItem]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            yield _item(source, root, p)


def _item(source: str, root: Path, p: Path) -> SourceItem:
    return SourceItem(
        source=source,
        path=p.relative_to(root).as_posix(),
        abs_path=p,
        size_bytes=p.stat().st_size,
    )
