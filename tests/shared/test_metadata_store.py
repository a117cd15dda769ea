"""The metadata store and rag's feedback store on it, run as one suite against SQLite and PostgreSQL (fixture `store`)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from rag.feedback import FeedbackStore
from shared.metadata.store import MetadataStore


def _doc(store: MetadataStore, doc_id: str, path: str, groups=("eng",), *, source: str = "src", **kw):
    fields = dict(title=f"title of {path}", content_hash=f"hash-{path}", size_bytes=10, chunk_count=2)
    fields.update(kw)
    return store.upsert_document(doc_id=doc_id, source=source, path=path, groups=groups, **fields)


# --- documents -------------------------------------------------------------------------
def test_upsert_then_get_and_find_return_the_document(store: MetadataStore) -> None:
    """A stored document comes back by id and by (source, path) with all its fields."""
    info = _doc(store, "d1", "a/readme.md", groups=["sales", "eng", "eng"], size_bytes=123, chunk_count=7)
    assert info.groups == ("eng", "sales")

    got = store.get_document("d1")
    assert got is not None
    assert (got.id, got.source, got.path, got.title) == ("d1", "src", "a/readme.md", "title of a/readme.md")
    assert (got.content_hash, got.size_bytes, got.chunk_count) == ("hash-a/readme.md", 123, 7)
    assert got.groups == ("eng", "sales")
    assert got.updated_at is not None

    assert store.find_document("src", "a/readme.md") == got
    assert store.find_document("src", "other.md") is None
    assert store.find_document("other-source", "a/readme.md") is None
    assert store.get_document("missing") is None


def test_reupsert_updates_fields_and_replaces_groups(store: MetadataStore) -> None:
    """Upserting an existing id overwrites its version and its groups, never duplicating it."""
    _doc(store, "d1", "a.md", groups=["eng", "sales"], content_hash="v1", chunk_count=1)
    first = store.get_document("d1")

    _doc(store, "d1", "a.md", groups=["sales", "legal"], content_hash="v2", chunk_count=5, title="new")

    got = store.get_document("d1")
    assert got.content_hash == "v2"
    assert got.chunk_count == 5
    assert got.title == "new"
    assert got.groups == ("legal", "sales")
    assert got.updated_at >= first.updated_at
    assert store.count_documents() == 1
    assert [d.id for d in store.list_documents(groups=["eng"])] == []
    assert [d.id for d in store.list_documents(groups=["legal"])] == ["d1"]


def test_reupsert_with_same_groups_keeps_them(store: MetadataStore) -> None:
    """Re-upserting with identical groups (a content-only update) leaves them intact."""
    _doc(store, "d1", "a.md", groups=["eng"], content_hash="v1")
    _doc(store, "d1", "a.md", groups=["eng"], content_hash="v2")
    assert store.get_document("d1").groups == ("eng",)
    assert [d.id for d in store.list_documents(groups=["eng"])] == ["d1"]


def test_delete_document(store: MetadataStore) -> None:
    """Deleting removes the document and its group rows; deleting again reports False."""
    _doc(store, "d1", "a.md", groups=["eng"])
    _doc(store, "d2", "b.md", groups=["eng"])

    assert store.delete_document("d1") is True
    assert store.get_document("d1") is None
    assert store.find_document("src", "a.md") is None
    assert [d.id for d in store.list_documents(groups=["eng"])] == ["d2"]
    assert store.count_documents() == 1
    assert store.delete_document("d1") is False

    # the freed (source, path) and id can be reused
    _doc(store, "d1", "a.md", groups=["sales"])
    assert store.get_document("d1").groups == ("sales",)


def test_list_documents_filters_by_groups(store: MetadataStore) -> None:
    """A reader sees only documents of one of their groups; None means every document."""
    _doc(store, "eng-doc", "1-eng.md", groups=["eng"])
    _doc(store, "both-doc", "2-both.md", groups=["eng", "sales"])
    _doc(store, "sales-doc", "3-sales.md", groups=["sales"])
    _doc(store, "hr-doc", "4-hr.md", groups=["hr"])

    def ids(groups):
        return [d.id for d in store.list_documents(groups=groups)]

    assert ids(["sales"]) == ["both-doc", "sales-doc"]
    assert ids(["eng"]) == ["eng-doc", "both-doc"]
    assert ids(["eng", "sales"]) == ["eng-doc", "both-doc", "sales-doc"]  # no duplicates
    assert ids(["nobody"]) == []
    assert ids([]) == []
    assert ids(None) == ["eng-doc", "both-doc", "sales-doc", "hr-doc"]


def test_list_documents_orders_and_pages(store: MetadataStore) -> None:
    """Listing is ordered by (source, path) and honours limit/offset."""
    _doc(store, "b", "b.md", source="s2")
    _doc(store, "z", "z.md", source="s1")
    _doc(store, "a", "a.md", source="s1")
    assert [d.id for d in store.list_documents()] == ["a", "z", "b"]
    assert [d.id for d in store.list_documents(limit=2)] == ["a", "z"]
    assert [d.id for d in store.list_documents(limit=2, offset=2)] == ["b"]


def test_documents_of_source_keyed_by_path(store: MetadataStore) -> None:
    """Change detection gets exactly one source's documents, keyed by their path."""
    _doc(store, "d1", "a.md", source="s1", content_hash="h1")
    _doc(store, "d2", "sub/b.md", source="s1", content_hash="h2")
    _doc(store, "d3", "a.md", source="s2", content_hash="h3")

    docs = store.documents_of_source("s1")
    assert set(docs) == {"a.md", "sub/b.md"}
    assert docs["a.md"].id == "d1"
    assert docs["sub/b.md"].content_hash == "h2"
    assert store.documents_of_source("s2")["a.md"].id == "d3"
    assert store.documents_of_source("nope") == {}


def test_source_and_path_are_unique(store: MetadataStore) -> None:
    """Two ids cannot claim the same (source, path); the store stays usable afterwards."""
    _doc(store, "d1", "a.md", source="s1")
    with pytest.raises(IntegrityError):
        _doc(store, "d2", "a.md", source="s1")

    assert store.get_document("d2") is None
    assert store.count_documents() == 1
    _doc(store, "d3", "a.md", source="s2")  # same path, other source: fine
    assert store.count_documents() == 2


def test_data_persists_across_store_instances(store: MetadataStore) -> None:
    """A new MetadataStore on the same URL sees documents, runs, dead letters and feedback."""
    _doc(store, "d1", "a.md", groups=["eng", "sales"])
    run_id = store.start_run("src")
    store.finish_run(run_id, status="succeeded", added=1)
    store.add_dead_letter(run_id=run_id, source="src", path="bad.bin", reason="binary")
    FeedbackStore(store).add(user="ann", question="q?", answer="a", rating=1)
    store.close()

    again = MetadataStore(store.url)
    try:
        got = again.get_document("d1")
        assert got is not None and got.groups == ("eng", "sales")
        run = again.get_run(run_id)
        assert (run.status, run.added) == ("succeeded", 1)
        assert [d.path for d in again.dead_letters(run_id)] == ["bad.bin"]
        assert [f.user for f in FeedbackStore(again).recent()] == ["ann"]
    finally:
        again.close()


# --- runs ------------------------------------------------------------------------------
def test_run_lifecycle(store: MetadataStore) -> None:
    """A started run is 'running' with zero counts; finishing records counts and status."""
    run_id = store.start_run("folder:/docs", kind="sync")
    run = store.get_run(run_id)
    assert (run.source, run.kind, run.status) == ("folder:/docs", "sync", "running")
    assert run.started_at is not None and run.finished_at is None
    assert (run.added, run.updated, run.unchanged, run.deleted, run.failed, run.chunks) == (0, 0, 0, 0, 0, 0)

    store.finish_run(run_id, status="partial", added=3, updated=1, unchanged=4, deleted=2, failed=1, chunks=9)

    run = store.get_run(run_id)
    assert run.status == "partial"
    assert (run.added, run.updated, run.unchanged, run.deleted, run.failed, run.chunks) == (3, 1, 4, 2, 1, 9)
    assert run.error is None
    assert run.finished_at is not None and run.finished_at >= run.started_at


def test_finish_run_records_error(store: MetadataStore) -> None:
    """A failed run keeps its error message."""
    run_id = store.start_run("src")
    store.finish_run(run_id, status="failed", error="RuntimeError: disk full", added=1)
    run = store.get_run(run_id)
    assert (run.status, run.error, run.added) == ("failed", "RuntimeError: disk full", 1)


def test_finish_run_rejects_unknown_counter(store: MetadataStore) -> None:
    """A misspelled counter raises ValueError and leaves the run untouched."""
    run_id = store.start_run("src")
    with pytest.raises(ValueError, match="addded"):
        store.finish_run(run_id, status="succeeded", addded=1)
    assert store.get_run(run_id).status == "running"


def test_finish_unknown_run_raises(store: MetadataStore) -> None:
    with pytest.raises(KeyError):
        store.finish_run(999_999, status="succeeded")
    assert store.get_run(999_999) is None


def test_recent_runs_newest_first_and_by_source(store: MetadataStore) -> None:
    """recent_runs lists the newest run first, limited, optionally of one source."""
    r1 = store.start_run("a")
    r2 = store.start_run("b")
    r3 = store.start_run("a")
    assert [r.id for r in store.recent_runs()] == [r3, r2, r1]
    assert [r.id for r in store.recent_runs(limit=2)] == [r3, r2]
    assert [r.id for r in store.recent_runs(source="a")] == [r3, r1]
    assert [r.id for r in store.recent_runs(limit=1, source="a")] == [r3]
    assert store.recent_runs(source="none") == []


# --- dead letters and feedback -----------------------------------------------------------
def test_dead_letters_are_linked_to_runs(store: MetadataStore) -> None:
    """Dead letters are listed newest first, all or per run, with their reasons."""
    r1 = store.start_run("src")
    r2 = store.start_run("src")
    d1 = store.add_dead_letter(run_id=r1, source="src", path="a.bin", reason="binary file")
    d2 = store.add_dead_letter(run_id=r2, source="src", path="b.txt", reason="empty file")
    d3 = store.add_dead_letter(run_id=r1, source="src", path="c.pdf", reason="encrypted")
    d4 = store.add_dead_letter(run_id=None, source="upload", path="d.txt", reason="too big")

    assert [d.id for d in store.dead_letters()] == [d4, d3, d2, d1]
    in_r1 = store.dead_letters(r1)
    assert [(d.path, d.reason) for d in in_r1] == [("c.pdf", "encrypted"), ("a.bin", "binary file")]
    assert all(d.run_id == r1 and d.source == "src" for d in in_r1)
    assert [d.path for d in store.dead_letters(r2)] == ["b.txt"]
    assert [d.id for d in store.dead_letters(limit=1)] == [d4]


def test_feedback_round_trip(store: MetadataStore) -> None:
    """Feedback keeps every field, including the JSON extra, newest first."""
    feedback = FeedbackStore(store)
    f1 = feedback.add(
        user="ann",
        question="What is X?",
        answer="X is Y.",
        rating=1,
        comment="good",
        extra={"sources": ["a.md", "b.md"], "latency_ms": 120},
    )
    f2 = feedback.add(user="bob", question="Why?", answer="", rating=-1)

    items = feedback.recent()
    assert [f.id for f in items] == [f2, f1]
    bob, ann = items
    assert (bob.user, bob.rating, bob.comment, bob.extra) == ("bob", -1, "", {})
    assert (ann.question, ann.answer, ann.rating, ann.comment) == ("What is X?", "X is Y.", 1, "good")
    assert ann.extra == {"sources": ["a.md", "b.md"], "latency_ms": 120}
    assert ann.created_at is not None
    assert [f.id for f in feedback.recent(limit=1)] == [f2]
    feedback.purge()
    assert feedback.recent() == []


def test_purge_all_empties_the_core_tables(store: MetadataStore) -> None:
    """purge_all leaves an empty but working store; other packages' rows are theirs to purge."""
    _doc(store, "d1", "a.md")
    run_id = store.start_run("src")
    store.add_dead_letter(run_id=run_id, source="src", path="x", reason="r")
    FeedbackStore(store).add(user="u", question="q", answer="a", rating=1)

    store.purge_all()

    assert store.count_documents() == 0
    assert store.list_documents() == []
    assert store.recent_runs() == []
    assert store.dead_letters() == []
    assert [f.user for f in FeedbackStore(store).recent()] == ["u"]
    _doc(store, "d1", "a.md")
    assert store.count_documents() == 1
