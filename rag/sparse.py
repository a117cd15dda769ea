"""BM25 sparse vectors computed locally with Qdrant Edge's tokenizer and stemmer.

No model download (fastembed's Qdrant/bm25 fails offline). Token ids are stable hashes,
and the collection's IDF modifier turns term frequencies into BM25 scores inside Qdrant,
so the same vectors work with the embedded engine and a Qdrant server.
"""

from __future__ import annotations

import qdrant_edge as qe

from rag.vectorstore.base import SparseVec


class Bm25Encoder:
    def __init__(self, avg_len: float = 150.0) -> None:
        self._bm25 = qe.Bm25(qe.Bm25Config(language="english", avg_len=avg_len))

    def document(self, text: str) -> SparseVec:
        sv = self._bm25.embed_document(text)
        return SparseVec(list(sv.indices), list(sv.values))

    def query(self, text: str) -> SparseVec:
        sv = self._bm25.embed_query(text)
        return SparseVec(list(sv.indices), list(sv.values))
