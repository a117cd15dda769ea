"""Which server paths a remote caller may ingest: only what lies under configured roots.

An admin key is a network credential, not a login on the server: without this, one could
index /etc or the service's own home (republishing group-restricted uploads as public).
Paths are resolved before they are compared, and symbolic links below a root are refused,
so neither `..` nor a link can lead outside. The local CLI, which acts as a user of the
machine, is not limited here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


class PathRefused(PermissionError):
    """The path may not be ingested by this caller; the message says why and what to set."""


def parse_roots(raw: str) -> list[Path]:
    """LOOPLINE_INGEST_ROOTS: comma-separated folders."""
    return [Path(p.strip()) for p in raw.split(",") if p.strip()]


def check_ingest_path(raw: str, roots: Sequence[Path], *, protected: Sequence[Path] = ()) -> Path:
    """The resolved path, if it lies under one of `roots` with no link on the way and no `protected` folder inside or around it."""
    if not roots:
        raise PathRefused(
            "ingesting server paths over the API is off: set LOOPLINE_INGEST_ROOTS to the folders callers may ingest"
        )
    given = Path(raw)
    if not given.is_absolute():
        raise PathRefused(f"{raw}: give an absolute path under one of the ingest roots")
    normal = Path(os.path.normpath(given))
    for root in roots:
        root_normal = Path(os.path.normpath(root.absolute()))
        if not normal.is_relative_to(root_normal):
            continue
        real = Path(os.path.realpath(normal))
        expected = Path(os.path.realpath(root_normal)) / normal.relative_to(root_normal)
        if real != expected:
            raise PathRefused(f"{raw}: symbolic links are not followed below an ingest root")
        for folder in protected:
            inner = Path(os.path.realpath(folder))
            if real.is_relative_to(inner) or inner.is_relative_to(real):
                raise PathRefused(f"{raw}: the service's own data folder cannot be ingested")
        return real
    raise PathRefused(f"{raw}: not under an ingest root (LOOPLINE_INGEST_ROOTS)")
