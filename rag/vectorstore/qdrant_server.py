"""Server adapter: a Qdrant server through qdrant-client, or qdrant-client's local mode.

For deployments that already run Qdrant (several writers, replicas, snapshots) and for
tests that want a second engine to hold EdgeStore to. It mirrors EdgeStore point for point
(same RRF k, same prefetch sizes, same empty-groups rule); it deliberately does not manage
the server (no aliases, sharding, snapshots or retries) and adds nothing beyond the port.
The model record lives in the collection's metadata, which needs a server as recent as
qdrant-client 1.20 expects (collection metadata and parametrised RRF).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qdrant_client import QdrantClient, models

from rag.vectorstore.base import (
    DENSE,
    INDEXED_KEYWORDS,
    SPARSE,
    ChunkPoint,
    CollectionInfo,
    EmbeddingMismatch,
    SearchHit,
    SparseVec,
    StoreLocked,
    VectorStore,
)

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)
# Same constant as EdgeStore: Fusion.RRF alone would use qdrant's default k (2), and the
# two adapters would then rank the same candidates differently.
RRF_K = 60
_LOCKED_MARK = "already accessed by another instance"


def _groups_filter(groups: Sequence[str] | None, extra: list[models.Condition] | None = None) -> models.Filter | None:
    must: list[models.Condition] = list(extra or [])
    if groups is not None:
        # An empty group list must match nothing, not everything: say so with a sentinel
        # instead of relying on how each engine reads MatchAny([]).
        must.append(models.FieldCondition(key="groups", match=models.MatchAny(any=list(groups) or ["\x00none"])))
    return models.Filter(must=must) if must else None


def _doc_condition(doc_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="doc_id", match=models.MatchValue(value=doc_id))


class QdrantServerStore(VectorStore):
    """One collection of a Qdrant server (or local-mode folder); the model record is its metadata."""

    def __init__(
        self, client: QdrantClient, collection: str, *, shards: int | None = None, replicas: int | None = None
    ) -> None:
        self.client = client
        self.collection = collection
        self.shards, self.replicas = shards, replicas  # how a cluster spreads and copies a new collection
        opts = client.init_options
        self._local = opts.get("path") is not None or opts.get("location") == ":memory:"
        self._known = False  # the collection was seen to exist: skip a round trip per call

    @classmethod
    def from_settings(cls, settings: Settings) -> QdrantServerStore:
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            client = QdrantClient(url=settings.qdrant_url, api_key=key)
        else:
            try:
                client = QdrantClient(path=str(settings.qdrant_path))
            except RuntimeError as exc:
                if _LOCKED_MARK in str(exc):
                    raise StoreLocked(
                        f"{settings.qdrant_path} is in use by another loopline process (a running `loopline serve`?)"
                    ) from exc
                raise
        return cls(client, settings.collection, shards=settings.qdrant_shards, replicas=settings.qdrant_replicas)

    # --- collection ------------------------------------------------------------------
    def collection_info(self) -> CollectionInfo | None:
        if not self._exists():
            return None
        meta = self.client.get_collection(self.collection).config.metadata or {}
        if "embedding_model" not in meta or "dim" not in meta:
            # A collection loopline did not create: refuse rather than guess its model.
            raise EmbeddingMismatch(
                f"collection '{self.collection}' has no embedding model record; "
                "point LOOPLINE_COLLECTION at a collection loopline created"
            )
        return CollectionInfo(embedding_model=str(meta["embedding_model"]), dim=int(meta["dim"]))

    def create_collection(self, info: CollectionInfo) -> None:
        self.client.create_collection(
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=info.dim, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"embedding_model": info.embedding_model, "dim": info.dim},
            shard_number=self.shards,
            replication_factor=self.replicas,
        )
        self._known = True
        log.info("created collection %s for %s (dim %d)", self.collection, info.embedding_model, info.dim)
        if self._local:
            return  # local mode ignores keyword indexes (and warns about each one)
        for key in INDEXED_KEYWORDS:
            self.client.create_payload_index(self.collection, key, models.PayloadSchemaType.KEYWORD)

    def _exists(self) -> bool:
        if not self._known:
            self._known = self.client.collection_exists(self.collection)
        return self._known

    # --- writes ----------------------------------------------------------------------
    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        if not self._exists():
            raise RuntimeError("the collection does not exist yet: ingest documents first")
        structs = []
        for p in points:
            vec: dict[str, Any] = {DENSE: list(p.vector)}
            if p.sparse is not None and p.sparse.indices:
                vec[SPARSE] = models.SparseVector(indices=p.sparse.indices, values=p.sparse.values)
            structs.append(models.PointStruct(id=p.id, vector=vec, payload=p.payload))
        self.client.upsert(self.collection, points=structs, wait=True)

    def delete_document(self, doc_id: str, *, keep_version: str | None = None) -> None:
        if not self._exists():
            return
        must_not: list[models.Condition] | None = (
            [models.FieldCondition(key="version", match=models.MatchValue(value=keep_version))]
            if keep_version
            else None
        )
        flt = models.Filter(must=[_doc_condition(doc_id)], must_not=must_not)
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=flt), wait=True)

    # --- reads -----------------------------------------------------------------------
    def search(
        self,
        dense: Sequence[float],
        *,
        sparse: SparseVec | None = None,
        groups: Sequence[str] | None = None,
        limit: int = 5,
        with_vectors: bool = False,
    ) -> list[SearchHit]:
        if not self._exists():
            return []
        flt = _groups_filter(groups)
        with_vector: bool | list[str] = [DENSE] if with_vectors else False
        if sparse is not None and sparse.indices:
            fetch = max(limit * 4, 20)
            resp = self.client.query_points(
                self.collection,
                prefetch=[
                    models.Prefetch(query=list(dense), using=DENSE, filter=flt, limit=fetch),
                    models.Prefetch(
                        query=models.SparseVector(indices=sparse.indices, values=sparse.values),
                        using=SPARSE,
                        filter=flt,
                        limit=fetch,
                    ),
                ],
                query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)),
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=with_vector,
            )
        else:
            resp = self.client.query_points(
                self.collection,
                query=list(dense),
                using=DENSE,
                query_filter=flt,
                limit=limit,
                with_payload=True,
                with_vectors=with_vector,
            )
        hits = []
        for sp in resp.points:
            vec = None
            if with_vectors and sp.vector is not None:
                vec = sp.vector[DENSE] if isinstance(sp.vector, dict) else sp.vector
            hits.append(SearchHit(id=str(sp.id), score=float(sp.score), payload=dict(sp.payload or {}), vector=vec))
        return hits

    def count(self, *, doc_id: str | None = None, groups: Sequence[str] | None = None) -> int:
        if not self._exists():
            return 0
        extra: list[models.Condition] | None = [_doc_condition(doc_id)] if doc_id else None
        return self.client.count(self.collection, count_filter=_groups_filter(groups, extra), exact=True).count

    def close(self) -> None:
        self.client.close()
