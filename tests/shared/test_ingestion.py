"""The ingestion core: change planning, schema checks, scanning and the ingest pipeline."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import BaseModel

from shared.ingestion import (
    IngestPipeline,
    Prepared,
    Rejected,
    SchemaError,
    SourceItem,
    document_id,
    plan_changes,
    scan_source,
    validate_record,
)
from shared.ingestion.sources import folder_source
from shared.metadata.store import MetadataStore


# --- change planning ---------------------------------------------------------------------
def test_plan_changes_sorts_paths_into_added_updated_unchanged_deleted() -> None:
    indexed = {"same.md": "h1", "edited.md": "h2", "gone.md": "h3", "gone2.md": "h4"}
    found = {"same.md": "h1", "edited.md": "h2-new", "new.md": "h5"}
    plan = plan_changes(indexed, found)
    assert plan.added == ["new.md"]
    assert plan.updated == ["edited.md"]
    assert plan.unchanged == ["same.md"]
    assert plan.deleted == ["gone.md", "gone2.md"]


def test_plan_changes_incomplete_scan_never_deletes() -> None:
    """A single-file ingest must not delete the file's siblings from the index."""
    plan = plan_changes({"a.md": "h1", "b.md": "h2"}, {"a.md": "h1-new"}, complete=False)
    assert plan.updated == ["a.md"]
    assert plan.deleted == []


def test_plan_changes_empty_index_adds_all_and_empty_scan_deletes_all() -> None:
    assert plan_changes({}, {"a": "1", "b": "2"}).added == ["a", "b"]
    assert plan_changes({"a": "1", "b": "2"}, {}).deleted == ["a", "b"]


# --- schema validation -------------------------------------------------------------------
class Owner(BaseModel):
    email: str


class Record(BaseModel):
    name: str
    size: int
    owner: Owner


def test_validate_record_returns_model_for_valid_data() -> None:
    rec = validate_record(Record, {"name": "a", "size": "3", "owner": {"email": "x@y"}})
    assert isinstance(rec, Record)
    assert (rec.name, rec.size, rec.owner.email) == ("a", 3, "x@y")


def test_validate_record_missing_field_is_named() -> None:
    with pytest.raises(SchemaError) as info:
        validate_record(Record, {"size": 1, "owner": {"email": "x@y"}})
    assert info.value.field == "name"
    assert "Record" in str(info.value) and "'name'" in str(info.value)
    assert "required" in str(info.value)


def test_validate_record_bad_nested_field_is_named_with_its_path() -> None:
    with pytest.raises(SchemaError, match=r"field 'owner\.email'") as info:
        validate_record(Record, {"name": "a", "size": 1, "owner": {"email": 5}})
    assert info.value.field == "owner.email"


def test_schema_error_is_a_value_error() -> None:
    """Callers catching ValueError also catch schema mismatches."""
    with pytest.raises(ValueError, match="'size'"):
        validate_record(Record, {"name": "a", "size": "many", "owner": {"email": "x"}})


# --- scanning ------------------------------------------------------------------------------
def _write(root: Path, rel: str, data: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data, encoding="utf-8")
    return p


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    _write(root, "a.md", "alpha\n")
    _write(root, "sub/deep/b.txt", "beta\nsecond line\n")
    _write(root, ".hidden.md", "secret\n")
    _write(root, ".git/config", "[core]\n")
    _write(root, ".cache/c.md", "cached\n")
    _write(root, "node_modules/pkg/index.js", "x\n")
    outside = _write(tmp_path, "outside.md", "not in the tree\n")
    (root / "link.md").symlink_to(outside)
    (root / "linkdir").symlink_to(root / "sub", target_is_directory=True)
    return root


def test_scan_folder_lists_files_recursively_with_relative_posix_paths(tree: Path) -> None:
    """Hidden files, .git, skipped folders and symlinks are left out; a folder scan is complete."""
    source, items, complete = scan_source(tree)
    assert source == folder_source(tree) == f"folder:{tree.resolve()}"
    assert complete is True
    assert [it.path for it in items] == ["a.md", "sub/deep/b.txt"]
    b = items[1]
    assert b.source == source
    assert b.abs_path == (tree / "sub" / "deep" / "b.txt").resolve()
    assert b.size_bytes == len("beta\nsecond line\n")
    assert b.suffix == ".txt"


def test_scan_single_file_is_not_complete(tree: Path) -> None:
    """A single file is its own item; the scan is incomplete so it deletes nothing."""
    source, items, complete = scan_source(tree / "sub" / "deep" / "b.txt")
    assert complete is False
    assert source == folder_source(tree / "sub" / "deep")
    assert [(it.path, it.source) for it in items] == [("b.txt", source)]


def test_single_file_and_folder_scan_give_the_same_document_id(tree: Path) -> None:
    """Ingesting a file alone, then its folder, must not create a duplicate document."""
    _, alone, _ = scan_source(tree / "a.md")
    _, in_folder, _ = scan_source(tree)
    assert alone[0].doc_id == in_folder[0].doc_id


def test_scan_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        scan_source(tmp_path / "nope")


def test_document_id_is_stable_and_distinct() -> None:
    """The same (source, path) keeps its id; another source or path gets another."""
    a = document_id("folder:/x", "a.md")
    assert a == document_id("folder:/x", "a.md")
    assert uuid.UUID(a).version == 5
    assert a != document_id("folder:/x", "b.md")
    assert a != document_id("folder:/y", "a.md")
    assert SourceItem("folder:/x", "a.md", Path("/x/a.md"), 1).doc_id == a


# --- the pipeline ------------------------------------------------------------------------
class DictIndexer:
    """An in-memory index: {doc id: {"text", "version", "groups"}}."""

    def __init__(self, fail_on_commit: int | None = None) -> None:
        self.docs: dict[str, dict] = {}
        self.commit_calls = 0
        self.fail_on_commit = fail_on_commit  # 1-based number of the commit call that crashes

    def prepare(self, item: SourceItem, content_hash: str, groups: list[str]) -> Prepared:
        data = item.abs_path.read_bytes()
        if b"\x00" in data:
            raise Rejected("binary file")
        text = data.decode("utf-8")
        return Prepared(
            item=item,
            content_hash=content_hash,
            groups=list(groups),
            title=text.splitlines()[0],
            units=len(text.splitlines()),
            payload=text,
        )

    def commit(self, batch: Sequence[Prepared]) -> None:
        self.commit_calls += 1
        if self.commit_calls == self.fail_on_commit:
            raise RuntimeError("index went away")
        for p in batch:
            self.docs[p.item.doc_id] = {"text": p.payload, "version": p.content_hash, "groups": list(p.groups)}

    def remove(self, doc_id: str) -> None:
        self.docs.pop(doc_id, None)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    _write(root, "a.md", "alpha\n")
    _write(root, "b.md", "beta\nmore beta\n")
    _write(root, "sub/c.txt", "gamma\n")
    return root


@pytest.fixture
def index() -> DictIndexer:
    return DictIndexer()


@pytest.fixture
def pipeline(sqlite_store: MetadataStore, index: DictIndexer) -> IngestPipeline:
    return IngestPipeline(sqlite_store, index, max_file_bytes=1000)


def _texts(index: DictIndexer, folder: Path) -> dict[str, str]:
    """The index's texts keyed by the path of the file each came from."""
    source = folder_source(folder)
    paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    by_id = {document_id(source, path): path for path in paths}
    assert set(index.docs) <= set(by_id), "the index holds documents of no current file"
    return {by_id[doc_id]: doc["text"] for doc_id, doc in index.docs.items()}


def _assert_consistent(store: MetadataStore, index: DictIndexer, folder: Path) -> None:
    """Index and metadata hold the same documents at the same versions (the files' sha256)."""
    meta = store.documents_of_source(folder_source(folder))
    assert {d.id: d.content_hash for d in meta.values()} == {k: v["version"] for k, v in index.docs.items()}
    for path, doc in meta.items():
        assert doc.id == document_id(folder_source(folder), path)
        assert doc.content_hash == hashlib.sha256((folder / path).read_bytes()).hexdigest()
        assert index.docs[doc.id]["text"] == (folder / path).read_text()


def test_first_ingest_adds_every_file(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    summary = pipeline.ingest(folder, ["eng"])

    assert summary.status == "succeeded"
    assert summary.counts() == {"added": 3, "updated": 0, "unchanged": 0, "deleted": 0, "failed": 0, "chunks": 4}
    assert summary.source == folder_source(folder)
    assert _texts(index, folder) == {"a.md": "alpha\n", "b.md": "beta\nmore beta\n", "sub/c.txt": "gamma\n"}
    _assert_consistent(sqlite_store, index, folder)
    b = sqlite_store.find_document(summary.source, "b.md")
    assert (b.title, b.groups, b.chunk_count, b.size_bytes) == ("beta", ("eng",), 2, len("beta\nmore beta\n"))

    run = sqlite_store.get_run(summary.run_id)
    assert (run.status, run.kind, run.source) == ("succeeded", "ingest", summary.source)
    assert (run.added, run.failed, run.chunks) == (3, 0, 4)
    assert run.finished_at is not None


def test_reingest_unchanged_commits_nothing(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    pipeline.ingest(folder, ["eng"])
    commits = index.commit_calls

    summary = pipeline.ingest(folder, ["eng"])

    assert summary.counts() == {"added": 0, "updated": 0, "unchanged": 3, "deleted": 0, "failed": 0, "chunks": 0}
    assert summary.status == "succeeded"
    assert index.commit_calls == commits
    assert sqlite_store.get_run(summary.run_id).unchanged == 3
    _assert_consistent(sqlite_store, index, folder)


def test_edited_file_is_updated_in_place(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    first = pipeline.ingest(folder, ["eng"])
    old = sqlite_store.find_document(first.source, "b.md")
    (folder / "b.md").write_text("beta, rewritten\n")

    summary = pipeline.ingest(folder, ["eng"])

    assert (summary.added, summary.updated, summary.unchanged, summary.deleted) == (0, 1, 2, 0)
    new = sqlite_store.find_document(first.source, "b.md")
    assert new.id == old.id and new.content_hash != old.content_hash
    assert _texts(index, folder)["b.md"] == "beta, rewritten\n"
    assert sqlite_store.count_documents() == 3
    _assert_consistent(sqlite_store, index, folder)


def test_deleted_file_leaves_index_and_metadata(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    pipeline.ingest(folder, ["eng"])
    gone_id = document_id(folder_source(folder), "sub/c.txt")
    (folder / "sub" / "c.txt").unlink()

    summary = pipeline.ingest(folder, ["eng"])

    assert (summary.deleted, summary.unchanged, summary.added, summary.updated) == (1, 2, 0, 0)
    assert gone_id not in index.docs
    assert sqlite_store.get_document(gone_id) is None
    assert sqlite_store.get_run(summary.run_id).deleted == 1
    _assert_consistent(sqlite_store, index, folder)


def test_single_file_ingest_keeps_its_siblings(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    """Re-ingesting one edited file updates it and deletes nothing else."""
    pipeline.ingest(folder, ["eng"])
    (folder / "a.md").write_text("alpha v2\n")

    summary = pipeline.ingest(folder / "a.md", ["eng"])

    assert (summary.updated, summary.deleted, summary.added) == (1, 0, 0)
    assert _texts(index, folder) == {"a.md": "alpha v2\n", "b.md": "beta\nmore beta\n", "sub/c.txt": "gamma\n"}
    _assert_consistent(sqlite_store, index, folder)


def test_bad_files_are_dead_lettered_and_the_rest_indexed(
    sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    """Empty, oversize and binary files become dead letters with reasons; the run is 'partial'."""
    _write(folder, "empty.txt", "")
    _write(folder, "big.txt", "x" * 200)
    _write(folder, "blob.dat", b"PK\x00\x01binary")
    pipeline = IngestPipeline(sqlite_store, index, max_file_bytes=100, batch_units=2)

    summary = pipeline.ingest(folder, ["eng"])

    assert summary.status == "partial"
    assert (summary.added, summary.failed) == (3, 3)
    assert _texts(index, folder) == {"a.md": "alpha\n", "b.md": "beta\nmore beta\n", "sub/c.txt": "gamma\n"}
    _assert_consistent(sqlite_store, index, folder)

    reasons = {d.path: d.reason for d in sqlite_store.dead_letters(summary.run_id)}
    assert set(reasons) == {"empty.txt", "big.txt", "blob.dat"}
    assert reasons["empty.txt"] == "empty file"
    assert "200 bytes" in reasons["big.txt"] and "limit of 100" in reasons["big.txt"]
    assert reasons["blob.dat"] == "binary file"
    assert {d["path"] for d in summary.dead_letters} == set(reasons)

    run = sqlite_store.get_run(summary.run_id)
    assert (run.status, run.failed, run.added) == ("partial", 3, 3)


def test_file_turning_binary_drops_its_old_version(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    """A broken new version is dead-lettered and the stale old one does not linger."""
    pipeline.ingest(folder, ["eng"])
    doc_id = document_id(folder_source(folder), "a.md")
    (folder / "a.md").write_bytes(b"\x00\x01")

    summary = pipeline.ingest(folder, ["eng"])

    assert (summary.failed, summary.updated, summary.status) == (1, 0, "partial")
    assert doc_id not in index.docs
    assert sqlite_store.get_document(doc_id) is None
    assert set(_texts(index, folder)) == {"b.md", "sub/c.txt"}


def test_changing_groups_reindexes(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    """Who may read a document is part of its version: new groups re-index every file."""
    pipeline.ingest(folder, ["eng"])
    assert sqlite_store.list_documents(groups=["sales"]) == []

    summary = pipeline.ingest(folder, ["sales", "eng", "sales"])

    assert (summary.updated, summary.unchanged, summary.added) == (3, 0, 0)
    assert {tuple(v["groups"]) for v in index.docs.values()} == {("eng", "sales")}
    assert len(sqlite_store.list_documents(groups=["sales"])) == 3

    again = pipeline.ingest(folder, ["eng", "sales"])
    assert (again.unchanged, again.updated) == (3, 0)


def test_progress_reaches_the_total(sqlite_store: MetadataStore, index: DictIndexer, folder: Path) -> None:
    _write(folder, "empty.txt", "")
    calls: list[tuple[int, int]] = []
    IngestPipeline(sqlite_store, index, max_file_bytes=1000, batch_units=1).ingest(
        folder, ["eng"], progress=lambda done, total, _chunks: calls.append((done, total))
    )
    assert calls[-1] == (4, 4)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_counts_the_chunks_committed(sqlite_store: MetadataStore, index: DictIndexer, folder: Path) -> None:
    """The callback also gets this run's committed units (chunks), for a chunks/s rate."""
    _write(folder, "empty.txt", "")
    pipeline = IngestPipeline(sqlite_store, index, max_file_bytes=1000, batch_units=1)
    calls: list[tuple[int, int, int]] = []

    def progress(done: int, total: int, chunks: int) -> None:
        calls.append((done, total, chunks))

    summary = pipeline.ingest(folder, ["eng"], progress=progress)

    assert calls[-1] == (4, 4, summary.chunks) and summary.chunks == 4  # 1 + 2 + 1 lines
    assert [c for *_, c in calls] == sorted(c for *_, c in calls)
    calls.clear()
    pipeline.ingest(folder, ["eng"], progress=progress)  # unchanged: nothing new committed
    assert calls[-1] == (4, 4, 0)


def test_crash_mid_run_is_recorded_and_the_next_run_resumes(sqlite_store: MetadataStore, folder: Path) -> None:
    """A commit crash fails the run; only fully committed docs remain; the next run adds the rest."""
    index = DictIndexer(fail_on_commit=2)
    pipeline = IngestPipeline(sqlite_store, index, max_file_bytes=1000, batch_units=1)

    with pytest.raises(RuntimeError, match="index went away"):
        pipeline.ingest(folder, ["eng"])

    failed_run = sqlite_store.recent_runs(limit=1)[0]
    assert failed_run.status == "failed"
    assert failed_run.error == "RuntimeError: index went away"
    assert failed_run.added == 1
    assert failed_run.finished_at is not None
    assert len(index.docs) == 1
    assert sqlite_store.count_documents() == 1
    _assert_consistent(sqlite_store, index, folder)

    index.fail_on_commit = None
    summary = pipeline.ingest(folder, ["eng"])

    assert summary.status == "succeeded"
    assert (summary.added, summary.unchanged, summary.updated, summary.deleted) == (2, 1, 0, 0)
    assert sqlite_store.count_documents() == 3
    assert len(sqlite_store.list_documents()) == 3
    assert _texts(index, folder) == {"a.md": "alpha\n", "b.md": "beta\nmore beta\n", "sub/c.txt": "gamma\n"}
    _assert_consistent(sqlite_store, index, folder)
    assert [r.status for r in sqlite_store.recent_runs()] == ["succeeded", "failed"]


def test_file_vanishing_mid_run_is_dead_lettered(
    pipeline: IngestPipeline, sqlite_store: MetadataStore, index: DictIndexer, folder: Path
) -> None:
    """A listed file that cannot be read becomes a dead letter; the others are indexed."""
    source, items, complete = scan_source(folder)
    (folder / "b.md").unlink()

    summary = pipeline.ingest_items(source, items, ["eng"], complete=complete)

    assert (summary.added, summary.failed, summary.status) == (2, 1, "partial")
    assert summary.dead_letters == [{"path": "b.md", "reason": summary.dead_letters[0]["reason"]}]
    assert summary.dead_letters[0]["reason"].startswith("cannot read file")
    assert [d.path for d in sqlite_store.dead_letters(summary.run_id)] == ["b.md"]
    _assert_consistent(sqlite_store, index, folder)
