"""Freshness SLOs: a source nobody synced for too long breaches its SLO and raises an alert."""

from __future__ import annotations

from shared.metadata.store import MetadataStore
from shared.monitoring.freshness import FreshnessOverride, FreshnessSLOs, freshness
from shared.monitoring.monitoring_config import MonitoringConfig
from shared.monitoring.rules import Monitor
from tests.helpers.run_records import record_run


def by_source(rows) -> dict:
    return {r.source: r for r in rows}


def test_a_source_synced_longer_ago_than_its_slo_breaches_it(store: MetadataStore) -> None:
    record_run(store, "folder:/docs/old", kind="sync", hours_ago=30)
    record_run(store, "folder:/docs/new", kind="ingest", hours_ago=2)
    record_run(store, "folder:/docs/new", kind="ingest", status="failed", hours_ago=1)  # a failure does not refresh

    rows = by_source(freshness(store, FreshnessSLOs(default_slo_h=24)))

    old, new = rows["folder:/docs/old"], rows["folder:/docs/new"]
    assert old.breached and old.state == "stale" and 29.9 < old.age_s / 3600 < 30.1
    assert not new.breached and new.state == "fresh" and 1.9 < new.age_s / 3600 < 2.1
    assert old.slo_s == new.slo_s == 24 * 3600
    assert list(rows) == ["folder:/docs/old", "folder:/docs/new"]  # stalest first


def test_per_source_slos_by_glob_first_match_wins(store: MetadataStore) -> None:
    record_run(store, "folder:/srv/handbook", kind="sync", hours_ago=7)
    record_run(store, "folder:/srv/archive", kind="sync", hours_ago=500)
    record_run(store, "folder:/srv/other", kind="sync", hours_ago=7)
    slos = FreshnessSLOs(
        default_slo_h=24,
        sources=[
            FreshnessOverride(match="folder:/srv/hand*", slo_h=6),
            FreshnessOverride(match="folder:*/archive", slo_h=None),
            FreshnessOverride(match="folder:/srv/*", slo_h=1000),
        ],
    )
    rows = by_source(freshness(store, slos))
    assert rows["folder:/srv/handbook"].breached and rows["folder:/srv/handbook"].slo_s == 6 * 3600
    assert not rows["folder:/srv/archive"].breached and rows["folder:/srv/archive"].state == "unmonitored"
    assert not rows["folder:/srv/other"].breached and rows["folder:/srv/other"].slo_s == 1000 * 3600


def test_a_source_that_never_succeeded_is_stale_after_its_slo_and_uploads_have_none(store: MetadataStore) -> None:
    record_run(store, "folder:/broken", kind="sync", status="failed", error="disk gone", hours_ago=30)
    record_run(store, "folder:/broken", kind="sync", status="failed", error="disk gone", hours_ago=1)
    record_run(store, "folder:/new", kind="sync", status=None)  # its first sync is still running
    record_run(store, "folder:/home/uploads", kind="upload", hours_ago=100)
    record_run(store, "folder:/partial", kind="sync", status="partial", hours_ago=1)

    rows = by_source(freshness(store, FreshnessSLOs()))
    assert rows["folder:/broken"].breached and rows["folder:/broken"].last_success_at is None
    assert not rows["folder:/new"].breached and rows["folder:/new"].age_s is None
    assert "folder:/home/uploads" not in rows  # pushed by people, not synced: no SLO to breach
    assert not rows["folder:/partial"].breached  # some files dead-lettered, the rest is fresh

    asked = by_source(freshness(store, FreshnessSLOs(), sources=["folder:/home/uploads"]))
    assert asked["folder:/home/uploads"].state == "unmonitored" and not asked["folder:/home/uploads"].breached


def test_a_stale_source_raises_an_alert_that_clears_after_a_sync(store: MetadataStore) -> None:
    record_run(store, "folder:/docs", kind="sync", hours_ago=25)
    record_run(store, "folder:/fresh", kind="sync", hours_ago=1)
    monitor = Monitor(store, MonitoringConfig())

    first = monitor.check()
    assert [(a.kind, a.key, a.severity) for a in first.raised] == [("freshness", "folder:/docs", "warning")]
    assert "25.0 h ago" in first.raised[0].message and "SLO 24" in first.raised[0].message
    assert monitor.check().raised == []  # still stale: no second alert

    record_run(store, "folder:/docs", kind="sync")
    cleared = monitor.check()
    assert [(a.kind, a.key) for a in cleared.resolved] == [("freshness", "folder:/docs")]
    assert cleared.open == []
    monitor.close()
