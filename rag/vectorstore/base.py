"""The vector store port: what the RAG pipeline needs from Qdrant, and nothing more.

Chunks carry their document id, version (content hash) and reading groups as indexed
payload; every search is filtered by groups inside the store, never afterwards in Python.
A collection remembers which embedding model filled it, and refuses another one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DENSE = "dense"
SPARSE = "bm25"
INDEXED_KEYWORDS = ("doc_id", "version", "groups", "source")


class StoreLocked(RuntimeError):
    """Another process owns the embedded store's folder."""


class EmbeddingMismatch(RuntimeError):
    """The collection was built with another embedding model (training-serving skew)."""


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class CollectionInfo:
    embedding_model: str
    dim: int


@dataclass
class ChunkPoint:
    """One chunk: its id, dense and sparse vectors, and payload (text, source, groups, …)."""

    id: str
    vector: list[float]
    payload: dict[str, Any]
    sparse: SparseVec | None = None


@dataclass
class SearchHit:
    id: str
    score: float
    payload: dict[str, Any]
    vector: list[float] | None = field(default=None, repr=False)


class VectorStore(ABC):
    """A collection of chunk points; one adapter per Qdrant engine."""

    @abstractmethod
    def collection_info(self) -> CollectionInfo | None:
        """The embedding model and dimension the collection was built with, if it exists."""

    @abstractmethod
    def create_collection(self, info: CollectionInfo) -> None:
        """Create the collection with dense + sparse vectors and keyword payload indexes."""

    def ensure_collection(self, info: CollectionInfo) -> None:
        """Create the collection, or check that it was built with the same model."""
        current = self.collection_info()
        if current is None:
            self.create_collection(info)
        elif current != info:
            raise EmbeddingMismatch(
                f"the collection was built with embedding model '{current.embedding_model}' "
                f"(dim {current.dim}); refusing '{info.embedding_model}' (dim {info.dim}). "
                "Re-ingest into a new collection (LOOPLINE_COLLECTION) to switch models, or set "
                "LOOPLINE_EMBEDDING_RUNTIME / LOOPLINE_EMBEDDING_PRECISION back to what built it "
                "(`loopline rag embedding-model` shows what this configuration uses)."
            )

    @abstractmethod
    def upsert(self, points: Sequence[ChunkPoint]) -> None: ...

    @abstractmethod
    def delete_document(self, doc_id: str, *, keep_version: str | None = None) -> None:
        """Delete a document's chunks; with keep_version, only its other versions."""

    @abstractmethod
    def search(
        self,
        dense: Sequence[float],
        *,
        sparse: SparseVec | None = None,
        groups: Sequence[str] | None = None,
        limit: int = 5,
        with_vectors: bool = False,
    ) -> list[SearchHit]:
        """Top chunks for a query; dense and sparse fused with RRF when sparse is given.

        `groups=None` means no restriction (admins); otherwise only chunks readable by
        one of the groups are considered.
        """

    @abstractmethod
    def count(self, *, doc_id: str | None = None, groups: Sequence[str] | None = None) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
