"""Batch ingest on Ray: files are loaded, chunked and embedded by a Ray Data actor pool.

`loopline rag ingest PATH --ray [ADDRESS]`. Only the per-document work is distributed: each
actor holds one embedding model (loaded once) and one parse worker (the same time-limited
child process and limits as the in-process ingest), and turns a batch of files into titles,
chunks and vectors with the same functions (`rag.parsing.parse_file`, `TextChunk.embedding_text`,
`make_embedder`). Everything that decides or records stays in this process and is the
in-process code itself: the ingestion core's `IngestPipeline` (change detection, dead letters,
run records, metadata after vectors) drives a `RagIndexer` (chunk ids, payloads, sparse
vectors, writes through the vector-store port) whose vectors come from Ray. So the index and
the metadata equal what `loopline rag ingest PATH` builds, vectors within float tolerance in
FP32 (batches differ, hence padding); INT8 quantizes activations per batch, so its vectors
differ a little more (cosine >= 0.99).

Ray starts only when some file is new or changed. Without an address a local Ray is started
for the run (and shut down after); `auto`, `HOST:PORT` or `ray://HOST:10001` connect to a
cluster, whose nodes must have loopline installed and read the folder at the same path.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.chunking import TextChunk
from rag.embeddings import make_embedder
from rag.indexer import RagIndexer
from rag.parsing import ParseSpec, parse_file
from shared.ingestion import IngestPipeline, Prepared, Rejected, RunSummary, SourceItem, scan_source
from shared.ingestion.pipeline import ProgressCallback, fingerprint
from shared.ingestion.sources import sha256_file
from shared.ingestion.worker import ParseWorker

if TYPE_CHECKING:
    from rag.embeddings import Embedder
    from rag.service import RagService
    from shared.config import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'loopline[ray]'"
DOCS_PER_BATCH = 8  # files per actor call: enough chunks for one efficient encode, small enough to stream


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the given cluster cannot be used; the message says what to do."""


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: `address` None starts a local Ray; each actor holds one model.

    Actors claim half a CPU by default: a pool whose actors claim every CPU leaves none for
    Ray Data's other tasks, and the dataset waits "backpressured" forever. Ray gives each
    actor max(1, floor(cpus_per_actor)) torch threads (OMP_NUM_THREADS).
    """

    address: str | None = None
    actors: int = 2
    cpus_per_actor: float = 0.5
    docs_per_batch: int = DOCS_PER_BATCH
    local_cpus: int | None = None  # a local Ray's CPUs (default: this machine's, at least what the actors claim)


def check_address(raw: str) -> str:
    """`auto`, `HOST:PORT` or `ray://HOST:PORT`, else ValueError naming the forms."""
    value = raw.strip()
    host, sep, port = value.removeprefix("ray://").rpartition(":")
    if value == "auto" or (sep and host and port.isdigit()):
        return value
    raise ValueError(
        f"'{raw}' is not a Ray address: give auto, HOST:PORT or ray://HOST:10001 (or no value: a local Ray)"
    )


def import_ray() -> Any:
    """The `ray` module with Ray Data, or RayUnavailable saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the part this module needs; a bare `ray` install lacks its deps
    except ImportError as exc:
        raise RayUnavailable(
            f"ingesting on Ray needs Ray Data, which is not installed ({exc}): {INSTALL_HINT}"
        ) from exc
    return ray


@contextmanager
def ray_cluster(address: str | None, *, local_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected for the block. A Ray this process already runs is used as it is (and left
    running); one started or connected here is shut down (or disconnected) at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Ray's own chatter stays on stderr and below warnings: stdout carries only the run summary.
    quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        log.info("starting a local Ray (%s CPUs)", local_cpus or "all")
        ray.init(num_cpus=local_cpus, include_dashboard=False, **quiet)
    else:
        log.info("connecting to the Ray cluster at %s", address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(f"cannot connect to Ray at {address}: {exc}") from exc
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset progress lines
    try:
        yield ray
    finally:
        ray.shutdown()


# --- the remote side: one actor per model ---------------------------------------------------
class ParseAndEmbed:
    """A Ray Data actor: file paths in, per file its title, chunks and vectors (or why it was rejected)."""

    def __init__(self, settings: Settings, spec: ParseSpec) -> None:
        self.spec = spec
        self.parser = ParseWorker(settings.parse_timeout_s, preload=["rag.parsing"])
        self.embedder = make_embedder(settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        keys = ("path", "title", "sections", "texts", "metadata", "vectors", "rejected")
        out: dict[str, list] = {k: [] for k in keys}
        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for rel, abs_path in zip(batch["path"], batch["abs_path"], strict=True):
            title, chunks, rejected = self._parse(Path(str(abs_path)))
            out["path"].append(str(rel))
            out["title"].append(title)
            out["sections"].append([c.section for c in chunks])
            out["texts"].append([c.text for c in chunks])
            out["metadata"].append(json.dumps([c.metadata for c in chunks]))  # each chunk's (OCR, per page)
            out["rejected"].append(rejected)
            spans.append((len(texts), len(texts) + len(chunks)))
            texts.extend(c.embedding_text(title) for c in chunks)
        vectors = self.embedder.embed_documents(texts)
        out["vectors"] = [vectors[a:b] for a, b in spans]
        return out

    def _parse(self, path: Path) -> tuple[str, list[TextChunk], str | None]:
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is not there on the Ray node {os.uname().nodename}: every node must read the folder at the "
                "same path (a shared filesystem)"
            )
        try:
            doc = self.parser.run(parse_file, path, self.spec)
        except Rejected as rej:
            return "", [], rej.reason
        return doc.title, doc.chunks, None


def _document_stream(
    ray: Any, items: Sequence[SourceItem], settings: Settings, options: RayOptions
) -> Generator[dict, None, None]:
    """Run the actor pool over `items`; rows come back as they are done (in no set order)."""
    from ray.data import ActorPoolStrategy

    rows = [{"path": it.path, "abs_path": str(it.abs_path)} for it in items]
    batches = max(1, math.ceil(len(rows) / options.docs_per_batch))
    ds = ray.data.from_items(rows, override_num_blocks=batches)
    ds.context.enable_progress_bars = False  # this run's bar is the CLI's
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    ds = ds.map_batches(
        ParseAndEmbed,
        fn_constructor_args=(settings, parse_spec(settings)),
        batch_size=options.docs_per_batch,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=min(options.actors, batches)),  # no actor (and model) without work
        num_cpus=options.cpus_per_actor,
    )
    return iter(ds.iter_rows())


def parse_spec(settings: Settings) -> ParseSpec:
    """The limits `RagService` parses with, from the same settings."""
    from rag.loaders import LoadLimits

    return ParseSpec(
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        limits=LoadLimits(max_unpacked_bytes=settings.max_unpacked_bytes, max_chars=settings.max_document_chars),
        max_chunks=settings.max_document_chunks,
    )


# --- this process: the ingestion core, fed by Ray ------------------------------------------
@dataclass
class DocumentResult:
    title: str
    chunks: list[TextChunk]
    vectors: list[list[float]]
    rejected: str | None


class _Results:
    """Ray's rows by path: a request pulls rows until its file's has come, keeping the others."""

    def __init__(self, rows: Iterator[dict]) -> None:
        self._rows = rows
        self._waiting: dict[str, DocumentResult] = {}

    def take(self, path: str) -> DocumentResult | None:
        while path not in self._waiting:
            row = next(self._rows, None)
            if row is None:
                return None
            metadata = json.loads(str(row["metadata"]))
            chunks = [
                TextChunk(index=i, section=str(section), text=str(text), metadata=meta)
                for i, (section, text, meta) in enumerate(zip(row["sections"], row["texts"], metadata, strict=True))
            ]
            self._waiting[str(row["path"])] = DocumentResult(
                title=str(row["title"]),
                chunks=chunks,
                vectors=[[float(x) for x in vec] for vec in row["vectors"]],
                rejected=row["rejected"] or None,
            )
        return self._waiting.pop(path)


class _VectorsFromRay:
    """The indexer's embedder: hands out the vectors Ray computed for the texts of the batch.

    A text Ray did not embed (a file that changed after the work was planned) is embedded
    here, by the service's own embedder.
    """

    def __init__(self, fallback: Embedder) -> None:
        self.fallback = fallback
        self.name = fallback.name
        self.dim = fallback.dim
        self._ready: dict[str, list[float]] = {}

    def add(self, texts: Sequence[str], vectors: Sequence[list[float]]) -> None:
        self._ready.update(zip(texts, vectors, strict=True))

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self._ready]
        if missing:
            log.info("embedding %d chunks here that Ray did not", len(missing))
            self._ready.update(zip(missing, self.fallback.embed_documents(missing), strict=True))
        out = [self._ready[t] for t in texts]
        self._ready.clear()  # the pipeline embeds each batch once, right after preparing it
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.fallback.embed_query(text)


class RayFedIndexer(RagIndexer):
    """`RagIndexer` whose parsing and embedding were done by Ray; ids, payloads and writes are its own."""

    def __init__(self, service: RagService, results: _Results) -> None:
        self.results = results
        self.vectors = _VectorsFromRay(service.query_embedder)
        super().__init__(service.store, self.vectors, service.parse, service.sparse)

    def prepare(self, item: SourceItem, content_hash: str, groups: list[str]) -> Prepared:
        got = self.results.take(item.path)
        if got is None:  # not planned for Ray: parsed (and later embedded) here
            return super().prepare(item, content_hash, groups)
        if got.rejected:
            raise Rejected(got.rejected)
        self.vectors.add([c.embedding_text(got.title) for c in got.chunks], got.vectors)
        return Prepared(
            item=item,
            content_hash=content_hash,
            groups=groups,
            title=got.title,
            units=len(got.chunks),
            payload=got.chunks,
        )


def pending_items(
    service: RagService, source: str, items: Sequence[SourceItem], groups: Sequence[str]
) -> list[SourceItem]:
    """The items the pipeline will hand its indexer, in its order: new, then changed (by content
    or groups), minus those it rejects unread (empty, too large, unreadable)."""
    indexed = {
        p: fingerprint(d.content_hash, d.groups) for p, d in service.metadata.documents_of_source(source).items()
    }
    new: list[SourceItem] = []
    changed: list[SourceItem] = []
    for it in items:
        if it.size_bytes == 0 or it.size_bytes > service.settings.max_file_bytes:
            continue
        try:
            found = fingerprint(sha256_file(it.abs_path), groups)
        except OSError:
            continue
        old = indexed.get(it.path)
        if old is None:
            new.append(it)
        elif old != found:
            changed.append(it)
    return new + changed


def ingest_with_ray(
    service: RagService,
    path: Path,
    groups: Sequence[str],
    *,
    options: RayOptions = RayOptions(),
    progress: ProgressCallback | None = None,
) -> RunSummary:
    """Ingest a file or re-sync a folder like `RagService.ingest`, the parsing and embedding on Ray."""
    source, items, complete = scan_source(Path(path))
    groups = sorted(set(groups))
    pending = pending_items(service, source, items, groups)
    if not pending:  # unchanged, or only removals and rejections: nothing for Ray to do
        indexer = RayFedIndexer(service, _Results(iter(())))
        return _pipeline(service, indexer).ingest_items(source, items, groups, complete=complete, progress=progress)
    log.info("%d of %d files to parse and embed on Ray (%d actors)", len(pending), len(items), options.actors)
    local_cpus = options.local_cpus or max(os.cpu_count() or 1, math.ceil(options.actors * options.cpus_per_actor))
    with ray_cluster(options.address, local_cpus=local_cpus) as ray:
        _check_room(ray, options)
        rows = _document_stream(ray, pending, service.settings, options)
        try:
            indexer = RayFedIndexer(service, _Results(rows))
            return _pipeline(service, indexer).ingest_items(source, items, groups, complete=complete, progress=progress)
        finally:
            rows.close()  # stops the dataset while Ray is still connected


def _pipeline(service: RagService, indexer: RayFedIndexer) -> IngestPipeline:
    return IngestPipeline(service.metadata, indexer, max_file_bytes=service.settings.max_file_bytes)


def _check_room(ray: Any, options: RayOptions) -> None:
    """An actor pool larger than the cluster's CPUs would wait forever: refuse it up front."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    wanted = options.actors * options.cpus_per_actor
    if wanted > cpus:
        raise RayUnavailable(
            f"{options.actors} actors of {options.cpus_per_actor:g} CPU need {wanted:g} CPUs; the Ray cluster has {cpus:g}"
        )
