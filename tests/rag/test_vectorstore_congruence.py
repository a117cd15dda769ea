"""Congruence: EdgeStore and QdrantServerStore (qdrant-client local mode) answer alike.

Modelled on qdrant-client's congruence tests: one fixture generator, one comparison
helper, and each operation written once and run against both adapters. Where an exact
answer is knowable (dense search, counts, group filtering) both adapters are also held to
a brute-force oracle, so two engines that agree on a wrong answer still fail.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from rag.vectorstore.base import (
    ChunkPoint,
    CollectionInfo,
    EmbeddingMismatch,
    SearchHit,
    SparseVec,
    StoreLocked,
    VectorStore,
)
from rag.vectorstore.edge import EdgeStore
from rag.vectorstore.qdrant_server import QdrantServerStore
from shared.config import Settings

DIM = 8
N_POINTS = 200
INFO = CollectionInfo(embedding_model="test-model", dim=DIM)
GROUPS = ("eng", "hr", "legal", "sales", "ops")
DOC_IDS = tuple(f"doc-{i}" for i in range(10))
VERSIONS = ("v1", "v2", "v3")
# Group lists a caller may hold: none (admin), empty, unknown, single, several.
GROUP_CHOICES: tuple[list[str] | None, ...] = (
    None,
    [],
    ["nobody"],
    ["eng"],
    ["hr"],
    ["legal", "ops"],
    ["sales", "eng", "hr"],
)
SCORE_TOL = 1e-5  # Edge scores in f32, local mode in f64
TIE_EPS = 1e-7  # RRF scores closer than this are the same rank sum

Opener = Callable[[Path], VectorStore]


def open_edge(folder: Path) -> VectorStore:
    return EdgeStore(folder / "edge")


def open_local(folder: Path) -> VectorStore:
    return QdrantServerStore(QdrantClient(path=str(folder / "local")), "test")


def open_local_from_settings(folder: Path) -> VectorStore:
    settings = Settings(home=folder, qdrant_url=None, qdrant_path=folder / "local", collection="test")
    return QdrantServerStore.from_settings(settings)


ADAPTERS: dict[str, Opener] = {"edge": open_edge, "local": open_local}


# --- the fixture generator ---------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    dense: list[float]
    sparse: SparseVec
    groups: list[str] | None


def make_points(seed: int = 7) -> list[ChunkPoint]:
    """200 deterministic chunks: 10 docs x 3 versions, 1-3 groups each, sparse over a small vocabulary."""
    rng = random.Random(seed)
    # Token ids are stable 32-bit hashes in rag.sparse, so use large ones here too.
    vocab = rng.sample(range(2**32), 40)
    points = []
    for i in range(N_POINTS):
        terms = sorted(rng.sample(vocab, rng.randint(1, 6)))
        points.append(
            ChunkPoint(
                id=str(uuid.UUID(int=rng.getrandbits(128))),
                vector=[rng.gauss(0, 1) for _ in range(DIM)],
                payload={
                    "doc_id": DOC_IDS[i % len(DOC_IDS)],
                    "version": VERSIONS[(i // len(DOC_IDS)) % len(VERSIONS)],
                    "groups": rng.sample(GROUPS, rng.randint(1, 3)),
                    "source": f"file-{i % 4}.md",
                    "text": f"chunk {i}",
                },
                # Some chunks have no sparse vector (empty text after tokenizing). Weights are
                # continuous on purpose: see test_hybrid_rrf_is_congruent_up_to_ties.
                sparse=None if i % 9 == 0 else SparseVec(terms, [rng.uniform(0.1, 3.0) for _ in terms]),
            )
        )
    return points


def make_queries(n: int, seed: int = 11) -> Iterator[Query]:
    rng = random.Random(seed)
    vocab = random.Random(7).sample(range(2**32), 40)  # the points' vocabulary
    for _ in range(n):
        terms = sorted(rng.sample(vocab, rng.randint(1, 4)))
        yield Query(
            dense=[rng.gauss(0, 1) for _ in range(DIM)],
            sparse=SparseVec(terms, [round(rng.uniform(0.5, 2.0), 3) for _ in terms]),
            groups=rng.choice(GROUP_CHOICES),
        )


def readable(point: ChunkPoint, groups: Sequence[str] | None) -> bool:
    return groups is None or bool(set(point.payload["groups"]) & set(groups))


def oracle_dense(points: Sequence[ChunkPoint], q: Query, limit: int) -> list[tuple[str, float]]:
    def cos(a: Sequence[float], b: Sequence[float]) -> float:
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    scored = sorted(((cos(p.vector, q.dense), p.id) for p in points if readable(p, q.groups)), reverse=True)
    return [(pid, s) for s, pid in scored[:limit]]


# --- the comparison helper ---------------------------------------------------------------
def assert_congruent(edge: list[SearchHit], local: list[SearchHit], *, ties: bool = False) -> None:
    """Same length, same scores rank by rank, same points and payloads.

    With `ties`, points whose scores are equal may come in either order, and the last tie
    group may have been cut by `limit` differently: only its size is compared.
    """
    assert len(edge) == len(local), (len(edge), len(local))
    for e, lo in zip(edge, local):
        assert e.score == pytest.approx(lo.score, abs=SCORE_TOL), (e, lo)
    if not ties:
        assert [h.id for h in edge] == [h.id for h in local]
    else:
        e_groups, l_groups = _tie_groups(edge), _tie_groups(local)
        assert [len(g) for g in e_groups] == [len(g) for g in l_groups]
        assert e_groups[:-1] == l_groups[:-1]
    by_id = {h.id: h for h in local}
    for h in edge:
        if h.id in by_id:
            assert h.payload == by_id[h.id].payload


def _tie_groups(hits: list[SearchHit]) -> list[set[str]]:
    groups: list[set[str]] = []
    anchor = math.inf
    for h in hits:
        if anchor - h.score > TIE_EPS:
            groups.append(set())
            anchor = h.score
        groups[-1].add(h.id)
    return groups


# --- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def points() -> list[ChunkPoint]:
    return make_points()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, points: list[ChunkPoint]) -> Iterator[dict[str, VectorStore]]:
    """Both adapters filled with the same points; read-only tests share them."""
    folder = tmp_path_factory.mktemp("congruence")
    opened = {name: opener(folder) for name, opener in ADAPTERS.items()}
    for store in opened.values():
        store.ensure_collection(INFO)
        store.upsert(points[:120])
        store.upsert(points[120:])  # two batches: Edge may put them in separate segments
    yield opened
    for store in opened.values():
        store.close()


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return request.param


# --- counts ------------------------------------------------------------------------------
def test_count_total_by_doc_and_by_groups(
    stores: dict[str, VectorStore], adapter: str, points: list[ChunkPoint]
) -> None:
    store = stores[adapter]
    assert store.count() == N_POINTS
    for doc_id in (*DOC_IDS, "missing"):
        assert store.count(doc_id=doc_id) == sum(p.payload["doc_id"] == doc_id for p in points)
    for groups in GROUP_CHOICES:
        expected = sum(readable(p, groups) for p in points)
        assert store.count(groups=groups) == expected, groups
        assert store.count(doc_id="doc-3", groups=groups) == sum(
            readable(p, groups) and p.payload["doc_id"] == "doc-3" for p in points
        )
    assert store.count(groups=[]) == 0
    assert store.count(groups=None) == N_POINTS


# --- dense search ------------------------------------------------------------------------
def test_dense_search_is_exact_and_congruent(stores: dict[str, VectorStore], points: list[ChunkPoint]) -> None:
    # 200 points stay far below Edge's indexing threshold, so the shard has no HNSW graph
    # and scans exactly; the oracle pins that (an approximate search would drift from it).
    for q in make_queries(150):
        expected = oracle_dense(points, q, limit=10)
        hits = {name: s.search(q.dense, groups=q.groups, limit=10) for name, s in stores.items()}
        for name, got in hits.items():
            assert [h.id for h in got] == [pid for pid, _ in expected], (name, q.groups)
            for h, (_, score) in zip(got, expected):
                assert h.score == pytest.approx(score, abs=SCORE_TOL)
        assert_congruent(hits["edge"], hits["local"])


def test_with_vectors_returns_the_stored_dense_vector(stores: dict[str, VectorStore], points: list[ChunkPoint]) -> None:
    by_id = {p.id: p for p in points}
    q = next(make_queries(1))
    hits = {name: s.search(q.dense, limit=5, with_vectors=True) for name, s in stores.items()}
    assert_congruent(hits["edge"], hits["local"])
    for got in hits.values():
        for h in got:
            # Cosine collections store the normalised vector.
            raw = by_id[h.id].vector
            norm = math.sqrt(sum(x * x for x in raw))
            assert h.vector == pytest.approx([x / norm for x in raw], abs=1e-5)
    for store in stores.values():
        assert all(h.vector is None for h in store.search(q.dense, limit=2))


# --- hybrid search -----------------------------------------------------------------------
def test_hybrid_rrf_is_congruent_up_to_ties(stores: dict[str, VectorStore]) -> None:
    # Both adapters fuse with RRF k=60 over the same prefetches, and the sparse IDF
    # statistics agree on a collection without deletions, so the fused scores agree rank
    # by rank (measured: within 2.2e-9), provided no two chunks tie inside a prefetch (the
    # fixture's sparse weights are continuous; duplicates are tested below). What differs
    # is the order among equal fused scores: a
    # point ranked r-th by dense only and one ranked r-th by sparse only both get 1/(60+r),
    # and Edge breaks that tie differently from local mode (measured on these 200 queries:
    # 76 list a tied pair in another order, 27 of them keep different members of the tie
    # group cut by `limit`). So: equal scores rank by rank, equal tie groups, and for the
    # last, possibly cut, group only its size.
    for q in make_queries(200, seed=23):
        hits = {name: s.search(q.dense, sparse=q.sparse, groups=q.groups, limit=8) for name, s in stores.items()}
        assert_congruent(hits["edge"], hits["local"], ties=True)
        if q.groups not in ([], ["nobody"]):
            assert len(hits["edge"]) == 8, q.groups


def test_hybrid_with_duplicate_chunks_agrees_on_the_tie_group(tmp_path: Path, points: list[ChunkPoint]) -> None:
    # Identical chunks (the same paragraph in two files) tie inside each prefetch, and there
    # the engines differ for real: local mode lists equal scores in a fixed order, Edge in an
    # order that changes from one shard to the next (16 orders of 6 tied points in 20 fresh
    # shards), so which duplicate gets which fused score is not reproducible. What is fixed:
    # the tie group itself, and its total RRF score, since the group occupies the same ranks.
    dup = points[60]  # not among the 50 stored below, so only the duplicates match it exactly
    unique_term = 7  # not in the generated vocabulary: only the duplicates carry it
    dups = [
        ChunkPoint(
            id=str(uuid.UUID(int=i + 1)),
            vector=dup.vector,
            payload={**dup.payload, "text": f"dup {i}"},
            sparse=SparseVec([unique_term], [2.0]),
        )
        for i in range(3)
    ]
    opened = {name: _filled(opener, tmp_path, [*points[:50], *dups]) for name, opener in ADAPTERS.items()}
    try:
        for store in opened.values():
            hits = store.search(dup.vector, sparse=SparseVec([unique_term], [1.0]), limit=5)
            assert {h.id for h in hits[:3]} == {d.id for d in dups}
            assert sum(h.score for h in hits[:3]) == pytest.approx(
                2 * sum(1 / (60 + r) for r in range(3)), abs=SCORE_TOL
            )
            assert hits[3].score < min(h.score for h in hits[:3])
    finally:
        for store in opened.values():
            store.close()


def test_hybrid_without_sparse_terms_is_dense_search(stores: dict[str, VectorStore]) -> None:
    q = next(make_queries(1, seed=5))
    for store in stores.values():
        plain = store.search(q.dense, limit=5)
        assert [h.id for h in store.search(q.dense, sparse=SparseVec([], []), limit=5)] == [h.id for h in plain]


# --- the security property ---------------------------------------------------------------
def test_group_filter_never_leaks(stores: dict[str, VectorStore], adapter: str, points: list[ChunkPoint]) -> None:
    store = stores[adapter]
    by_id = {p.id: p for p in points}
    for q in make_queries(60, seed=31):
        if q.groups is None:
            continue
        for sparse in (None, q.sparse):
            for hit in store.search(q.dense, sparse=sparse, groups=q.groups, limit=N_POINTS):
                assert set(hit.payload["groups"]) & set(q.groups), (hit.payload, q.groups)
                assert readable(by_id[hit.id], q.groups)
        # The filter is complete too: a limit above the collection returns every readable chunk.
        everything = store.search(q.dense, groups=q.groups, limit=N_POINTS)
        assert {h.id for h in everything} == {p.id for p in points if readable(p, q.groups)}
    assert store.search(points[0].vector, groups=[], limit=N_POINTS) == []
    assert store.search(points[0].vector, sparse=points[1].sparse, groups=[], limit=N_POINTS) == []


# --- writes ------------------------------------------------------------------------------
def _filled(opener: Opener, folder: Path, points: list[ChunkPoint]) -> VectorStore:
    store = opener(folder)
    store.ensure_collection(INFO)
    store.upsert(points)
    return store


def test_delete_document_keeps_only_the_kept_version(tmp_path: Path, points: list[ChunkPoint]) -> None:
    opened = {name: _filled(opener, tmp_path, points) for name, opener in ADAPTERS.items()}
    try:
        for store in opened.values():
            store.delete_document("doc-1", keep_version="v2")
            store.delete_document("doc-2")
            store.delete_document("missing")
        survivors = [
            p
            for p in points
            if p.payload["doc_id"] != "doc-2" and (p.payload["doc_id"] != "doc-1" or p.payload["version"] == "v2")
        ]
        for store in opened.values():
            assert store.count() == len(survivors) < N_POINTS
            assert store.count(doc_id="doc-1") == sum(p.payload["doc_id"] == "doc-1" for p in survivors) > 0
            assert store.count(doc_id="doc-2") == 0
            assert store.count(doc_id="doc-3") == sum(p.payload["doc_id"] == "doc-3" for p in points)
            hits = store.search(points[0].vector, limit=N_POINTS)
            assert {h.id for h in hits} == {p.id for p in survivors}
            assert {h.payload["version"] for h in hits if h.payload["doc_id"] == "doc-1"} == {"v2"}
        for q in make_queries(30, seed=41):
            dense = {name: s.search(q.dense, groups=q.groups, limit=10) for name, s in opened.items()}
            assert_congruent(dense["edge"], dense["local"])
            assert [h.id for h in dense["edge"]] == [pid for pid, _ in oracle_dense(survivors, q, 10)]
    finally:
        for store in opened.values():
            store.close()

    # Known engine difference: after a delete, Edge (like a Qdrant server) goes on counting
    # the deleted chunks in the sparse IDF statistics until the shard is reloaded, while
    # local mode recomputes them from live points at once (measured: BM25 scores of the
    # same chunk 1.96169 vs 1.93733; fused scores off by up to 6e-4 and 18 of these 60
    # queries incongruent).
    # After a reopen both read live statistics, and hybrid search agrees again.
    opened = {name: opener(tmp_path) for name, opener in ADAPTERS.items()}
    try:
        for q in make_queries(60, seed=43):
            hits = {name: s.search(q.dense, sparse=q.sparse, groups=q.groups, limit=8) for name, s in opened.items()}
            assert_congruent(hits["edge"], hits["local"], ties=True)
    finally:
        for store in opened.values():
            store.close()


def test_upsert_replaces_a_chunk_by_id(tmp_path: Path, adapter: str, points: list[ChunkPoint]) -> None:
    store = _filled(ADAPTERS[adapter], tmp_path, points[:20])
    try:
        changed = ChunkPoint(
            id=points[0].id.upper(), vector=points[1].vector, payload={**points[0].payload, "version": "v9"}
        )
        store.upsert([changed])
        assert store.count() == 20
        top = store.search(points[1].vector, limit=2)
        assert {h.id for h in top} == {points[0].id, points[1].id}  # ids come back in canonical form
        assert {h.payload["version"] for h in top if h.id == points[0].id} == {"v9"}
    finally:
        store.close()


def test_empty_store_answers_empty(tmp_path: Path, adapter: str) -> None:
    store = ADAPTERS[adapter](tmp_path)
    try:
        assert store.collection_info() is None
        assert store.count() == 0
        assert store.search([1.0] * DIM, limit=3) == []
        store.delete_document("doc-1")  # nothing to delete, no error
        with pytest.raises(RuntimeError, match="does not exist yet"):
            store.upsert(make_points()[:1])
    finally:
        store.close()


# --- persistence, model record and locking ----------------------------------------------
def test_model_record_survives_reopen_and_refuses_another_model(
    tmp_path: Path, adapter: str, points: list[ChunkPoint]
) -> None:
    opener = ADAPTERS[adapter]
    _filled(opener, tmp_path, points).close()
    with opener(tmp_path) as store:
        assert store.collection_info() == INFO
        store.ensure_collection(INFO)  # same model: fine
        assert store.count() == N_POINTS
        with pytest.raises(EmbeddingMismatch, match="test-model"):
            store.ensure_collection(CollectionInfo(embedding_model="other-model", dim=DIM))
        with pytest.raises(EmbeddingMismatch):
            store.ensure_collection(CollectionInfo(embedding_model="test-model", dim=DIM * 2))
        q = next(make_queries(1))
        assert [h.id for h in store.search(q.dense, groups=q.groups, limit=5)] == [
            pid for pid, _ in oracle_dense(points, q, 5)
        ]


@pytest.mark.parametrize("opener", [open_edge, open_local_from_settings], ids=["edge", "local"])
def test_second_opener_gets_store_locked(tmp_path: Path, opener: Opener) -> None:
    first = opener(tmp_path)
    try:
        first.ensure_collection(INFO)
        with pytest.raises(StoreLocked):
            opener(tmp_path)
    finally:
        first.close()
    second = opener(tmp_path)  # the lock goes with the owner
    try:
        assert second.collection_info() == INFO
    finally:
        second.close()


def test_fixture_generator_is_deterministic_and_varied(points: list[ChunkPoint]) -> None:
    assert [p.id for p in make_points()] == [p.id for p in points]
    assert len({p.payload["doc_id"] for p in points}) == len(DOC_IDS)
    assert any(len(p.payload["groups"]) > 1 for p in points)
    assert any(p.sparse is None for p in points)
    assert len(set(itertools.chain.from_iterable(p.sparse.indices for p in points if p.sparse))) <= 40
