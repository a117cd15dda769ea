"""The RAG pipeline end to end on embedded stores: idempotent re-ingest, updates, deletes,
restarts, crashes, model skew and answering while a sync runs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rag.embeddings import LocalEmbedder
from rag.service import RagService
from rag.vectorstore import EmbeddingMismatch
from shared.auth import Principal
from shared.config import Settings

ADMIN = Principal(name="root", admin=True)


def _chunks_in_metadata(svc: RagService) -> int:
    return sum(d.chunk_count for d in svc.metadata.list_documents())


def _ingest_handbook(svc: RagService, root: Path, plan: dict[str, list[str]]) -> None:
    for folder, groups in plan.items():
        assert svc.ingest(root / folder, groups).failed == 0


def test_reingest_is_idempotent(make_service, handbook) -> None:
    root, plan = handbook
    svc = make_service()
    _ingest_handbook(svc, root, plan)
    chunks = svc.store.count()
    assert chunks == _chunks_in_metadata(svc) > 0
    again = svc.ingest(root / "public", plan["public"])
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    assert svc.store.count() == chunks  # no duplicate chunks


def test_update_and_delete_propagate(make_service, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text("# Parking\n\nVisitors park on level minus two of the garage.\n")
    (docs / "lunch.md").write_text("# Lunch\n\nLunch is served in the canteen from 11:30 to 13:30.\n")
    svc = make_service()
    svc.ingest(docs, ["public"])
    doc_id = svc.metadata.find_document(f"folder:{docs.resolve()}", "parking.md").id

    (docs / "parking.md").write_text("# Parking\n\nVisitors now park in the open lot behind the north gate.\n")
    run = svc.ingest(docs, ["public"])
    assert (run.updated, run.unchanged) == (1, 1)
    ans = svc.ask("Where do visitors park?", ADMIN)
    assert "north gate" in ans.citations[0].text
    assert all("minus two" not in c.text for c in ans.citations)
    assert svc.metadata.get_document(doc_id) is not None  # id stable across versions
    assert svc.store.count(doc_id=doc_id) == svc.metadata.get_document(doc_id).chunk_count

    (docs / "parking.md").unlink()
    run = svc.ingest(docs, ["public"])
    assert run.deleted == 1
    assert svc.store.count(doc_id=doc_id) == 0
    assert svc.metadata.get_document(doc_id) is None
    assert all(c.source != "parking.md" for c in svc.ask("Where do visitors park?", ADMIN).citations)


def test_state_survives_a_restart(make_service, handbook, tmp_path: Path) -> None:
    root, plan = handbook
    home = tmp_path / "persist"
    first = make_service(home=home)
    _ingest_handbook(first, root, plan)
    before = first.ask("How many days of paid vacation do I get?", ADMIN)
    first.close()
    second = make_service(home=home)
    after = second.ask("How many days of paid vacation do I get?", ADMIN)
    assert after.citations[0].source == before.citations[0].source == "benefits/time-off.md"
    assert "27 days" in after.answer
    assert second.ingest(root / "public", plan["public"]).unchanged == 4


class _CrashingEmbedder:
    """The real model, failing on the n-th batch (a crash mid-run)."""

    def __init__(self, real: LocalEmbedder, fail_on_call: int) -> None:
        self.real, self.fail_on_call, self.calls = real, fail_on_call, 0
        self.name, self.dim = real.name, real.dim

    def embed_documents(self, texts):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("power cut")
        return self.real.embed_documents(texts)

    def embed_query(self, text):  # noqa: ANN001, ANN201
        return self.real.embed_query(text)


def test_a_crash_mid_run_leaves_a_consistent_index_and_the_next_run_resumes(embedder, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"note{i}.txt").write_text(f"Note {i}: the shuttle bus leaves gate {i} at {8 + i}:15 every morning.\n")
    settings = Settings(home=tmp_path / "home")
    crashing = _CrashingEmbedder(embedder, fail_on_call=3)
    svc = RagService(settings, embedder_factory=lambda: crashing)
    svc.pipeline.batch_units = 1
    with pytest.raises(RuntimeError, match="power cut"):
        svc.ingest(docs, ["public"])
    run = svc.metadata.recent_runs(1)[0]
    assert run.status == "failed" and "power cut" in run.error
    indexed = svc.metadata.count_documents()
    assert indexed == 2
    assert svc.store.count() == _chunks_in_metadata(svc)  # nothing half-written is visible
    svc.close()

    resumed = RagService(settings, embedder_factory=lambda: embedder)
    run2 = resumed.ingest(docs, ["public"])
    assert (run2.added, run2.unchanged) == (4, 2)
    assert resumed.store.count() == _chunks_in_metadata(resumed) == 6
    resumed.close()


class _OtherModel:
    name, dim = "some-other-model", 384

    def embed_documents(self, texts):  # noqa: ANN001, ANN201
        return [[1.0] + [0.0] * 383 for _ in texts]

    def embed_query(self, text):  # noqa: ANN001, ANN201
        return [1.0] + [0.0] * 383


def test_a_query_with_another_embedding_model_is_refused(make_service, handbook, tmp_path: Path) -> None:
    root, plan = handbook
    home = tmp_path / "skew"
    svc = make_service(home=home)
    svc.ingest(root / "public", plan["public"])
    svc.close()
    skewed = RagService(Settings(home=home), embedder_factory=_OtherModel)
    with pytest.raises(EmbeddingMismatch, match="all-MiniLM-L6-v2"):
        skewed.ask("How many vacation days?", ADMIN)
    with pytest.raises(EmbeddingMismatch):
        skewed.ingest(root / "engineering", plan["engineering"])
    skewed.close()


def test_unanswerable_question_abstains(make_service, handbook) -> None:
    root, plan = handbook
    svc = make_service()
    _ingest_handbook(svc, root, plan)
    ans = svc.ask("What is the airspeed velocity of an unladen swallow?", ADMIN)
    assert ans.abstained and ans.citations == []
    assert ans.mode == "extractive"


def test_answers_keep_flowing_while_a_folder_resyncs(embedder, handbook, tmp_path: Path) -> None:
    root, plan = handbook
    # A separate model instance per role, as the service does: HF tokenizers are not shared.
    svc = RagService(Settings(home=tmp_path / "home"), embedder_factory=lambda: LocalEmbedder())
    svc.ingest(root / "public", plan["public"])
    big = tmp_path / "big"
    big.mkdir()
    for i in range(12):
        (big / f"memo{i}.md").write_text(
            f"# Memo {i}\n\n" + " ".join(f"Item {j} of memo {i} concerns forklift battery {j}." for j in range(60))
        )
    done = threading.Event()
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            svc.ingest(big, ["public"], kind="sync")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=sync)
    t.start()
    answered = 0
    while not done.is_set():
        ans = svc.ask("How many days of paid vacation do I get?", ADMIN)
        assert ans.citations[0].source == "benefits/time-off.md"
        answered += 1
    t.join()
    assert not errors
    assert answered >= 2  # answers were served while the sync was embedding
    assert svc.metadata.recent_runs(1)[0].status == "succeeded"
    svc.close()
