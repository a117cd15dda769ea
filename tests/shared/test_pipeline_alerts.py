"""Pipeline runs: a failed run and a silently stuck run are alerts, cleared by a later success."""

from __future__ import annotations

from shared.metadata.store import MetadataStore
from shared.monitoring.monitoring_config import MonitoringConfig
from shared.monitoring.pipelines import RunThresholds, recent_runs, run_problems
from shared.monitoring.rules import Monitor
from tests.helpers.run_records import record_run


def alerts_of(report) -> dict:
    return {(a.kind, a.key): a for a in report.raised}


def run_alerts(alerts) -> list[tuple[str, str]]:
    """(kind, key) of the run alerts among `alerts` (freshness has its own tests)."""
    return [(a.kind, a.key) for a in alerts if a.kind.startswith("run_")]


def test_a_failed_run_raises_a_critical_alert_with_its_error(store: MetadataStore) -> None:
    record_run(store, "folder:/docs", kind="sync", hours_ago=5)
    failed = record_run(
        store, "folder:/docs", kind="sync", status="failed", error="PermissionError: /docs/a.pdf", hours_ago=1
    )
    record_run(store, "dataset:plates", kind="dataset", status="interrupted", error="KeyboardInterrupt: ")
    monitor = Monitor(store, MonitoringConfig())

    raised = alerts_of(monitor.check())

    alert = raised[("run_failed", "folder:/docs")]
    assert alert.severity == "critical"
    assert "PermissionError: /docs/a.pdf" in alert.message and f"#{failed}" in alert.message
    assert alert.details["id"] == failed and alert.details["kind"] == "sync"
    assert raised[("run_failed", "dataset:plates")].severity == "warning"  # someone pressed Ctrl-C
    monitor.close()


def test_a_later_success_of_the_same_source_resolves_the_failure(store: MetadataStore) -> None:
    record_run(store, "folder:/docs", kind="ingest", status="failed", error="boom")
    record_run(store, "train:/data/plates.yaml", kind="train", status="failed", error="CUDA OOM")
    monitor = Monitor(store, MonitoringConfig())
    monitor.check()

    record_run(store, "folder:/docs", kind="sync")  # another kind, same source
    report = monitor.check()

    assert run_alerts(report.resolved) == [("run_failed", "folder:/docs")]
    assert run_alerts(report.open) == [("run_failed", "train:/data/plates.yaml")]
    monitor.close()


def test_a_run_running_past_the_threshold_is_stuck_until_a_later_run_succeeds(store: MetadataStore) -> None:
    zombie = record_run(store, "folder:/docs", kind="sync", status=None, hours_ago=3)
    record_run(store, "folder:/busy", kind="sync", status=None, hours_ago=1)  # running, but not for long
    record_run(store, "train:/data.yaml", kind="train", status=None, hours_ago=3)  # trainings may take 12 h
    monitor = Monitor(store, MonitoringConfig(runs=RunThresholds(stuck_after_h=2)))

    report = monitor.check()
    stuck = [a for a in report.raised if a.kind == "run_stuck"]
    assert [a.key for a in stuck] == ["folder:/docs"]
    assert stuck[0].details["id"] == zombie and "3.0 h" in stuck[0].message

    record_run(store, "folder:/docs", kind="sync")
    assert run_alerts(monitor.check().resolved) == [("run_stuck", "folder:/docs")]
    monitor.close()


def test_problems_are_one_per_source_and_runs_carry_durations(store: MetadataStore) -> None:
    for hours in (3, 2, 1):
        record_run(store, "folder:/flaky", kind="sync", status="failed", error=f"try {hours}", hours_ago=hours)
    problems = run_problems(store, RunThresholds())
    assert len(problems) == 1 and problems[0].runs_affected == 3
    assert problems[0].run.error == "try 1"  # the latest failure is the one reported

    runs = recent_runs(store, limit=2)
    assert [r.error for r in runs] == ["try 1", "try 2"]
    assert all(r.duration_s is not None and r.duration_s >= 0 and r.running_for_s is None for r in runs)
