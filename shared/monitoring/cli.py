"""`loopline monitor`: the system's health from the command line.

`status` shows drift, freshness, recent runs and open alerts; `check` runs the rules once
(opening and resolving alerts, notifying webhooks) — for cron or CI when no API runs the
checks in the background; `report` writes the HTML page with the plots; `psi` compares two
files of values. They open the metadata store directly (SQLite allows several processes),
so they work whether or not `loopline serve` runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.monitoring.psi_cli import psi


def _open_store(settings: Settings) -> MetadataStore:
    settings.ensure_home()
    return MetadataStore(settings.resolved_database_url)


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        raise click.ClickException(f"invalid LOOPLINE_* settings: {exc}") from exc


def _hours(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds / 3600:.1f} h"


@click.group()
def monitor() -> None:
    """Drift, freshness SLOs, pipeline runs and alerts (configured in $LOOPLINE_HOME/monitoring.yaml)."""


@monitor.command()
@click.option(
    "--json", "as_json", is_flag=True, help="Print {checked_at, drift, freshness, recent_runs, alerts, models}."
)
def status(as_json: bool) -> None:
    """What is drifting, stale, failing or alerting right now (read-only)."""
    from shared.monitoring.status import monitoring_status

    settings = _settings()
    store = _open_store(settings)
    try:
        data = monitoring_status(store, settings=settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    models = ", ".join(f"{m['fleet'] or 'every fleet'} v{m['version']}" for m in data["models"])
    click.echo(f"production models: {models or 'none promoted yet'}")
    click.echo(f"open alerts: {len(data['alerts'])}")
    for a in data["alerts"]:
        click.echo(f"  [{a['severity']}] {a['kind']} {a['key']}: {a['message']} (seen {a['count']}x)")
    click.echo("drift:" if data["drift"] else "drift: no monitored streams")
    for d in data["drift"]:
        psi = "—" if d.get("psi") is None else f"{d['psi']:.3f}"
        click.echo(f"  {d['stream']}/{d['feature']}: PSI {psi} {d['status']}")
    click.echo("freshness:" if data["freshness"] else "freshness: no ingest or sync runs yet")
    for f in data["freshness"]:
        slo = "no SLO" if f["slo_s"] is None else f"SLO {_hours(f['slo_s'])}"
        click.echo(f"  {f['state']:<11} {f['source']}: last success {_hours(f['age_s'])} ago, {slo}")
    click.echo("recent runs:")
    for r in data["recent_runs"]:
        took = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else f"running {_hours(r['running_for_s'])}"
        err = f" — {r['error']}" if r["error"] else ""
        click.echo(f"  #{r['id']} {r['kind']:<8} {r['status']:<11} {took:<16} {r['source']}{err}")


@monitor.command()
@click.option("--json", "as_json", is_flag=True, help="Print {checked_at, raised, resolved, open}.")
def check(as_json: bool) -> None:
    """Run the monitoring rules once: open alerts for what is wrong (webhooks told), resolve what cleared."""
    from shared.monitoring.rules import Monitor

    settings = _settings()
    store = _open_store(settings)
    try:
        with Monitor.from_settings(settings, store) as mon:
            report = mon.check()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        click.echo(report.model_dump_json(indent=2))
        return
    for a in report.raised:
        click.echo(f"RAISED   [{a.severity}] {a.kind} {a.key}: {a.message}")
    for a in report.resolved:
        click.echo(f"RESOLVED {a.kind} {a.key}")
    click.echo(f"{len(report.raised)} raised, {len(report.resolved)} resolved, {len(report.open)} open")


@monitor.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def report(out: Path) -> None:
    """Write OUT (HTML, self-contained): drift, freshness, runs and model plots."""
    from shared.monitoring.report import write_report

    try:
        import matplotlib  # noqa: F401 - the plots; imported lazily by the report
    except ImportError as exc:
        raise click.ClickException(
            "`loopline monitor report` draws its plots with matplotlib, which is not installed here: "
            "pip install 'loopline[eval]'"
        ) from exc

    settings = _settings()
    store = _open_store(settings)
    try:
        path = write_report(store, out, settings=settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    click.echo(f"wrote {path}")


monitor.add_command(psi)  # the drift owner's ad-hoc PSI check
