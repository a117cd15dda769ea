"""The metrics-overhead benchmark with one round: both apps answer, every figure is there and sane."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from evaluation.benchmarks.metrics_overhead import QUESTIONS, metrics_overhead, render


@pytest.mark.slow
def test_one_round_reports_both_apps_the_recording_and_a_scrape() -> None:
    pytest.importorskip("fastapi")
    result = CliRunner().invoke(metrics_overhead, ["--rounds", "1", "--pings", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["command"] == "python -m evaluation.benchmarks.metrics_overhead --rounds 1 --pings 2 --json"

    assert report["query"]["n"] == len(QUESTIONS) and report["healthz"]["n"] == 2
    for name in ("query", "healthz"):
        s = report[name]
        assert s["median_ms_with_metrics"] > 0 and s["median_ms_without_metrics"] > 0, name
        assert s["ratio"] == pytest.approx(s["median_ms_with_metrics"] / s["median_ms_without_metrics"], rel=1e-2)
    assert report["recording"]["us_per_query"] > 0 and 0 < report["recording"]["share_of_median_query"] < 1
    assert report["scrape"]["n"] == 50 and report["scrape"]["page_bytes"] > 0

    table = render(report).splitlines()
    assert table[0].split() == ["requests", "n", "with", "(ms)", "without", "(ms)", "ratio", "paired", "diff", "(us)"]
    assert table[1].startswith("query") and table[2].startswith("healthz")
    assert table[3].startswith("recording per query:") and table[4].startswith("GET /metrics:")
