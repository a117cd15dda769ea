"""The RAG benchmark on a four-file corpus: both systems run in their own processes, the report is whole.

A smoke test of the wiring and the report a user reads (the JSON fields, the table, the
scratch folder emptied), not of the figures: on four documents every system finds every source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from evaluation.benchmarks.rag.cli import bench_rag

ROOT = Path(__file__).resolve().parents[3]
QUESTIONS = [
    {
        "id": "q1",
        "question": "How many days of paid vacation does every employee get?",
        "source": "benefits/time-off.md",
    },
    {"id": "q2", "question": "What is the daily meal allowance while travelling?", "source": "expenses.md"},
    {"id": "q3", "question": "Within how many hours must a lost laptop be reported?", "source": "it/laptops.html"},
    {"id": "q4", "question": "What is the airspeed velocity of an unladen swallow?", "source": ""},
]


def _corpus_and_qa(tmp_path: Path) -> tuple[Path, Path]:
    """The sample handbook's public folder (4 documents) and 3 answerable + 1 unanswerable question."""
    from rag.samples import write_handbook

    write_handbook(tmp_path / "handbook")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return tmp_path / "handbook" / "public", qa


@pytest.mark.slow
def test_both_systems_are_measured_and_scored(tmp_path: Path) -> None:
    pytest.importorskip("llama_index.embeddings.huggingface")
    corpus, qa = _corpus_and_qa(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "evaluation.benchmarks.rag", str(corpus), "--qa", str(qa), "--out", str(out)]
    cmd += ["--work-dir", str(work), "--threads", "1", "--repeats", "1", "--baseline", "matched", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads((out / "bench_rag.json").read_text())
    assert report["command"].startswith("python -m evaluation.benchmarks.rag ")

    assert report["corpus"]["subset_documents"] == 4
    assert report["qa"] == {
        "file": str(qa),
        "questions": 4,
        "used": 4,
        "answerable_in_subset": 3,
        "unanswerable": 1,
    }
    assert set(report["ingest"]) == {"loopline", "loopline-torch", "baseline-matched"}
    models = {name: s["embedding_model"] for name, s in report["settings"].items() if name.startswith("loopline")}
    assert models == {"loopline": "all-MiniLM-L6-v2+onnx-int8", "loopline-torch": "all-MiniLM-L6-v2"}
    for figures in report["ingest"].values():
        assert figures["documents"] == 4 and figures["chunks"] >= 4
        assert figures["chunks_per_s"] > 0 and figures["peak_rss_mib"] > 0
    assert report["reingest"]["unchanged"] == 4 and report["reingest"]["added"] + report["reingest"]["updated"] == 0

    assert set(report["retrieval"]) == {
        "loopline-hybrid",
        "loopline-dense",
        "loopline-torch-hybrid",
        "loopline-torch-dense",
        "baseline-matched",
    }
    for name, r in report["retrieval"].items():
        assert r["queries"] == 4 and r["answerable"] == 3, name
        assert 0 <= r["hit@1"] <= r["hit@5"] <= 1 and 0 <= r["mrr@5"] <= 1, name
        assert 0 < r["latency_p50_ms"] <= r["latency_max_ms"], name
        assert all("rank" in row for row in report["per_question"][name])
    hybrid = report["retrieval"]["loopline-hybrid"]
    assert hybrid["hit@5"] == 1.0 and report["misses"]["loopline-hybrid"] == []
    assert hybrid["abstained_unanswerable"] == 1 and hybrid["abstained_answerable"] == 0
    assert len(hybrid["abstention_sweep"]) == 9

    assert all(isinstance(t["pass"], bool) and t["target"] for t in report["targets"])
    assert any(t["target"].startswith("unchanged re-ingest") for t in report["targets"])
    assert any(t["target"] == "ingest chunks/s >= 2x loopline-torch" for t in report["targets"])
    table = (out / "bench_rag.txt").read_text()
    for heading in ("Ingest", "Retrieval", "Abstention", "Targets", "baseline-matched"):
        assert heading in table
    assert not (work / "corpus").exists() and not (work / "loopline_home").exists()  # emptied at exit
    assert not (work / "loopline_home_torch").exists()


def test_a_broken_qa_file_is_named_before_anything_runs(tmp_path: Path) -> None:
    corpus, qa = _corpus_and_qa(tmp_path)
    qa.write_text(qa.read_text() + '{"id": "q5", "question": \n')
    result = CliRunner().invoke(bench_rag, [str(corpus), "--qa", str(qa), "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 1
    assert f"{qa}:5: not valid JSON" in result.output
    assert not (tmp_path / "work").exists()


def test_a_corpus_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    corpus, qa = _corpus_and_qa(tmp_path)
    result = CliRunner().invoke(bench_rag, [str(corpus / "expenses.md"), "--qa", str(qa)])
    assert result.exit_code == 2
    assert "not a folder" in result.output
