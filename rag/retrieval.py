"""Retrieval: embed the question, search inside the caller's groups, score relevance.

Dense and BM25 results are fused with RRF inside Qdrant (when hybrid is on); the fused
rank decides the order, and each hit also gets its cosine similarity to the question,
which is what abstention and the reported score use (RRF scores are not comparable
across queries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.embeddings import Embedder
from rag.sparse import Bm25Encoder
from rag.vectorstore import CollectionInfo, EmbeddingMismatch, SearchHit, VectorStore

TIE_MARGIN = 5  # extra hits fetched so that ties at the cut are decided by similarity


@dataclass
class Retrieved:
    hit: SearchHit
    relevance: float


@dataclass
class Retrieval:
    chunks: list[Retrieved]
    embed_ms: float
    search_ms: float


class Retriever:
    def __init__(self, store: VectorStore, embedder: Embedder, sparse: Bm25Encoder | None) -> None:
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self._model_checked = False

    def check_model(self) -> None:
        """Refuse to query a collection built with another model; checked once it exists
        (reading the collection's record on every query would be I/O on the hot path)."""
        if self._model_checked:
            return
        info = self.store.collection_info()
        mine = CollectionInfo(self.embedder.name, self.embedder.dim)
        if info is not None and info != mine:
            raise EmbeddingMismatch(
                f"the index was built with '{info.embedding_model}' (dim {info.dim}) but queries "
                f"would be embedded with '{mine.embedding_model}' (dim {mine.dim}); refusing to answer. "
                "Set LOOPLINE_EMBEDDING_RUNTIME / LOOPLINE_EMBEDDING_PRECISION back to what built it, or "
                "re-ingest into a new collection (LOOPLINE_COLLECTION)"
            )
        self._model_checked = info is not None

    def retrieve(self, question: str, *, groups: Sequence[str] | None, top_k: int) -> Retrieval:
        self.check_model()
        t0 = time.perf_counter()
        qvec = self.embedder.embed_query(question)
        t1 = time.perf_counter()
        hits = self.store.search(
            qvec,
            sparse=self.sparse.query(question) if self.sparse else None,
            groups=groups,
            limit=top_k + TIE_MARGIN,
            with_vectors=True,
        )
        t2 = time.perf_counter()
        q = np.asarray(qvec, dtype=np.float32)
        chunks = [Retrieved(hit=h, relevance=_dot(q, h.vector) if h.vector else h.score) for h in hits]
        # RRF often ties (equal ranks in both lists), and the engine cuts ties arbitrarily:
        # fetch a few more, break ties by similarity, then cut — the same answer every run.
        chunks.sort(key=lambda r: (-round(r.hit.score, 9), -r.relevance, r.hit.id))
        chunks = chunks[:top_k]
        return Retrieval(chunks=chunks, embed_ms=(t1 - t0) * 1000, search_ms=(t2 - t1) * 1000)


def _dot(a: np.ndarray, b: Sequence[float]) -> float:
    return float(np.dot(a, np.asarray(b, dtype=np.float32)))
