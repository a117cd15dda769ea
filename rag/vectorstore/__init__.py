"""Vector store port and its two adapters (Qdrant Edge embedded, qdrant-client server)."""

from rag.vectorstore.base import (
    ChunkPoint,
    CollectionInfo,
    EmbeddingMismatch,
    SearchHit,
    SparseVec,
    StoreLocked,
    VectorStore,
)

__all__ = [
    "ChunkPoint",
    "CollectionInfo",
    "EmbeddingMismatch",
    "SearchHit",
    "SparseVec",
    "StoreLocked",
    "VectorStore",
    "open_vector_store",
]


def open_vector_store(settings) -> VectorStore:  # noqa: ANN001
    """The adapter the settings ask for: a Qdrant server, qdrant-client local mode, or Edge."""
    if settings.qdrant_url or settings.qdrant_path:
        from rag.vectorstore.qdrant_server import QdrantServerStore

        return QdrantServerStore.from_settings(settings)
    from rag.vectorstore.edge import EdgeStore

    return EdgeStore(settings.home / "qdrant-edge" / settings.collection)
