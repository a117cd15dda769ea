"""The monitoring report (`loopline monitor report OUT.html`): one page to look at, not read.

Plots, each with the threshold it is judged against drawn in:
- drift: PSI per feature over time, one small panel per feature, warn/alert bands shaded; a
  feature with no PSI yet gets a line saying what it waits for (a reference, enough values)
  instead of an empty panel;
- freshness: age of each source's last successful refresh as a bar, its SLO as a mark;
- pipeline runs: durations over time by kind, failures and stuck runs marked, and runs per
  day stacked by outcome;
- models: registry metrics (mAP50, mAP50-95, precision, recall) over model versions, read
  straight from MLflow when an MLflow registry exists (optional; `shared` never imports the
  vision package).
Tables below the plots carry the exact figures. The page is self-contained (`HtmlReport`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.clock import Clock, as_utc, resolve_now
from shared.monitoring.drift import DriftMonitor, ReferenceProgress
from shared.monitoring.freshness import SourceFreshness, freshness
from shared.monitoring.monitoring_config import (
    DriftThresholds,
    MonitoringConfig,
    load_monitoring_config,
)
from shared.monitoring.pipelines import RunRecord, run_history
from shared.monitoring.rules import drift_status_dict
from shared.reporting import HtmlReport, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

STATUS_COLOURS = {
    "succeeded": "#2da44e",
    "partial": "#d4a72c",
    "failed": "#cf222e",
    "interrupted": "#bc4c00",
    "running": "#8250df",
}
MODEL_METRICS = ("mAP50", "mAP50-95", "precision", "recall")
History = dict[tuple[str, str], list[tuple[datetime, float]]]


def _date_axis(ax) -> None:
    """Few, short date ticks (a day once, then hours) instead of a crowded timestamp row."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def short_source(source: str, width: int = 42) -> str:
    """A source name that fits an axis label: the end of long paths is what tells them apart."""
    return source if len(source) <= width else "…" + source[-(width - 1) :]


# --- figures -------------------------------------------------------------------------------
def drift_figure(stream: str, history: dict[str, list[tuple[datetime, float]]], thresholds: DriftThresholds) -> Figure:
    """PSI over time, one panel per feature of `stream`, with the warn and alert bands."""
    features = sorted(history)
    cols = min(3, len(features))
    rows = -(-len(features) // cols)
    fig = new_figure(3.4 * cols, 2.5 * rows + 0.4)
    top = max([thresholds.alert * 1.6] + [v * 1.15 for pts in history.values() for _, v in pts])
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax in axes.flat[len(features) :]:
        ax.set_visible(False)
    for ax, feature in zip(axes.flat, features):
        pts = sorted(history[feature])
        ax.axhspan(0, thresholds.warn, color="#dafbe1", zorder=0)
        ax.axhspan(thresholds.warn, thresholds.alert, color="#fff8c5", zorder=0)
        ax.axhspan(thresholds.alert, top, color="#ffebe9", zorder=0)
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3, color="#0969da", linewidth=1.5)
            worst = [(x, y) for x, y in pts if y >= thresholds.alert]
            if worst:
                ax.scatter(*zip(*worst), color="#cf222e", s=22, zorder=3)
        ax.set_title(feature, fontsize=10)
        ax.set_ylim(0, top)
        _date_axis(ax)
        ax.tick_params(labelsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("PSI")
    fig.suptitle(
        f"{stream}: PSI over time (green < {thresholds.warn:g} ≤ yellow < {thresholds.alert:g} ≤ red)", fontsize=11
    )
    return fig


def freshness_figure(rows: Sequence[SourceFreshness]) -> Figure:
    """Hours since each source's last successful refresh, against its SLO."""
    rows = list(rows)
    fig = new_figure(8.0, 0.45 * len(rows) + 1.4)
    ax = fig.subplots()
    hours = [(r.age_s or 0) / 3600 for r in rows]
    slos = [(r.slo_s or 0) / 3600 for r in rows]
    longest = max(hours + slos + [1.0])
    widths = [longest * 1.05 if r.age_s is None else h for r, h in zip(rows, hours)]
    colours = ["#cf222e" if r.breached else "#8c959f" if r.slo_s is None else "#2da44e" for r in rows]
    y = list(range(len(rows)))
    bars = ax.barh(y, widths, color=colours, height=0.6)
    for bar, r in zip(bars, rows):
        if r.age_s is None:
            bar.set_hatch("//")
            bar.set_alpha(0.6)
    for yi, slo in zip(y, slos):
        if slo:
            ax.plot([slo, slo], [yi - 0.4, yi + 0.4], color="black", linewidth=2.5)
    for yi, r, w in zip(y, rows, widths):
        label = "never refreshed" if r.age_s is None else f"{(r.age_s or 0) / 3600:.1f} h"
        ax.text(w, yi, f" {label}", va="center", fontsize=8)
    ax.set_yticks(y, [short_source(r.source) for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, longest * 1.3)
    ax.set_xlabel("hours since the last successful ingest/sync   (black mark: SLO; red: breached)")
    ax.set_title("Freshness per source")
    return fig


def runs_figure(runs: Sequence[RunRecord]) -> Figure:
    """Run durations over time by kind (failures and stuck runs marked) and runs per day by outcome."""
    fig = new_figure(8.0, 6.0)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 2])
    markers = "osD^vP*"
    palette = ["#0969da", "#1a7f37", "#9a6700", "#bf3989", "#0a3069", "#57606a", "#6e7781"]
    kinds = sorted({r.kind for r in runs})
    for i, kind in enumerate(kinds):
        mine = [r for r in runs if r.kind == kind]
        done = [r for r in mine if r.duration_s is not None and r.status in ("succeeded", "partial")]
        if done:
            top.scatter(
                [r.started_at for r in done],
                [max(r.duration_s or 0, 1e-3) for r in done],
                marker=markers[i % len(markers)],
                s=22,
                color=palette[i % len(palette)],
                alpha=0.8,
                label=kind,
            )
    bad = [r for r in runs if r.status in ("failed", "interrupted")]
    if bad:
        top.scatter(
            [r.started_at for r in bad],
            [max(r.duration_s or 0, 1e-3) for r in bad],
            marker="x",
            s=60,
            color="#cf222e",
            linewidths=2,
            label="failed / interrupted",
        )
    running = [r for r in runs if r.status == "running"]
    if running:
        top.scatter(
            [r.started_at for r in running],
            [max(r.running_for_s or 0, 1e-3) for r in running],
            marker="^",
            s=70,
            facecolors="none",
            edgecolors="#8250df",
            linewidths=1.8,
            label="still running (so far)",
        )
    top.set_yscale("log")
    top.set_ylabel("duration (s, log)")
    top.set_title("Pipeline runs: duration by start time")
    if runs:
        top.legend(fontsize=7, loc="upper left", ncols=min(4, len(kinds) + 2))
    _date_axis(top)
    top.tick_params(labelsize=8)

    per_day: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        per_day[r.started_at.date().isoformat()[5:]][r.status] += 1  # MM-DD
    days = sorted(per_day)
    base = [0] * len(days)
    for status, colour in STATUS_COLOURS.items():
        counts = [per_day[d][status] for d in days]
        if any(counts):
            bottom.bar(days, counts, bottom=base, color=colour, label=status)
            base = [b + c for b, c in zip(base, counts)]
    bottom.set_ylabel("runs per day")
    bottom.tick_params(axis="x", labelrotation=30, labelsize=7)
    if days:
        bottom.legend(fontsize=7, ncols=5)
    return fig


def models_figure(versions: Sequence[dict]) -> Figure:
    """Registry metrics over model versions; the production version marked."""
    fig = new_figure(7.0, 3.6)
    ax = fig.subplots()
    labels = [f"v{v['version']}" for v in versions]
    x = list(range(len(versions)))
    for name in MODEL_METRICS:
        ys = [v["metrics"].get(name) for v in versions]
        if any(y is not None for y in ys):
            ax.plot(x, [float("nan") if y is None else y for y in ys], marker="o", label=name)
    for xi, v in zip(x, versions):
        if any(a == "production" or a.startswith("production-") for a in v.get("aliases", [])):
            ax.axvline(xi, color="#2da44e", linestyle="--", linewidth=1)
            ax.text(xi, 1.02, "production", ha="center", fontsize=8, color="#116329")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("validation metric")
    ax.set_title("Detector metrics over model versions")
    ax.legend(fontsize=8, loc="lower right")
    return fig


# --- data ----------------------------------------------------------------------------------
def _registry_client(settings: Settings):  # noqa: ANN202
    """An MLflow client on the configured registry, or None when there is none to read (no tracking
    URI and no SQLite file: reading never creates an MLflow database) or MLflow is not installed."""
    if not settings.mlflow_tracking_uri and not (settings.home / "mlflow.db").exists():
        return None
    try:
        from mlflow import MlflowClient
    except ImportError:
        return None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=settings.resolved_mlflow_uri)


def registered_aliases(settings: Settings) -> dict[str, str]:
    """{alias: version} of the registered detector ({} without a registry)."""
    client = _registry_client(settings)
    if client is None:
        return {}
    try:
        model = client.get_registered_model(settings.registered_model)
        return {str(k): str(v) for k, v in (model.aliases or {}).items()}
    except Exception as exc:  # noqa: BLE001 - a registry without the model, or unreachable: no aliases to show
        log.debug("registry aliases not read: %s", exc)
        return {}


def registry_versions(settings: Settings) -> list[dict]:
    """[{version, aliases, metrics}] of the registered detector, oldest first; [] without a registry."""
    client = _registry_client(settings)
    if client is None:
        return []
    try:
        found = client.search_model_versions(f"name='{settings.registered_model}'")
        out = [
            {
                "version": str(mv.version),
                "aliases": list(getattr(mv, "aliases", None) or []),
                "metrics": dict(client.get_run(mv.run_id).data.metrics) if mv.run_id else {},
            }
            for mv in found
        ]
    except Exception as exc:  # noqa: BLE001 - an unreachable or foreign registry must not sink the report
        log.warning("model registry at %s not read: %s", settings.resolved_mlflow_uri, exc)
        return []
    return sorted(out, key=lambda v: int(v["version"]) if v["version"].isdigit() else 0)


def drift_data(store: MetadataStore, thresholds: DriftThresholds, clock: Clock) -> tuple[list[dict], History]:
    """Current drift statuses and PSI history per (stream, feature).

    A feature without PSI history gets a `waiting` entry: what it waits for, in words.
    """
    monitor = DriftMonitor(store, clock=clock, warn=thresholds.warn, alert=thresholds.alert)
    statuses = list(monitor.status())
    history = {(s.stream, s.feature): list(monitor.history(s.stream, s.feature)) for s in statuses}
    progress = {(p.stream, p.feature): p for p in monitor.reference_progress()}
    rows = []
    for s in statuses:
        row = drift_status_dict(s)
        if not history[(s.stream, s.feature)]:
            row["waiting"] = waiting_for(row, progress.get((s.stream, s.feature)), monitor)
        rows.append(row)
    return rows, history


def waiting_for(status: dict, progress: ReferenceProgress | None, monitor: DriftMonitor) -> str:
    """What a feature without PSI waits for: 'reference frozen after 500 values; 243 so far'."""
    current = status.get("current_n") or 0
    if status.get("status") == "no_reference":
        if progress is not None:
            return f"reference frozen after {progress.needed} values; {progress.so_far} so far"
        return (
            f"no reference yet and none requested (a model promotion or the service's start requests one); "
            f"{current} values in the current window"
        )
    if status.get("status") == "no_data":
        return f"PSI once the current window has {monitor.min_current} values; {current} so far"
    return f"no PSI history yet (status {status.get('status')})"


def _waiting_lines(statuses: Sequence[dict], charted: set[tuple[str, str]]) -> list[str]:
    """One line per stream and reason: 'rag: …' when all its features wait alike, else naming them."""
    features: dict[str, list[str]] = defaultdict(list)
    reasons: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for s in statuses:
        stream, feature = s["stream"], s["feature"]
        features[stream].append(feature)
        if (stream, feature) not in charted:
            reason = s.get("waiting") or f"no PSI history yet (status {s.get('status')})"
            reasons[stream][reason].append(feature)
    lines = []
    for stream in sorted(reasons):
        for reason, waiting in reasons[stream].items():
            who = stream if len(waiting) == len(features[stream]) else f"{stream} ({', '.join(sorted(waiting))})"
            lines.append(f"{who}: {reason}")
    return lines


# --- the page ------------------------------------------------------------------------------
def build_report(
    store: MetadataStore,
    *,
    settings: Settings,
    now: datetime | float | None = None,
    config: MonitoringConfig | None = None,
    clock: Clock = time.time,
    drift: tuple[list[dict], History] | None = None,
    models: list[dict] | None = None,
    days: int = 30,
) -> HtmlReport:
    """The report as an `HtmlReport`; `drift` and `models` override what is read (tests, callers)."""
    config = config or load_monitoring_config(settings)
    now = resolve_now(now, clock)
    statuses, history = drift if drift is not None else drift_data(store, config.drift, clock)
    fresh = freshness(store, config.freshness, now=now)
    runs = run_history(store, since=now - timedelta(days=days), now=now)
    alerts = AlertStore(store).open_alerts()
    models = models if models is not None else registry_versions(settings)

    page = HtmlReport("loopline monitoring", generated_at=now)
    drifting = sum(1 for s in statuses if s.get("status") == "alert")
    stale = sum(1 for f in fresh if f.breached)
    failed = sum(1 for r in runs if r.status in ("failed", "interrupted"))
    page.paragraph(
        f"{len(alerts)} open alert(s); {drifting} of {len(statuses)} monitored feature(s) drifting; "
        f"{stale} of {len(fresh)} source(s) past their freshness SLO; {failed} of {len(runs)} run(s) "
        f"in the last {days} days failed."
    )

    page.heading("Open alerts")
    page.table(
        [
            {
                "severity": a.severity,
                "kind": a.kind,
                "key": a.key,
                "message": a.message,
                "raised": a.raised_at,
                "seen": a.count,
            }
            for a in alerts
        ]
    )

    page.heading("Drift")
    if not statuses:
        page.paragraph("No monitored streams yet.")
    by_stream: dict[str, dict[str, list[tuple[datetime, float]]]] = defaultdict(dict)
    for (stream, feature), pts in history.items():
        if pts:  # an empty panel would only show a 1970 time axis; what it waits for is said below
            by_stream[stream][feature] = [(as_utc(t), float(v)) for t, v in pts]
    for stream in sorted(by_stream):
        page.figure(
            drift_figure(stream, by_stream[stream], config.drift),
            caption=f"PSI per feature of {stream} against the warn and alert thresholds.",
        )
    charted = {(stream, feature) for stream, pts in by_stream.items() for feature in pts}
    for line in _waiting_lines(statuses, charted):
        page.paragraph(line)
    if statuses:
        page.table(statuses, ["stream", "feature", "status", "psi", "reference_n", "current_n"])

    page.heading("Freshness")
    if fresh:
        page.figure(
            freshness_figure(fresh), caption="Age of each source's last successful refresh; the black mark is its SLO."
        )
        page.table(
            [
                {
                    "source": f.source,
                    "state": f.state,
                    "last success": f.last_success_at,
                    "age (h)": None if f.age_s is None else round(f.age_s / 3600, 2),
                    "SLO (h)": None if f.slo_s is None else f.slo_s / 3600,
                }
                for f in fresh
            ]
        )
    else:
        page.paragraph("No ingest or sync runs yet.")

    page.heading("Pipeline runs")
    if runs:
        page.figure(
            runs_figure(runs),
            caption=f"Runs of the last {days} days: durations (failures as red crosses) and outcomes per day.",
        )
        page.table(
            [
                {
                    "run": r.id,
                    "kind": r.kind,
                    "source": short_source(r.source, 60),
                    "status": r.status,
                    "started": r.started_at,
                    "duration (s)": r.duration_s,
                    "error": r.error,
                }
                for r in reversed(runs[-20:])
            ]
        )
    else:
        page.paragraph(f"No runs in the last {days} days.")

    if models:
        page.heading("Models")
        page.figure(models_figure(models), caption="Validation metrics of each registered model version.")
    return page


def write_report(store: MetadataStore, out: Path, *, settings: Settings, **kwargs: Any) -> Path:
    return build_report(store, settings=settings, **kwargs).write(out)
