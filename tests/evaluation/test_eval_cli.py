"""`loopline eval rag|vision` end to end: the JSON contract, the report, and gates that stop a worse change.

RAG runs on the sample handbook with the real pipeline; the "worse" pipeline is the same
index with an abstention threshold no answer reaches. Vision trains a tiny detector for one
epoch (64 px, a few images): it checks the wiring, the confusion matrix against the label
files, and the gate's exit code, not accuracy.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from evaluation.gates import GATE_FAILED_EXIT_CODE
from shared.cli import main


def invoke(env: dict[str, str], *args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def embedded_pngs(report: Path) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", report.read_text())]


# --- rag --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rag_env(indexed_home: Path) -> dict[str, str]:
    return {"LOOPLINE_HOME": str(indexed_home)}


@pytest.fixture(scope="module")
def rag_run(rag_env, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One evaluation of the tiny QA set: (JSON output, stored baseline file, report)."""
    out = tmp_path_factory.mktemp("rag-eval")
    qa = Path(__file__).parent / "handbook-qa-tiny.jsonl"
    result = invoke(rag_env, "eval", "rag", "--qa", qa, "--report", out / "rag.html", "--json")
    assert result.exit_code == 0, result.output
    baseline = out / "baseline.json"
    baseline.write_text(result.stdout)
    return json.loads(result.stdout), baseline, out / "rag.html"


def test_eval_rag_prints_the_contract_and_writes_a_report(rag_run, qa_file: Path) -> None:
    data, _, report = rag_run
    ids = [json.loads(line)["id"] for line in qa_file.read_text().splitlines() if line.strip()]
    assert [q["id"] for q in data["questions"]] == ids
    for q in data["questions"]:
        assert isinstance(q["sources"], list) and isinstance(q["answer"], str) and isinstance(q["abstained"], bool)
    assert {"hit@1", "hit@5", "mrr@5", "abstain_rate_unanswerable", "context_recall", "rouge_l"} <= data[
        "overall"
    ].keys()
    assert data["config"]["qa_file"].endswith("handbook-qa-tiny.jsonl") and data["config"]["top_k"] == 5

    pngs = embedded_pngs(report)
    assert len(pngs) >= 3 and all(p.startswith(b"\x89PNG") for p in pngs)  # metric bars, breakdowns, distributions
    page = report.read_text()
    assert "No judge endpoint configured" in page  # says why the LLM-judged metrics are absent
    assert all(q_id in page for q_id in ids)


def test_the_gate_passes_the_same_pipeline_and_stops_a_worse_one(
    rag_run, rag_env, qa_file: Path, tmp_path: Path
) -> None:
    data, baseline, _ = rag_run
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        yaml.safe_dump(
            {
                "metrics": {
                    "hit@5": {"min": 0.8, "max_regression": 0.05},
                    "wrong_abstain_rate_answerable": {"max": 0.2, "higher_is_better": False},
                },
                "baseline_file": str(baseline),
            }
        )
    )
    same = invoke(rag_env, "eval", "rag", "--qa", qa_file, "--gate", gate, "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["gate"]["passed"] is True
    assert "gate passed" in same.stderr

    # The same index, but an abstention threshold that no retrieved chunk reaches.
    worse = invoke(
        {**rag_env, "LOOPLINE_MIN_RELEVANCE": "0.99"}, "eval", "rag", "--qa", qa_file, "--gate", gate, "--json"
    )
    assert worse.exit_code == GATE_FAILED_EXIT_CODE
    out = json.loads(worse.stdout)  # the result is still printed for CI to keep
    assert out["gate"]["passed"] is False and out["overall"]["hit@5"] < data["overall"]["hit@5"]
    assert "GATE FAILED: 2 of 2 checks" in worse.stderr
    hit_row = next(line for line in worse.stderr.splitlines() if line.startswith("hit@5"))
    assert "below min 0.8" in hit_row and "regressed" in hit_row
    assert any(
        line.startswith("wrong_abstain_rate_answerable") and "above max 0.2" in line
        for line in worse.stderr.splitlines()
    )


def test_a_missing_baseline_file_is_an_error_that_says_how_to_make_one(rag_env, qa_file: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text("metrics:\n  hit@5: {max_regression: 0.05}\nbaseline_file: nowhere.json\n")
    res = CliRunner().invoke(main, ["eval", "rag", "--qa", str(qa_file), "--gate", str(gate)], env=rag_env)
    assert res.exit_code == 1
    assert "nowhere.json" in res.output and "--json >" in res.output


# --- vision -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vision_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    pytest.importorskip("ultralytics")
    home = tmp_path_factory.mktemp("vision-home")
    return {"LOOPLINE_HOME": str(home), "LOOPLINE_TRAIN_THREADS": "2"}


@pytest.fixture(scope="module")
def trained(vision_env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch detector registered as version 1 and promoted; returns its data.yaml."""
    out = tmp_path_factory.mktemp("plates")
    made = invoke(
        vision_env, "vision", "dataset", "synth", out, "--train", "16", "--val", "8", "--imgsz", "64", "--seed", "3"
    )
    data = Path(made.stdout.strip())
    res = invoke(
        vision_env, "vision", "train", "--data", data, "--epochs", "1", "--imgsz", "64", "--batch", "8", "--json"
    )
    assert res.exit_code == 0, res.output
    assert invoke(vision_env, "vision", "promote", "1").exit_code == 0
    return data


def _true_counts(data_yaml: Path, split: str = "val") -> list[int]:
    """Objects per class in the split's label files, counted directly."""
    cfg = yaml.safe_load(data_yaml.read_text())
    counts = [0] * len(cfg["names"])
    labels = Path(cfg.get("path") or data_yaml.parent) / "labels" / split
    for f in labels.glob("*.txt"):
        for line in f.read_text().splitlines():
            if line.strip():
                counts[int(line.split()[0])] += 1
    return counts


def test_eval_vision_adds_a_confusion_matrix_and_writes_a_report(vision_env, trained: Path, tmp_path: Path) -> None:
    report = tmp_path / "vision.html"
    res = invoke(vision_env, "eval", "vision", "1", "--data", trained, "--report", report, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"mAP50", "mAP50-95", "per_class", "confusion_matrix"} <= out.keys() and out["version"] == "1"

    names = list(yaml.safe_load(trained.read_text())["names"].values())
    cm = out["confusion_matrix"]
    assert cm["names"] == [*names, "background"]
    assert len(cm["matrix"]) == len(names) + 1 and all(len(row) == len(names) + 1 for row in cm["matrix"])
    # Every true object lands in exactly one cell of its column (found, confused or missed).
    column_sums = [sum(row[j] for row in cm["matrix"]) for j in range(len(names))]
    assert column_sums == _true_counts(trained)

    pngs = embedded_pngs(report)
    assert len(pngs) == 3  # per-class bars, confusion matrix, registered versions
    assert "Confusion matrix" in report.read_text()


def test_vision_gate_stops_a_model_below_its_floor_and_compares_with_production(
    vision_env, trained: Path, tmp_path: Path
) -> None:
    # Its own mAP50 as recorded at training (the same validation split), and a floor above it.
    own = json.loads(invoke(vision_env, "vision", "models", "--json").stdout)[0]["mAP50"]
    strict = tmp_path / "strict.yaml"
    strict.write_text(yaml.safe_dump({"metrics": {"mAP50": {"min": round(own + 0.05, 4)}}}))
    failed = invoke(vision_env, "eval", "vision", "1", "--data", trained, "--gate", strict, "--json")
    assert failed.exit_code == GATE_FAILED_EXIT_CODE
    assert "GATE FAILED" in failed.stderr and any(line.startswith("mAP50 ") for line in failed.stderr.splitlines())
    assert json.loads(failed.stdout)["mAP50"] == own  # the gate judged the same figure the registry holds

    against_production = tmp_path / "regression.yaml"
    against_production.write_text(
        yaml.safe_dump(
            {
                "metrics": {"mAP50": {"max_regression": 0.0}, "mAP50-95": {"max_regression": 0.0}},
                "baseline": "production",
            }
        )
    )
    passed = invoke(vision_env, "eval", "vision", "1", "--data", trained, "--gate", against_production, "--json")
    assert passed.exit_code == 0, passed.output
    gate = json.loads(passed.stdout)["gate"]
    assert gate["passed"] and gate["baseline_label"].startswith("production (v1")
    assert all(c["baseline"] == c["value"] for c in gate["checks"])  # the production model is this one
