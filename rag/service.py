"""The RAG service: one object that owns the stores and answers, used by the API and CLI.

It composes the ports (metadata store, vector store, embedder, generator) from settings,
or takes them ready-made (tests pass real local instances). Ingests are serialised; queries
run concurrently with them, each role with its own embedder instance (HF tokenizers must not
be shared between threads).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rag.answer import (
    ABSTAIN_TEXT,
    ExtractiveGenerator,
    Generator,
    LLMGenerator,
    llm_abstained,
    make_citations,
)
from rag.embeddings import Embedder, make_embedder
from rag.feedback import FeedbackStore
from rag.indexer import RagIndexer
from rag.loaders import LoadLimits
from rag.models import Answer, Timings
from rag.parsing import ParsedDocument, ParseSpec, parse_file, parse_text
from rag.retrieval import Retriever
from rag.sparse import Bm25Encoder
from rag.vectorstore import VectorStore, open_vector_store
from shared.auth import Principal
from shared.config import Settings
from shared.ingestion import IngestPipeline, RunSummary, SourceItem, file_item, folder_source
from shared.ingestion.pipeline import ProgressCallback
from shared.ingestion.worker import ParseWorker
from shared.metadata import MetadataStore
from shared.metadata.store import DocumentInfo
from shared.objectstore import ObjectStore

if TYPE_CHECKING:
    from shared.monitoring.drift import BufferedRecorder, DriftMonitor

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DRIFT_STREAM = "rag"
INGEST_KINDS = ("ingest", "sync", "upload", "table", "stream")
SHUTDOWN_WAIT_S = 10.0


class AccessDenied(PermissionError):
    pass


class UploadConflict(Exception):
    """An upload of this name exists for other groups; replacing it must be asked for."""

    def __init__(self, existing: DocumentInfo, groups: Sequence[str]) -> None:
        self.existing = existing
        super().__init__(
            f"an upload of this name already exists as document {existing.id}, readable by "
            f"{', '.join(existing.groups)}; send replace=true to replace it with one readable by {', '.join(groups)}"
        )


UPLOADS = "uploads"  # the uploads' folder under the home, and their prefix in the object store


def upload_object_key(folder: str, name: str) -> str:
    """`folder/name` of an upload as an object key (a sanitized name may start with '-', which keys may not)."""
    return f"{folder}/{name if name[:1].isalnum() else 'u' + name}"


def sanitize_filename(name: str) -> str:
    """A safe basename: no directories, no leading dots, only [A-Za-z0-9._-]."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).lstrip("._") or "upload"
    stem, dot, ext = base.rpartition(".")
    if len(base) > 120:
        base = (stem[:110] + dot + ext[:9]) if dot else base[:120]
    return base


def make_generator(settings: Settings) -> Generator:
    if settings.llm_base_url:
        if not settings.llm_model:
            raise ValueError("an LLM endpoint is configured but no model: set LOOPLINE_LLM_MODEL (or OPENAI_MODEL)")
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return LLMGenerator(
            model=settings.llm_model, base_url=settings.llm_base_url, api_key=key, timeout_s=settings.llm_timeout_s
        )
    return ExtractiveGenerator()


class RagService:
    def __init__(
        self,
        settings: Settings,
        *,
        metadata: MetadataStore | None = None,
        store: VectorStore | None = None,
        embedder_factory: Callable[[], Embedder] | None = None,
        generator: Generator | None = None,
        drift: DriftMonitor | BufferedRecorder | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.settings = settings
        settings.ensure_home()
        self.metadata = metadata or MetadataStore(settings.resolved_database_url)
        self.feedback = FeedbackStore(self.metadata)  # users' ratings, on the metadata database
        self._owns_metadata = metadata is None  # a store handed in belongs to the caller (the app's root)
        self.store = store or open_vector_store(settings)
        self._embedder_factory = embedder_factory or (lambda: make_embedder(settings))
        self.generator = generator or make_generator(settings)
        self.drift = drift  # optional: watches query length, top-1 score, abstentions, citations, ratings
        # Uploaded originals, kept where the deployment keeps its objects (a bucket when scaled out).
        self.upload_objects = objects.scoped(UPLOADS) if objects is not None else None
        self.sparse = Bm25Encoder() if settings.hybrid else None
        self._query_embedder: Embedder | None = None
        self._pipeline: IngestPipeline | None = None
        self._retriever: Retriever | None = None
        self._ingest_lock = threading.RLock()  # uploads hold it across write and ingest
        self._init_lock = threading.Lock()
        self._parse_worker = ParseWorker(settings.parse_timeout_s, preload=["rag.parsing"])
        self._parse_spec = ParseSpec(
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            limits=LoadLimits(max_unpacked_bytes=settings.max_unpacked_bytes, max_chars=settings.max_document_chars),
            max_chunks=settings.max_document_chunks,
        )
        self._interrupt_orphaned_runs()

    # --- composition -----------------------------------------------------------------
    @property
    def query_embedder(self) -> Embedder:
        with self._init_lock:
            if self._query_embedder is None:
                self._query_embedder = self._embedder_factory()
            return self._query_embedder

    @property
    def retriever(self) -> Retriever:
        """One retriever per service: the model loads and the collection is checked once."""
        embedder = self.query_embedder
        with self._init_lock:
            if self._retriever is None:
                self._retriever = Retriever(self.store, embedder, self.sparse)
            return self._retriever

    def warm_up(self) -> None:
        """Load what the first answer needs — the query embedder and its model — now, not on the
        first question (the local model takes seconds to load). The API runs it in the background."""
        self.retriever.embedder.embed_query("warm-up")

    @property
    def pipeline(self) -> IngestPipeline:
        with self._init_lock:
            if self._pipeline is None:
                indexer = RagIndexer(
                    self.store, self._embedder_factory(), self.parse, self.sparse, parse_text=self.parse_record
                )
                self._pipeline = IngestPipeline(self.metadata, indexer, max_file_bytes=self.settings.max_file_bytes)
            return self._pipeline

    def parse(self, path: Path) -> ParsedDocument:
        """Load and chunk one file in the parse worker, within the configured limits."""
        return self._parse_worker.run(parse_file, path, self._parse_spec)

    def parse_record(self, title: str, text: str) -> ParsedDocument:
        """Chunk a record's text here: no untrusted bytes to decode, the same limits as files."""
        return parse_text(title, text, self._parse_spec)

    def _interrupt_orphaned_runs(self) -> None:
        """Runs a dead process left `running` become `interrupted`.

        Only on embedded stores: this process then holds the home's vector store lock, so no
        live process can own such a run. With a shared database and vector server, other
        processes may be ingesting; their stale runs are left to the run_stuck alert.
        """
        if self.settings.database_url or self.settings.qdrant_url:
            return
        found = self.metadata.interrupt_running_runs(
            INGEST_KINDS, reason="the process running it stopped before the run finished; the next run continues it"
        )
        if found:
            log.warning("runs %s were left running by a process that stopped: marked interrupted", found)

    def stop(self) -> None:
        """Abandon running ingests now (SIGTERM): they stop at the next file, recorded as interrupted."""
        self._parse_worker.stop()
        if self._pipeline is not None:
            self._pipeline.cancel()

    def close(self) -> None:
        self.stop()
        if self._ingest_lock.acquire(timeout=SHUTDOWN_WAIT_S):  # let an ingest record its interruption
            self._ingest_lock.release()
        else:
            log.warning("an ingest still runs after %.0f s; closing the stores under it", SHUTDOWN_WAIT_S)
        self._parse_worker.close()
        close_drift = getattr(self.drift, "close", None)
        if callable(close_drift):
            close_drift()  # a buffered recorder writes what is still waiting
        self.store.close()
        if self._owns_metadata:
            self.metadata.close()

    def __enter__(self) -> RagService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ingestion -------------------------------------------------------------------
    def ingest(
        self,
        path: Path,
        groups: Sequence[str],
        *,
        kind: str = "ingest",
        progress: ProgressCallback | None = None,
    ) -> RunSummary:
        with self._ingest_lock:
            return self.pipeline.ingest(Path(path), groups, kind=kind, progress=progress)

    def ingest_records(
        self,
        source: str,
        items: Sequence[SourceItem],
        *,
        removed: Sequence[str] = (),
        groups: Sequence[str] = ("public",),
        complete: bool = False,
        kind: str = "stream",
        progress: ProgressCallback | None = None,
    ) -> RunSummary:
        """Index records of a table or a stream (their own groups where they carry them) and drop
        the `removed` keys; with `complete`, the items are all the source has (a snapshot)."""
        with self._ingest_lock:
            return self.pipeline.ingest_items(
                source, items, groups, complete=complete, kind=kind, progress=progress, removed=removed
            )

    def ingest_upload(
        self, filename: str, data: bytes, groups: Sequence[str], *, replace: bool = False
    ) -> tuple[DocumentInfo | None, RunSummary]:
        """Store an uploaded file under home/uploads (and its original in the object store), then ingest it.

        The file lands in a folder named after a hash of the name exactly as sent, so names
        that sanitize alike ("hr/salary.md", "sales/salary.md", "a b.md", "a_b.md") never
        meet. The same name again is a new version of that document, unless the groups
        differ: then it raises UploadConflict unless `replace` asks for the replacement.
        """
        uploads = self.settings.home / UPLOADS
        key = hashlib.sha256(filename.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        folder = uploads / key
        name = sanitize_filename(filename)
        groups = sorted(set(groups))
        with self._ingest_lock:  # two uploads of one name must not swap contents and groups
            existing = self.metadata.find_document(folder_source(uploads), f"{key}/{name}")
            if existing is not None and list(existing.groups) != groups and not replace:
                raise UploadConflict(existing, groups)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            tmp = folder / f".{name}.part"
            tmp.write_bytes(data)
            tmp.replace(target)
            if self.upload_objects is not None:
                self.upload_objects.put(upload_object_key(key, name), data)
            item = file_item(uploads, target)
            run = self.pipeline.ingest_items(item.source, [item], groups, complete=False, kind="upload")
            return self.metadata.find_document(item.source, item.path), run

    # --- documents -------------------------------------------------------------------
    def list_documents(self, who: Principal) -> list[DocumentInfo]:
        return self.metadata.list_documents(groups=who.readable_groups)

    def get_document(self, doc_id: str, who: Principal) -> DocumentInfo | None:
        doc = self.metadata.get_document(doc_id)
        if doc is None or not _can_read(who, doc):
            return None  # indistinguishable from "absent": no probing of other groups' ids
        return doc

    def delete_document(self, doc_id: str, who: Principal) -> bool:
        doc = self.get_document(doc_id, who)
        if doc is None:
            return False
        if not who.admin:
            raise AccessDenied(f"user '{who.name}' may read but not delete documents (admins manage documents)")
        with self._ingest_lock:
            self.store.delete_document(doc_id)
            self.metadata.delete_document(doc_id)
            if self.upload_objects is not None and doc.source == folder_source(self.settings.home / UPLOADS):
                key, _, name = doc.path.partition("/")
                self.upload_objects.delete(upload_object_key(key, name))
        log.info("user %s deleted document %s (%s)", who.name, doc_id, doc.path)
        return True

    # --- answers ---------------------------------------------------------------------
    def ask(self, question: str, who: Principal, *, top_k: int | None = None) -> Answer:
        t0 = time.perf_counter()
        answer, citations, timing = self._retrieve(question, who, top_k)
        if answer is not None:
            self._observe(answer, timing)
            return answer
        t1 = time.perf_counter()
        text = self.generator.generate(question, citations)
        final = self._finish(question, text, citations, timing, t0, t1)
        self._observe(final, timing)
        return final

    def ask_stream(self, question: str, who: Principal, *, top_k: int | None = None) -> Iterator[dict]:
        """Events: {"type": "citations"}, then {"type": "token"}…, then {"type": "done"}."""
        t0 = time.perf_counter()
        answer, citations, timing = self._retrieve(question, who, top_k)
        if answer is not None:
            self._observe(answer, timing)
            yield {"type": "citations", "citations": []}
            yield {"type": "token", "text": answer.answer}
            yield {"type": "done", "answer": answer.model_dump()}
            return
        yield {"type": "citations", "citations": [c.model_dump() for c in citations]}
        t1 = time.perf_counter()
        parts = []
        for piece in self.generator.stream(question, citations):
            parts.append(piece)
            yield {"type": "token", "text": piece}
        final = self._finish(question, "".join(parts).strip(), citations, timing, t0, t1)
        self._observe(final, timing)
        yield {"type": "done", "answer": final.model_dump()}

    def _retrieve(self, question: str, who: Principal, top_k: int | None):
        retriever = self.retriever
        t0 = time.perf_counter()
        got = retriever.retrieve(question, groups=who.readable_groups, top_k=top_k or self.settings.top_k)
        relevant = [r for r in got.chunks if r.relevance >= self.settings.min_relevance]
        if not relevant:
            total = (time.perf_counter() - t0) * 1000
            return (
                Answer(
                    question=question,
                    answer=ABSTAIN_TEXT,
                    mode=self.generator.mode,  # type: ignore[arg-type]
                    abstained=True,
                    citations=[],
                    timings=Timings(embed_ms=got.embed_ms, search_ms=got.search_ms, total_ms=total),
                ),
                [],
                (got.embed_ms, got.search_ms, _top1(got.chunks)),
            )
        return None, make_citations(relevant), (got.embed_ms, got.search_ms, _top1(got.chunks))

    def _finish(self, question: str, text: str, citations, timing, t0: float, t1: float) -> Answer:
        t2 = time.perf_counter()
        embed_ms, search_ms = timing[:2]
        # The LLM read the sources and found no answer: say so, and cite nothing.
        declined = self.generator.mode == "llm" and llm_abstained(text)
        return Answer(
            question=question,
            answer=text,
            mode=self.generator.mode,  # type: ignore[arg-type]
            abstained=declined,
            citations=[] if declined else citations,
            timings=Timings(
                embed_ms=round(embed_ms, 2),
                search_ms=round(search_ms, 2),
                answer_ms=round((t2 - t1) * 1000, 2),
                total_ms=round((t2 - t0) * 1000, 2),
            ),
        )

    def add_feedback(self, who: Principal, *, question: str, answer: str, rating: int, comment: str) -> int:
        fid = self.feedback.add(user=who.name, question=question, answer=answer, rating=rating, comment=comment)
        self._record_drift({"feedback_rating": [rating]})
        return fid

    # --- drift monitoring (optional) ---------------------------------------------------
    def _observe(self, answer: Answer, timing: tuple) -> None:
        """One answer's monitored values: query length (characters), top-1 score, abstained, citations."""
        top1 = timing[2] if len(timing) > 2 else None
        values: dict[str, list[float]] = {
            "query_length": [len(answer.question)],
            "abstained": [1.0 if answer.abstained else 0.0],
            "citations": [len(answer.citations)],
        }
        if top1 is not None:
            values["top1_score"] = [top1]
        self._record_drift(values)

    def _record_drift(self, values: dict[str, list[float]]) -> None:
        if self.drift is None:
            return
        try:
            self.drift.record_many(DRIFT_STREAM, values)
        except Exception:  # monitoring must never cost a user their answer
            log.exception("recording drift values of stream %s failed", DRIFT_STREAM)


def drift_reference_label(settings: Settings) -> str:
    """What the `rag` stream's reference belongs to: the embedding model and the answer generator.

    Scores and abstentions change when either changes, so a new one asks for a new reference.
    """
    generator = f"llm:{settings.llm_model}" if settings.llm_base_url else "extractive"
    return f"embedding:{settings.embedding_model} {generator}"[:256]


def _top1(chunks: Sequence) -> float | None:
    """The best retrieval score, abstentions included (a falling top-1 score is the drift to see)."""
    return max((float(c.relevance) for c in chunks), default=None)


def _can_read(who: Principal, doc: DocumentInfo) -> bool:
    groups = who.readable_groups
    return groups is None or bool(set(groups) & set(doc.groups))
