"""The gate decision: floors, ceilings, tolerated regressions, and gate files that say what is wrong.

The end-to-end gates (a worse pipeline or model through `loopline eval … --gate`, exit
code 3) are in test_eval_cli.py; here the rules themselves, on result dicts shaped like
the real outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.gates import Gate, MetricCheck, check_gate, load_gate, metric_value

RAG_RESULT = {"overall": {"hit@1": 0.70, "hit@5": 0.90, "wrong_abstain_rate_answerable": 0.10}, "questions": []}
VISION_RESULT = {"mAP50": 0.62, "mAP50-95": 0.41, "per_class": {"scratch": {"ap50": 0.55}, "crack": {"ap50": 0.20}}}


def gate(**metrics: dict) -> Gate:
    return Gate(metrics={k: MetricCheck(**v) for k, v in metrics.items()})


def statuses(result) -> dict[str, str]:
    return {c.metric: c.status for c in result.checks}


def test_a_metric_below_its_floor_fails_and_one_at_it_passes() -> None:
    res = check_gate(RAG_RESULT, gate(**{"hit@1": {"min": 0.8}, "hit@5": {"min": 0.9}}), None)
    assert not res.passed
    assert statuses(res) == {"hit@1": "fail", "hit@5": "pass"}
    assert "below min 0.8" in res.failed[0].reason


def test_a_ceiling_holds_for_lower_is_better_metrics() -> None:
    g = gate(wrong_abstain_rate_answerable={"max": 0.05, "higher_is_better": False})
    assert not check_gate(RAG_RESULT, g, None).passed
    g = gate(wrong_abstain_rate_answerable={"max": 0.2, "higher_is_better": False})
    assert check_gate(RAG_RESULT, g, None).passed


def test_regression_beyond_tolerance_fails_within_it_passes() -> None:
    baseline = {"overall": {"hit@1": 0.75, "hit@5": 0.95}}
    res = check_gate(
        RAG_RESULT, gate(**{"hit@1": {"max_regression": 0.02}, "hit@5": {"max_regression": 0.05}}), baseline
    )
    assert statuses(res) == {"hit@1": "fail", "hit@5": "pass"}  # -0.05 vs tolerance 0.02; -0.05 vs 0.05
    assert res.failed[0].baseline == 0.75 and "regressed 0.05" in res.failed[0].reason
    # An improvement is never a regression.
    assert check_gate(RAG_RESULT, gate(**{"hit@1": {"max_regression": 0.0}}), {"overall": {"hit@1": 0.5}}).passed


def test_regression_of_a_lower_is_better_metric_is_an_increase() -> None:
    g = gate(wrong_abstain_rate_answerable={"max_regression": 0.01, "higher_is_better": False})
    assert not check_gate(RAG_RESULT, g, {"overall": {"wrong_abstain_rate_answerable": 0.0}}).passed
    assert check_gate(RAG_RESULT, g, {"overall": {"wrong_abstain_rate_answerable": 0.3}}).passed


def test_a_metric_missing_from_the_results_fails_rather_than_passing_silently() -> None:
    res = check_gate(VISION_RESULT, gate(mAP75={"min": 0.1}), None)
    assert not res.passed and res.failed[0].reason == "metric not in the results"


def test_without_a_baseline_regressions_are_skipped_but_floors_still_hold() -> None:
    res = check_gate(
        VISION_RESULT, gate(mAP50={"max_regression": 0.02}, **{"mAP50-95": {"min": 0.5, "max_regression": 0.02}}), None
    )
    assert statuses(res) == {"mAP50": "skipped", "mAP50-95": "fail"}
    assert not res.passed
    assert check_gate(VISION_RESULT, gate(mAP50={"max_regression": 0.02}), None).passed


def test_per_class_figures_are_reachable_by_dotted_path() -> None:
    assert metric_value(VISION_RESULT, "per_class.crack.ap50") == 0.20
    res = check_gate(
        VISION_RESULT, gate(**{"per_class.crack.ap50": {"min": 0.3}, "per_class.scratch.ap50": {"min": 0.3}}), None
    )
    assert statuses(res) == {"per_class.crack.ap50": "fail", "per_class.scratch.ap50": "pass"}


def test_the_failure_table_names_metric_value_baseline_and_reason() -> None:
    res = check_gate(VISION_RESULT, gate(mAP50={"min": 0.7, "max_regression": 0.01}), {"mAP50": 0.66})
    table = res.table(only_failed=True)
    header, _rule, row = table.splitlines()
    assert header.split() == ["metric", "value", "baseline", "status", "why"]
    assert row.split()[:4] == ["mAP50", "0.62", "0.66", "fail"]
    assert "below min 0.7" in row and "regressed 0.04" in row


def test_gate_file_is_validated_and_its_baseline_file_resolved(tmp_path: Path) -> None:
    (tmp_path / "gates").mkdir()
    path = tmp_path / "gates" / "rag.yaml"
    path.write_text("metrics:\n  hit@5: {min: 0.8, max_regression: 0.05}\nbaseline_file: ../base.json\n")
    g = load_gate(path)
    assert g.metrics["hit@5"].min == 0.8 and g.needs_baseline
    assert g.baseline_file == (tmp_path / "base.json").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics:\n  mAP50: {minimum: 0.5}\n", r"metrics\.mAP50\.minimum: Extra inputs"),
        ("metrics:\n  mAP50: {}\n", r"give at least one of min, max, max_regression"),
        ("metrics: {}\n", r"metrics: .*at least 1 item"),
        ("metrics: [unclosed\n", r"not valid YAML"),
        ("metrics:\n  mAP50: {max_regression: -0.1}\n", r"max_regression: Input should be greater than or equal to 0"),
    ],
)
def test_a_wrong_gate_file_says_what_is_wrong_and_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as exc:
        load_gate(path)
    assert str(path) in str(exc.value)
