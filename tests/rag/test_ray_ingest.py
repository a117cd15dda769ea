"""`loopline rag ingest PATH --ray`: the index and records it builds equal the in-process ingest's.

One small folder (markdown, text, a PDF, broken and empty files) is ingested both ways into
two homes; a local Ray (2 CPUs, started once for the module) runs the actor pool.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from docfiles import write_pdf

from rag.service import RagService
from shared.cli import main
from shared.config import Settings

pytestmark = pytest.mark.slow
GROUPS = ["staff", "public"]
ACTORS = 2

TOPICS = [
    ("onboarding", "Onboarding", ["laptop", "accounts", "buddy", "first week"]),
    ("security", "Security basics", ["passwords", "phishing", "badges", "incident reports"]),
    ("travel", "Travel policy", ["flights", "hotels", "per diem", "receipts"]),
    ("releases", "Release process", ["freeze", "changelog", "rollback", "canary"]),
    ("support", "Customer support", ["tickets", "escalation", "tone", "refunds"]),
    ("hiring", "Hiring loop", ["screening", "interviews", "debrief", "offers"]),
    ("oncall", "On-call duty", ["pager", "handover", "runbooks", "postmortems"]),
    ("office", "Office life", ["desks", "kitchen", "quiet rooms", "visitors"]),
]


def _markdown(title: str, sections: list[str], paragraphs: int) -> str:
    lines = [f"# {title}", ""]
    for s_no, section in enumerate(sections):
        lines += [f"## {section.capitalize()}", ""]
        for p in range(paragraphs):
            lines.append(
                " ".join(
                    f"Rule {s_no}.{p}.{k} about {section}: teams write down how {section} works, review it every "
                    f"quarter and ask the {title.lower()} owners when something is unclear."
                    for k in range(3 + (s_no + p) % 3)
                )
            )
            lines.append("")
    return "\n".join(lines)


def write_corpus(root: Path) -> Path:
    """A dozen documents of several kinds and sizes, and four that are rejected."""
    for n, (name, title, sections) in enumerate(TOPICS):
        folder = root / ("team" if n % 3 == 0 else "policies")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.md").write_text(_markdown(title, sections, paragraphs=1 + n % 4))
    (root / "notes.txt").write_text("Meeting notes\n\nThe kitchen is cleaned on Fridays. " * 20)
    (root / "faq.txt").write_text("Where are the spare keys? In the reception's locked drawer.\n")
    (root / "team" / "index.md").write_text("Nobody on this team has a title heading.\n\nWe build the robots.\n")
    write_pdf(root / "policies" / "badge-rules.pdf", ["Badges are worn visibly.", "Lost badges are reported."])
    (root / "broken.txt").write_bytes(b"\x00\x01\x02 not text")  # rejected by the loader (in Ray)
    (root / "table.csv").write_text("a,b\n1,2\n")  # unsupported type (in Ray)
    (root / "empty.md").write_bytes(b"")  # rejected by the pipeline before any parsing
    (root / "blank.md").write_text("\n\n   \n")  # no text (in Ray)
    return root


# --- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    """One local Ray for the module (it takes seconds to start); ingests use it as it is."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires Ray: pip install -e '.[ray]'", pytrace=False)
        pytest.skip("Ray is not installed (pip install 'loopline[ray]')")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("ray-corpus") / "docs")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, corpus: Path, local_ray) -> Iterator[dict]:
    """The corpus ingested in process (home `local`) and on Ray (home `ray`), services kept open.

    In FP32: its vectors do not depend on the batch a chunk is embedded in, so the two indexes
    must be equal to float tolerance (INT8's move by up to ~0.005 in cosine with the batch:
    tests/rag/test_onnx_embedding.py)."""
    from rag.ray_ingest import RayOptions, ingest_with_ray

    base = tmp_path_factory.mktemp("ray-homes")
    local = RagService(Settings(home=base / "local", embedding_precision="fp32"))
    on_ray = RagService(Settings(home=base / "ray", embedding_precision="fp32"))
    try:
        yield {
            "local": local,
            "ray": on_ray,
            "local_run": local.ingest(corpus, GROUPS),
            "ray_run": ingest_with_ray(on_ray, corpus, GROUPS, options=RayOptions(actors=ACTORS)),
        }
    finally:
        local.close()
        on_ray.close()


def index_of(service: RagService) -> dict[str, tuple[dict, list[float]]]:
    """Every point of the collection, read through the vector-store port: {id: (payload, vector)}."""
    total = service.store.count()
    dim = service.store.collection_info().dim
    hits = service.store.search([1 / math.sqrt(dim)] * dim, limit=max(total, 1), with_vectors=True)
    assert len(hits) == total
    return {h.id: (h.payload, h.vector) for h in hits}


def documents_of(service: RagService) -> list[tuple]:
    return [
        (d.id, d.source, d.path, d.title, d.content_hash, d.groups, d.size_bytes, d.chunk_count)
        for d in service.metadata.list_documents()
    ]


def _run_record(service: RagService, run_id: int) -> dict:
    run = service.metadata.get_run(run_id)
    keep = ("source", "kind", "status", "added", "updated", "unchanged", "deleted", "failed", "chunks")
    return {k: getattr(run, k) for k in keep}


def _dead_letters(service: RagService, run_id: int) -> list[tuple[str, str, str]]:
    return sorted((d.source, d.path, d.reason) for d in service.metadata.dead_letters(run_id=run_id))


# --- the index and the records ------------------------------------------------------------
def test_ray_builds_the_same_index(both) -> None:
    local, on_ray = index_of(both["local"]), index_of(both["ray"])
    assert len(local) >= 20  # several chunks per document: the comparison means something
    assert sorted(on_ray) == sorted(local)
    for point_id, (payload, vector) in local.items():
        ray_payload, ray_vector = on_ray[point_id]
        assert ray_payload == payload
        np.testing.assert_allclose(ray_vector, vector, atol=1e-5)


def test_ray_writes_the_same_documents_runs_and_dead_letters(both) -> None:
    assert documents_of(both["ray"]) == documents_of(both["local"])
    assert len(documents_of(both["local"])) == 12
    local_run, ray_run = both["local_run"], both["ray_run"]
    assert _run_record(both["ray"], ray_run.run_id) == _run_record(both["local"], local_run.run_id)
    assert ray_run.counts() == local_run.counts()
    assert ray_run.status == "partial" and ray_run.added == 12 and ray_run.failed == 4
    assert sorted(map(str, ray_run.dead_letters)) == sorted(map(str, local_run.dead_letters))
    assert _dead_letters(both["ray"], ray_run.run_id) == _dead_letters(both["local"], local_run.run_id)
    reasons = {d["path"]: d["reason"] for d in ray_run.dead_letters}
    assert "binary content" in reasons["broken.txt"] and "unsupported file type" in reasons["table.csv"]
    assert reasons["empty.md"] == "empty file"


def test_a_second_ingest_either_way_finds_everything_unchanged(both, corpus: Path) -> None:
    """Only the rejected files are read again (as in process); the index Ray built is kept."""
    from rag.ray_ingest import RayOptions, ingest_with_ray

    again_on_ray = ingest_with_ray(both["ray"], corpus, GROUPS, options=RayOptions(actors=ACTORS))
    again_here = both["ray"].ingest(corpus, GROUPS)
    for run in (again_on_ray, again_here):
        assert (run.added, run.updated, run.unchanged, run.deleted, run.failed) == (0, 0, 12, 0, 4)
        assert sorted(d["path"] for d in run.dead_letters) == ["blank.md", "broken.txt", "empty.md", "table.csv"]
    assert documents_of(both["ray"]) == documents_of(both["local"])


def test_changes_and_removals_on_ray_match_in_process(both, corpus: Path) -> None:
    """Last in the module: it edits the corpus. An edited file is replaced, a removed one leaves."""
    from rag.ray_ingest import RayOptions, ingest_with_ray

    edited = corpus / "policies" / "security.md"
    edited.write_text(edited.read_text() + "\n## Laptops\n\nLaptops are locked when you leave your desk.\n")
    (corpus / "faq.txt").unlink()
    here = both["local"].ingest(corpus, GROUPS)
    on_ray = ingest_with_ray(both["ray"], corpus, GROUPS, options=RayOptions(actors=ACTORS))
    assert on_ray.counts() == here.counts()
    assert (on_ray.updated, on_ray.deleted, on_ray.unchanged) == (1, 1, 10)
    assert documents_of(both["ray"]) == documents_of(both["local"])
    local, ray_index = index_of(both["local"]), index_of(both["ray"])
    assert sorted(ray_index) == sorted(local)
    assert all(ray_index[i][0] == payload for i, (payload, _) in local.items())


# --- the command line ---------------------------------------------------------------------
def _ingest_json(home: Path, folder: Path, *extra: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    result = CliRunner().invoke(main, ["rag", "ingest", str(folder), "--json", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout is the summary alone: Ray's output goes elsewhere


def test_cli_ray_json_has_the_in_process_fields(
    tmp_path: Path, corpus: Path, local_ray, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = _ingest_json(tmp_path / "a", corpus / "team", monkeypatch=monkeypatch)
    on_ray = _ingest_json(tmp_path / "b", corpus / "team", "--ray", "--ray-actors", "1", monkeypatch=monkeypatch)
    assert on_ray.keys() == here.keys()
    differ = {"seconds"}
    assert {k: v for k, v in on_ray.items() if k not in differ} == {k: v for k, v in here.items() if k not in differ}
    assert on_ray["added"] == 4 and on_ray["status"] == "succeeded"


def test_cli_refuses_what_is_not_a_ray_address(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main, ["rag", "ingest", str(corpus), "--ray", "my-cluster"])
    assert result.exit_code == 2
    assert "not a Ray address" in result.output and "ray://HOST:10001" in result.output


def test_cli_without_ray_says_how_to_install_it(tmp_path: Path, corpus: Path) -> None:
    """With Ray absent (its import made to fail in a child), --ray stops before any work."""
    code = "import sys; sys.modules['ray'] = None; from shared.cli import main; main()"
    env = {**os.environ, "LOOPLINE_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", code, "rag", "ingest", str(corpus), "--ray"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "pip install 'loopline[ray]'" in proc.stderr
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.db"))
