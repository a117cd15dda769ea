"""Embedded adapter: Qdrant Edge (the Qdrant storage engine in-process), the default.

WAL, HNSW, payload indexes and RRF fusion run inside the shard, so a filtered top-5 over
thousands of chunks takes about a millisecond. The folder is owned by one process
(an exclusive lock); a second opener gets `StoreLocked` and should talk to the owner.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import qdrant_edge as qe

from rag.vectorstore.base import (
    DENSE,
    INDEXED_KEYWORDS,
    SPARSE,
    ChunkPoint,
    CollectionInfo,
    SearchHit,
    SparseVec,
    StoreLocked,
    VectorStore,
)

log = logging.getLogger(__name__)
RRF_K = 60


def _groups_filter(groups: Sequence[str] | None, extra: list | None = None) -> qe.Filter | None:
    must = list(extra or [])
    if groups is not None:
        # An empty group list must match nothing, not everything.
        must.append(qe.FieldCondition(key="groups", match=qe.MatchAny(any=list(groups) or ["\x00none"])))
    return qe.Filter(must=must) if must else None


class EdgeStore(VectorStore):
    """A Qdrant Edge shard in `folder/shard`, with its model record in `folder/collection.json`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.folder / ".lock", "a+")  # noqa: SIM115 - held for the store's life
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise StoreLocked(
                f"{self.folder} is in use by another loopline process (a running `loopline serve`?)"
            ) from None
        self._lock_fh.seek(0)
        self._lock_fh.truncate()
        self._lock_fh.write(str(os.getpid()))
        self._lock_fh.flush()
        self._write_lock = threading.Lock()
        self._shard: qe.EdgeShard | None = None
        if (self.folder / "shard").exists() and self.collection_info() is not None:
            self._shard = qe.EdgeShard.load(str(self.folder / "shard"))

    # --- collection ------------------------------------------------------------------
    def collection_info(self) -> CollectionInfo | None:
        meta = self.folder / "collection.json"
        if not meta.exists():
            return None
        data = json.loads(meta.read_text())
        return CollectionInfo(embedding_model=data["embedding_model"], dim=int(data["dim"]))

    def create_collection(self, info: CollectionInfo) -> None:
        if (self.folder / "shard").exists():
            # A crash between creating the shard and writing its record left it half made.
            log.warning("removing %s/shard: it has no collection record", self.folder)
            shutil.rmtree(self.folder / "shard")
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=info.dim, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        shard = qe.EdgeShard.create(str(self.folder / "shard"), config)
        for key in INDEXED_KEYWORDS:
            shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
        shard.flush()
        tmp = self.folder / "collection.json.tmp"
        tmp.write_text(json.dumps({"embedding_model": info.embedding_model, "dim": info.dim}))
        tmp.replace(self.folder / "collection.json")
        self._shard = shard

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError("the collection does not exist yet: ingest documents first")
        return self._shard

    # --- writes ----------------------------------------------------------------------
    def upsert(self, points: Sequence[ChunkPoint]) -> None:
        if not points:
            return
        eps = []
        for p in points:
            vec: dict = {DENSE: list(p.vector)}
            if p.sparse is not None and p.sparse.indices:
                vec[SPARSE] = qe.SparseVector(indices=p.sparse.indices, values=p.sparse.values)
            eps.append(qe.Point(id=p.id, vector=vec, payload=p.payload))
        with self._write_lock:
            self.shard.update(qe.UpdateOperation.upsert_points(eps))
            self.shard.flush()

    def delete_document(self, doc_id: str, *, keep_version: str | None = None) -> None:
        if self._shard is None:
            return
        must_not = [qe.FieldCondition(key="version", match=qe.MatchValue(keep_version))] if keep_version else None
        flt = qe.Filter(must=[qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id))], must_not=must_not)
        with self._write_lock:
            self.shard.update(qe.UpdateOperation.delete_points_by_filter(flt))
            self.shard.flush()

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
        if self._shard is None:
            return []
        flt = _groups_filter(groups)
        dense_q = qe.Query.Nearest(list(dense), using=DENSE)
        if sparse is not None and sparse.indices:
            fetch = max(limit * 4, 20)
            req = qe.QueryRequest(
                limit=limit,
                query=qe.Fusion.Rrf(k=RRF_K),
                prefetches=[
                    qe.Prefetch(limit=fetch, query=dense_q, filter=flt),
                    qe.Prefetch(
                        limit=fetch,
                        query=qe.Query.Nearest(
                            qe.SparseVector(indices=sparse.indices, values=sparse.values), using=SPARSE
                        ),
                        filter=flt,
                    ),
                ],
                filter=flt,
                with_payload=True,
                with_vector=[DENSE] if with_vectors else False,
            )
        else:
            req = qe.QueryRequest(
                limit=limit,
                query=dense_q,
                filter=flt,
                with_payload=True,
                with_vector=[DENSE] if with_vectors else False,
            )
        hits = []
        for sp in self.shard.query(req):
            vec = None
            if with_vectors and sp.vector is not None:
                vec = sp.vector[DENSE] if isinstance(sp.vector, dict) else sp.vector
            hits.append(SearchHit(id=str(sp.id), score=float(sp.score), payload=dict(sp.payload or {}), vector=vec))
        # Edge orders equal scores differently from shard to shard; make results repeatable.
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    def count(self, *, doc_id: str | None = None, groups: Sequence[str] | None = None) -> int:
        if self._shard is None:
            return 0
        extra = [qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id))] if doc_id else None
        return self.shard.count(qe.CountRequest(filter=_groups_filter(groups, extra), exact=True))

    def close(self) -> None:
        if self._shard is not None:
            try:
                self._shard.flush()
                self._shard.close()
            finally:
                self._shard = None
        if not self._lock_fh.closed:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
