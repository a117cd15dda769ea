"""The documents both systems read: a deterministic subset of the corpus, copied to a scratch folder.

It only selects and copies files; it never writes into the corpus.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # the baseline's process imports this module and stays without pydantic
    from evaluation.rag_eval import QAItem

log = logging.getLogger(__name__)

# Mirrors rag.loaders.SUPPORTED_SUFFIXES, kept here so the parent process and the baseline's
# process stay light (the parent's RSS must not leak into the children's numbers).
SUPPORTED_SUFFIXES = (".docx", ".htm", ".html", ".markdown", ".md", ".pdf", ".txt")
_SKIPPED_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv"}
# A fixed scratch path: SimpleDirectoryReader puts the absolute file_path into every chunk's
# embedded text, so a random temp name would make the baseline's chunks and vectors differ
# from run to run.
DEFAULT_WORK = Path(tempfile.gettempdir()) / "loopline-bench-rag-work"
SCRATCH = ("corpus", "loopline_home", "loopline_home_onnx", "loopline_home_torch")  # one home per runtime
_WORK_ENTRIES = {*SCRATCH, ".lock"}


class WorkDirError(Exception):
    """The scratch folder cannot be used (foreign files, or another run holds it)."""


def supported_files(root: Path) -> list[str]:
    """Supported files under root, as sorted posix paths relative to it (hidden ones skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith(".")]
        for name in filenames:
            p = Path(dirpath) / name
            if name.startswith(".") or p.is_symlink() or not p.is_file():
                continue
            if p.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(p.relative_to(root).as_posix())
    return sorted(found)


def select_subset(all_files: Sequence[str], qa: Sequence[QAItem], max_docs: int | None) -> list[str]:
    """QA sources that exist first (always), then the other files in sorted order up to max_docs."""
    present = set(all_files)
    required = sorted({q.source for q in qa if q.source and q.source in present})
    missing = sorted({q.source for q in qa if q.source and q.source not in present})
    for m in missing:
        log.warning("QA source %s is not a supported file of the corpus; its questions are skipped", m)
    if max_docs is None:
        return list(all_files)
    if max_docs < len(required):
        log.warning("--max-docs %d is below the %d QA source files; taking all of those", max_docs, len(required))
    chosen = set(required)
    for f in all_files:
        if len(chosen) >= max_docs:
            break
        chosen.add(f)
    return sorted(chosen)


def copy_subset(src_root: Path, files: Sequence[str], dst_root: Path) -> int:
    """Copy `files` (relative to src_root) under dst_root; the bytes copied."""
    total = 0
    for rel in files:
        dst = dst_root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_root / rel, dst)
        total += dst.stat().st_size
    return total


def claim_work_dir(work: Path) -> IO[str]:
    """Lock the scratch folder for this run and clear what an earlier run left in it.

    Returns the open lock file; closing it releases the folder.
    """
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    foreign = sorted(p.name for p in work.iterdir() if p.name not in _WORK_ENTRIES)
    if foreign:
        raise WorkDirError(
            f"{work}: holds files this benchmark did not write ({', '.join(foreign[:5])}); "
            "pass an empty or dedicated --work-dir"
        )
    fh = open(work / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise WorkDirError(f"{work}: another benchmark run is using it; wait, or pass another --work-dir") from None
    for name in SCRATCH:
        if (work / name).exists():
            log.info("removing %s left by an earlier run", work / name)
            shutil.rmtree(work / name)
    return fh


def release_work_dir(work: Path, lock: IO[str], *, keep: bool) -> None:
    """Empty the scratch folder (unless keep) and release its lock."""
    if keep:
        log.info("kept %s", work)
    else:
        for name in SCRATCH:
            shutil.rmtree(work / name, ignore_errors=True)
    lock.close()
