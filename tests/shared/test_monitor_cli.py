"""`loopline monitor …` as an operator runs it: check, status --json, report, psi.

A home is seeded with real run records (a failed ingest, a stale sync, a fresh one) and a
drifting monitored stream, then the commands run through the `loopline` entry group.
"""

from __future__ import annotations

import base64
import json
import re
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from shared.cli import _missing_extra, extra_for, main
from shared.metadata.store import MetadataStore
from shared.monitoring.drift import DriftMonitor
from tests.helpers.run_records import record_run

HOUR = 3600
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A LOOPLINE_HOME with runs and a stream whose brightness drifts over the last hours."""
    home = tmp_path / "home"
    home.mkdir()
    store = MetadataStore(f"sqlite:///{(home / 'metadata.db').resolve()}")
    record_run(store, "folder:/srv/handbook", kind="sync", hours_ago=30)
    record_run(store, "folder:/srv/wiki", kind="sync", hours_ago=2)
    record_run(store, "folder:/srv/wiki", kind="ingest", status="failed", error="OSError: share unmounted", hours_ago=1)
    record_run(store, "train:/data/plates.yaml", kind="train", hours_ago=5)

    rng = np.random.default_rng(3)
    t = [time.time() - 12 * HOUR]
    drift = DriftMonitor(store, clock=lambda: t[0])
    drift.record("vision:line-1", "brightness", rng.normal(0.5, 0.1, 800).tolist())
    drift.freeze_reference("vision:line-1", label="model v1")
    for hour in range(1, 12):
        t[0] += HOUR
        drift.record("vision:line-1", "brightness", rng.normal(0.5 + 0.02 * hour, 0.1, 300).tolist())
    store.close()
    return home


def loopline(home: Path, *args: str):
    result = CliRunner().invoke(main, list(args), env={"LOOPLINE_HOME": str(home)}, catch_exceptions=False)
    return result


def test_check_raises_alerts_and_status_json_reports_everything(home: Path) -> None:
    checked = loopline(home, "monitor", "check", "--json")
    assert checked.exit_code == 0, checked.output
    raised = {(a["kind"], a["key"]) for a in json.loads(checked.output)["raised"]}
    assert raised == {
        ("run_failed", "folder:/srv/wiki"),
        ("freshness", "folder:/srv/handbook"),
        ("drift", "vision:line-1/brightness"),
    }

    shown = loopline(home, "monitor", "status", "--json")
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.output)
    assert {"drift", "freshness", "recent_runs", "alerts"} <= set(status)

    assert [(d["stream"], d["feature"], d["status"]) for d in status["drift"]] == [
        ("vision:line-1", "brightness", "alert")
    ]
    fresh = {f["source"]: f for f in status["freshness"]}
    assert fresh["folder:/srv/handbook"]["breached"] and 29.9 < fresh["folder:/srv/handbook"]["age_s"] / HOUR < 30.1
    assert not fresh["folder:/srv/wiki"]["breached"]
    runs = status["recent_runs"]
    assert [r["status"] for r in runs] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert all(r["duration_s"] is not None for r in runs)
    assert runs[1]["error"] == "OSError: share unmounted"
    failed = next(a for a in status["alerts"] if a["kind"] == "run_failed")
    assert failed["severity"] == "critical" and "share unmounted" in failed["message"]
    assert status["alerts"][0]["severity"] == "critical"  # most severe first


def test_status_reads_only_and_check_twice_raises_nothing_new(home: Path) -> None:
    assert json.loads(loopline(home, "monitor", "status", "--json").output)["alerts"] == []
    loopline(home, "monitor", "check")
    again = loopline(home, "monitor", "check")
    assert again.exit_code == 0 and "0 raised, 0 resolved, 3 open" in again.output


def test_report_is_one_self_contained_page_with_the_plots(home: Path, tmp_path: Path) -> None:
    loopline(home, "monitor", "check")
    out = tmp_path / "reports" / "monitoring.html"
    result = loopline(home, "monitor", "report", str(out))
    assert result.exit_code == 0, result.output

    page = out.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    pngs = [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert len(pngs) == 3  # drift history, freshness, runs (no model registry in this home)
    assert all(p.startswith(b"\x89PNG") and len(p) > 10_000 for p in pngs)
    for text in ("vision:line-1", "folder:/srv/handbook", "OSError: share unmounted", "run_failed"):
        assert text in page


def test_report_on_a_fresh_home_says_what_drift_waits_for_instead_of_empty_charts(tmp_path: Path) -> None:
    """The rag stream right after `loopline serve` first started: 243 answers of the 500 its reference needs."""
    home = tmp_path / "fresh"
    home.mkdir()
    store = MetadataStore(f"sqlite:///{(home / 'metadata.db').resolve()}")
    drift = DriftMonitor(store)
    drift.request_reference("rag", label="all-MiniLM-L6-v2 + extractive")
    rng = np.random.default_rng(5)
    drift.record_many(
        "rag",
        {
            "query_length": rng.integers(10, 120, 243).tolist(),
            "top1_score": rng.uniform(0.2, 0.9, 243).tolist(),
            "abstained": rng.integers(0, 2, 243).astype(float).tolist(),
            "citations": rng.integers(0, 4, 243).tolist(),
        },
    )
    store.close()

    out = tmp_path / "monitoring.html"
    result = loopline(home, "monitor", "report", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "rag: reference frozen after 500 values; 243 so far" in page
    assert "PSI per feature of rag" not in page
    assert re.findall(r'src="data:image/png;base64,', page) == []  # no runs, no models, no drift history yet
    assert page.count("no_reference") == 4  # the table still lists each feature


def test_a_broken_monitoring_file_is_reported_with_its_name(home: Path) -> None:
    (home / "monitoring.yaml").write_text("runs:\n  stuck_after: 3\n")
    result = loopline(home, "monitor", "check")
    assert result.exit_code != 0
    assert "monitoring.yaml" in result.output and "stuck_after" in result.output


def test_psi_is_a_monitor_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ref, cur = tmp_path / "ref.txt", tmp_path / "cur.txt"
    ref.write_text("\n".join(map(str, rng.normal(0, 1, 2000))))
    cur.write_text("\n".join(map(str, rng.normal(1.5, 1, 2000))))
    result = loopline(tmp_path, "monitor", "psi", "--reference", str(ref), "--current", str(cur), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "alert"


def test_install_hints_name_extras_that_exist() -> None:
    """`monitor` (and the `monitoring` API) has no extra of its own: numpy and httpx come with `rag`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = set(project["optional-dependencies"])
    plugins = {name for group in project["entry-points"].values() for name in group}
    assert {"monitor", "monitoring"} <= plugins
    assert {name: extra_for(name) for name in plugins if extra_for(name) not in extras} == {}

    cmd = _missing_extra("monitor", ImportError("No module named 'httpx'", name="httpx"))
    result = CliRunner().invoke(cmd, ["status"])
    assert result.exit_code != 0
    assert "pip install 'loopline[rag]'" in result.output and "httpx" in result.output

    named = {
        (path.relative_to(REPO).as_posix(), extra)
        for package in ("shared", "rag", "vision", "edge", "evaluation")
        for path in (REPO / package).rglob("*.py")
        for extra in re.findall(r"loopline\[([\w,]+)\]", path.read_text(encoding="utf-8"))
    }
    assert {(path, extra) for path, extra in named if not set(extra.split(",")) <= extras} == set()
