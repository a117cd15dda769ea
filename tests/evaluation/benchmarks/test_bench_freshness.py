"""The freshness benchmark, tiny: every change shows in an answer, through the table and the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evaluation.benchmarks.freshness import freshness, render


@pytest.mark.slow
def test_a_tiny_run_times_every_change_to_its_answer(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    topics = ["expenses", "travel", "security", "onboarding"]
    for topic in topics:
        body = f"# {topic.title()}\n\n" + " ".join(f"The {topic} policy covers case {i} in detail." for i in range(30))
        (corpus / f"{topic}.md").write_text(body, encoding="utf-8")
    args = [str(corpus), "--rows", "4", "--changes", "3", "--folder-changes", "2", "--events", "0", "--json"]
    result = CliRunner().invoke(freshness, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["command"].startswith("python -m evaluation.benchmarks.freshness ")
    table, folder = report["table"], report["folder"]
    assert table["rows"] == 4 and table["snapshot"]["chunks"] >= 4
    assert table["change_to_answer"]["n"] == 3 and table["change_to_answer"]["missed"] == 0
    assert 0 < table["change_to_answer"]["p50_s"] <= table["change_to_answer"]["p95_s"] < 30
    assert table["bulk_change"]["rows"] == 4 and table["bulk_change"]["rows_per_s"] > 0
    assert folder["change_to_answer"]["missed"] == 0 and folder["sync_s_p50"] > 0
    lines = render(report).splitlines()
    assert lines[1].startswith("table (CDC, follow)") and lines[2].startswith("folder (re-sync)")
