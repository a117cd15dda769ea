"""The ingestion run: scan, detect changes, index in batches, dead-letter, record the run.

Crash safety comes from ordering: a document's metadata row (its hash) is written only
after its index entries are committed, and index writes are idempotent (stable ids), so a
run killed at any point leaves the index consistent and the next run redoes only the
unfinished documents.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shared.ingestion.changes import plan_changes
from shared.ingestion.records import item_hash
from shared.ingestion.sources import SourceItem, scan_source
from shared.metadata.store import RUN_COUNTERS, MetadataStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int], None]
"""`progress(done, total, units)`: files handled so far (indexed, unchanged or dead-lettered),
files in the run, and chunks (boxes, …) committed so far in this run."""


class Rejected(Exception):
    """An item that cannot be indexed; it becomes a dead letter and the batch goes on."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Cancelled(Exception):
    """The run was abandoned (the service is shutting down); it is recorded as interrupted."""


@dataclass
class Prepared:
    """An item parsed and ready to commit to the index."""

    item: SourceItem
    content_hash: str
    groups: list[str]
    title: str = ""
    units: int = 0  # chunks, boxes, …: whatever the vertical indexes
    payload: Any = None


class Indexer(Protocol):
    """What a vertical supplies to the ingestion core."""

    def prepare(self, item: SourceItem, content_hash: str, groups: list[str]) -> Prepared: ...

    def commit(self, batch: Sequence[Prepared]) -> None: ...

    def remove(self, doc_id: str) -> None: ...


@dataclass
class RunSummary:
    """The run record, as the CLI and API print it."""

    run_id: int
    source: str
    status: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    chunks: int = 0
    seconds: float = 0.0
    dead_letters: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in RUN_COUNTERS}


def summed_counts(runs: Iterable[RunSummary], start: Mapping[str, int] | None = None) -> dict[str, int]:
    """The runs' counts added up (to `start`): a catch-up or a stream writes in several runs."""
    total = dict.fromkeys(RUN_COUNTERS, 0) | dict(start or {})
    for run in runs:
        for name, value in run.counts().items():
            total[name] += value
    return total


def fingerprint(content_hash: str, groups: Iterable[str]) -> str:
    # Groups are part of a version: changing who may read a document re-indexes it.
    return content_hash + "|" + ",".join(sorted(set(groups)))


class IngestPipeline:
    """Runs ingests of files and folders into a vertical's index."""

    def __init__(
        self,
        store: MetadataStore,
        indexer: Indexer,
        *,
        max_file_bytes: int,
        batch_units: int = 64,
    ) -> None:
        self.store = store
        self.indexer = indexer
        self.max_file_bytes = max_file_bytes
        self.batch_units = batch_units
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Make a running ingest stop at its next file or batch, recorded as interrupted.

        Index and metadata stay consistent: what was committed stays, the rest is redone by
        the next run. Ingests started afterwards are refused.
        """
        self._cancelled.set()

    def ingest(
        self,
        target: Path,
        groups: Sequence[str],
        *,
        kind: str = "ingest",
        progress: ProgressCallback | None = None,
    ) -> RunSummary:
        """Ingest a file or re-sync a folder tree (removed files leave the index)."""
        source, items, complete = scan_source(Path(target))
        return self.ingest_items(source, items, groups, complete=complete, kind=kind, progress=progress)

    def ingest_items(
        self,
        source: str,
        items: Sequence[SourceItem],
        groups: Sequence[str],
        *,
        complete: bool,
        kind: str = "ingest",
        progress: ProgressCallback | None = None,
        removed: Sequence[str] = (),
    ) -> RunSummary:
        """Index `items` of `source`; `complete` means the source has nothing else (the rest is
        deleted), `removed` names items deleted at the source (a table's deleted rows).

        Records carry their own groups when they have them (`SourceItem.groups`), files get `groups`.
        """
        import time

        t0 = time.perf_counter()
        self._check_cancelled()
        groups = sorted(set(groups))
        run_id = self.store.start_run(source, kind)
        summary = RunSummary(run_id=run_id, source=source, status="running")
        try:
            self._run(summary, items, groups, complete, progress, removed)
        except BaseException as exc:  # record, then let it propagate (Ctrl-C included)
            summary.status = "interrupted" if isinstance(exc, (KeyboardInterrupt, Cancelled)) else "failed"
            summary.error = f"{type(exc).__name__}: {exc}"
            summary.seconds = time.perf_counter() - t0
            self.store.finish_run(run_id, status=summary.status, error=summary.error, **summary.counts())
            level = logging.WARNING if summary.status == "interrupted" else logging.ERROR
            log.log(level, "run #%s on %s %s: %s", run_id, source, summary.status, summary.error)
            raise
        summary.status = "partial" if summary.failed else "succeeded"
        summary.seconds = time.perf_counter() - t0
        self.store.finish_run(run_id, status=summary.status, **summary.counts())
        log.info("run #%s on %s %s: %s", run_id, source, summary.status, summary.counts())
        return summary

    # --------------------------------------------------------------------------------
    def _run(
        self,
        summary: RunSummary,
        items: Sequence[SourceItem],
        groups: list[str],
        complete: bool,
        progress: ProgressCallback | None,
        removed: Sequence[str] = (),
    ) -> None:
        indexed = self.store.documents_of_source(summary.source)
        by_path = {it.path: it for it in items}
        readers = {it.path: list(it.groups) if it.groups is not None else groups for it in items}
        hashes: dict[str, str] = {}
        total = len(items)
        done = 0
        broken: list[str] = []
        for it in items:
            if it.invalid is not None:
                self._dead_letter(summary, it, it.invalid)
                broken.append(it.path)
                done += 1
                continue
            try:
                hashes[it.path] = item_hash(it)
            except OSError as exc:
                self._dead_letter(summary, it, f"cannot read file: {exc.strerror or exc}")
                done += 1
        plan = plan_changes(
            {p: fingerprint(d.content_hash, d.groups) for p, d in indexed.items()},
            {p: fingerprint(h, readers[p]) for p, h in hashes.items()},
            complete=complete,
        )
        # Gone at the source, or a broken new version there: the old one must not linger.
        plan.deleted = sorted({*plan.deleted, *(p for p in (*removed, *broken) if p in indexed and p not in hashes)})
        summary.unchanged = len(plan.unchanged)
        done += len(plan.unchanged)
        if progress:
            progress(done, total, summary.chunks)

        for path in plan.deleted:
            doc = indexed[path]
            self.indexer.remove(doc.id)
            self.store.delete_document(doc.id)
            summary.deleted += 1

        batch: list[Prepared] = []
        units = 0
        is_new = set(plan.added)
        for path in plan.added + plan.updated:
            self._check_cancelled()
            it = by_path[path]
            try:
                prepared = self._prepare(it, hashes[path], readers[path])
            except Rejected as rej:
                self._dead_letter(summary, it, rej.reason)
                if path in indexed:  # a broken new version: the old one must not linger
                    self.indexer.remove(indexed[path].id)
                    self.store.delete_document(indexed[path].id)
                done += 1
                if progress:
                    progress(done, total, summary.chunks)
                continue
            batch.append(prepared)
            units += prepared.units
            if units >= self.batch_units:
                done += self._commit(summary, batch, is_new)
                batch, units = [], 0
                if progress:
                    progress(done, total, summary.chunks)
        if batch:
            done += self._commit(summary, batch, is_new)
            if progress:
                progress(done, total, summary.chunks)

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the service is shutting down; the next run continues where this one stopped")

    def _prepare(self, it: SourceItem, content_hash: str, groups: list[str]) -> Prepared:
        what = "record" if it.is_record else "file"
        if it.size_bytes == 0:
            raise Rejected(f"empty {what}")
        if it.size_bytes > self.max_file_bytes:
            raise Rejected(
                f"{what} is {it.size_bytes:,} bytes, over the limit of {self.max_file_bytes:,} "
                "(raise LOOPLINE_MAX_FILE_BYTES to accept it)"
            )
        return self.indexer.prepare(it, content_hash, groups)

    def _commit(self, summary: RunSummary, batch: list[Prepared], is_new: set[str]) -> int:
        self._check_cancelled()
        self.indexer.commit(batch)
        for p in batch:
            self.store.upsert_document(
                doc_id=p.item.doc_id,
                source=p.item.source,
                path=p.item.path,
                title=p.title,
                content_hash=p.content_hash,
                groups=p.groups,
                size_bytes=p.item.size_bytes,
                chunk_count=p.units,
            )
            summary.chunks += p.units
            if p.item.path in is_new:
                summary.added += 1
            else:
                summary.updated += 1
        return len(batch)

    def _dead_letter(self, summary: RunSummary, it: SourceItem, reason: str) -> None:
        dl_id = self.store.add_dead_letter(run_id=summary.run_id, source=it.source, path=it.path, reason=reason)
        summary.failed += 1
        summary.dead_letters.append({"path": it.path, "reason": reason})
        log.warning("%s: %s; skipped and recorded as dead letter #%s", it.path, reason, dl_id)
