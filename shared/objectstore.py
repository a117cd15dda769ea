"""The object store port: bytes under keys. Local folder by default; S3-like stores later.

Keys are '/'-separated and validated, so a key can never escape the store's root. Writers
racing on one key never see each other's temp files; `put_if_absent` lets exactly one of
them create a key (what S3 offers as a conditional put, `If-None-Match: *`).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def put_if_absent(self, key: str, data: bytes) -> bool: ...

    def delete(self, key: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def scoped(self, prefix: str) -> ObjectStore:
        """The same store seen under `prefix/`: one part of the service keeps to its own keys."""
        ...


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid object key {key!r}: use letters, digits, '.', '_', '-' and '/' only")
    return key


class LocalObjectStore:
    """Objects as files under a root folder, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def scoped(self, prefix: str) -> LocalObjectStore:
        return LocalObjectStore(self._path(prefix))

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` with `data` unless it exists; True when this call created it.

        The complete temp file is hard-linked to the final name: the link fails if the name
        exists, and readers never see a partly written object.
        """
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _write_temp(self, path: Path, data: bytes) -> Path:
        """`data` in a temp file beside `path`, named per call so concurrent writers never share one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        base = self.root
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.relative_to(base).as_posix().startswith(prefix)
        )
