"""The RAG side of ingestion: file (or record) → chunks → dense + BM25 vectors → vector store.

Implements the ingestion core's `Indexer`. Files are loaded and chunked by `parse` (in
the service, `rag.parsing.parse_file` in a time-limited worker process). A new version of a document is written before
its old chunks are removed (by filter on doc_id and version), and chunk ids derive from
(document, version, position), so re-running a half-finished batch is idempotent.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from rag.chunking import TextChunk
from rag.embeddings import Embedder
from rag.parsing import ParsedDocument
from rag.sparse import Bm25Encoder
from rag.vectorstore import ChunkPoint, CollectionInfo, VectorStore
from shared.ingestion import Prepared, Rejected, SourceItem

log = logging.getLogger(__name__)


def chunk_id(doc_id: str, version: str, index: int) -> str:
    return str(uuid.uuid5(uuid.UUID(doc_id), f"{version}:{index}"))


class RagIndexer:
    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        parse: Callable[[Path], ParsedDocument],
        sparse: Bm25Encoder | None,
        parse_text: Callable[[str, str], ParsedDocument] | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.parse = parse
        self.parse_text = parse_text
        self.sparse = sparse
        self.store.ensure_collection(CollectionInfo(embedder.name, embedder.dim))

    def prepare(self, item: SourceItem, content_hash: str, groups: list[str]) -> Prepared:
        if item.abs_path is not None:
            doc = self.parse(item.abs_path)
        elif self.parse_text is not None:  # a record: its text is inline, titled by the record or its key
            doc = self.parse_text(item.title or item.path, item.text or "")
        else:
            raise Rejected("this index takes files only")
        return Prepared(
            item=item,
            content_hash=content_hash,
            groups=groups,
            title=doc.title,
            units=len(doc.chunks),
            payload=doc.chunks,
        )

    def commit(self, batch: Sequence[Prepared]) -> None:
        texts: list[str] = []
        owners: list[tuple[Prepared, TextChunk]] = []
        for p in batch:
            for ch in p.payload:
                texts.append(ch.embedding_text(p.title))
                owners.append((p, ch))
        vectors = self.embedder.embed_documents(texts)
        points = []
        for (p, ch), text, vec in zip(owners, texts, vectors, strict=True):
            doc_id = p.item.doc_id
            points.append(
                ChunkPoint(
                    id=chunk_id(doc_id, p.content_hash, ch.index),
                    vector=vec,
                    sparse=self.sparse.document(text) if self.sparse else None,
                    payload={
                        "doc_id": doc_id,
                        "version": p.content_hash,
                        "groups": list(p.groups),
                        "source": p.item.path,
                        "origin": p.item.source,
                        "title": p.title,
                        "section": ch.section,
                        "chunk_index": ch.index,
                        "text": ch.text,
                        **ch.metadata,
                    },
                )
            )
        self.store.upsert(points)
        for p in batch:  # only now drop what the new version replaced
            self.store.delete_document(p.item.doc_id, keep_version=p.content_hash)

    def remove(self, doc_id: str) -> None:
        self.store.delete_document(doc_id)
