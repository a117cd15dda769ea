"""One JSON-ready picture of the system's health: drift, freshness, recent runs, open alerts.

What `loopline monitor status --json` prints and `GET /v1/monitoring/status` answers. It
only reads (running the rules is `rules.Monitor.check`), so asking for the status never
opens or resolves an alert.
"""

from __future__ import annotations

import time
from datetime import datetime

from pydantic import BaseModel

from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.monitoring.alert_store import Alert, AlertStore
from shared.monitoring.clock import Clock, resolve_now
from shared.monitoring.drift import DriftStatus
from shared.monitoring.freshness import SourceFreshness, UtcDateTime, freshness
from shared.monitoring.monitoring_config import MonitoringConfig, load_monitoring_config
from shared.monitoring.pipelines import RunRecord, recent_runs
from shared.monitoring.rules import drift_status_dict, drift_statuses


class FleetModel(BaseModel):
    """The model version a registry alias names: `production` for every fleet, `production-FLEET` for one."""

    alias: str
    fleet: str | None
    version: str


def fleet_models(settings: Settings) -> list[FleetModel]:
    """Each fleet's production version, from the registry's aliases ([] without a registry).

    Read straight from MLflow when a registry exists (`shared` never imports the vision package).
    """
    from shared.monitoring.report import registered_aliases

    out = []
    for alias, version in registered_aliases(settings).items():
        if alias == "production" or alias.startswith("production-"):
            fleet = alias.removeprefix("production-") if alias != "production" else None
            out.append(FleetModel(alias=alias, fleet=fleet, version=str(version)))
    return sorted(out, key=lambda m: m.alias)


class MonitoringStatus(BaseModel):
    """The shape of `monitoring_status`, for the API's schema: every time in UTC."""

    checked_at: UtcDateTime
    drift: list[DriftStatus]
    freshness: list[SourceFreshness]
    recent_runs: list[RunRecord]
    alerts: list[Alert]
    models: list[FleetModel] = []


def monitoring_status(
    store: MetadataStore,
    *,
    settings: Settings,
    now: datetime | float | None = None,
    config: MonitoringConfig | None = None,
    clock: Clock = time.time,
) -> dict:
    """{checked_at, drift, freshness, recent_runs, alerts, models}, every value JSON-serialisable."""
    config = config or load_monitoring_config(settings)
    now = resolve_now(now, clock)
    return {
        "checked_at": now.isoformat(),
        "drift": [drift_status_dict(s) for s in drift_statuses(store, config.drift, clock)],
        "freshness": [f.model_dump(mode="json") for f in freshness(store, config.freshness, now=now)],
        "recent_runs": [r.model_dump(mode="json") for r in recent_runs(store, limit=20, now=now)],
        "alerts": [a.model_dump(mode="json") for a in AlertStore(store).open_alerts()],
        "models": [m.model_dump() for m in fleet_models(settings)],
    }
