"""The monitoring check: drift statuses, freshness SLOs and run records in, alerts out.

One `Monitor.check()` looks at everything once and makes the open alerts match what it sees:

| alert kind  | key              | raised when                                  | resolved when            |
|-------------|------------------|----------------------------------------------|--------------------------|
| `drift`     | `stream/feature` | PSI status is "alert" (warning)              | status back to "ok"      |
| `freshness` | source           | the source breaches its freshness SLO        | fresh again (or no SLO)  |
| `run_failed`| source           | a run failed (critical) / was interrupted    | a later run succeeds     |
| `run_stuck` | source           | a run is 'running' past the stuck threshold  | it ends, or a later run succeeds |

A drift status of "warn" keeps an open drift alert open (hysteresis) and opens none.
The `loopline monitor check` command and the API's background thread both call `check`;
what thresholds apply comes from `monitoring_config.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Self

import httpx
from pydantic import BaseModel

from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.monitoring.actions import ActionDeps, build_actions
from shared.monitoring.alert_store import Alert, AlertStore
from shared.monitoring.alerts import AlertManager
from shared.monitoring.clock import Clock, resolve_now
from shared.monitoring.drift import DriftMonitor
from shared.monitoring.freshness import UtcDateTime, freshness
from shared.monitoring.monitoring_config import (
    DriftThresholds,
    MonitoringConfig,
    load_monitoring_config,
)
from shared.monitoring.pipelines import run_problems
from shared.monitoring.webhooks import webhook_sinks

log = logging.getLogger(__name__)

DriftStatuses = Callable[[], Sequence[Any]]


class CheckReport(BaseModel):
    checked_at: UtcDateTime
    raised: list[Alert]
    resolved: list[Alert]
    open: list[Alert]


def drift_statuses(store: MetadataStore, thresholds: DriftThresholds, clock: Clock = time.time) -> list:
    """`DriftMonitor(store).status()` judged by the configured thresholds: every monitored feature."""
    return list(DriftMonitor(store, clock=clock, warn=thresholds.warn, alert=thresholds.alert).status())


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


class Monitor:
    """The configured checks and the alert manager they feed (webhooks, actions included)."""

    def __init__(
        self,
        store: MetadataStore,
        config: MonitoringConfig,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], object] = time.sleep,
        clock: Clock = time.time,
        drift: DriftStatuses | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=config.webhooks.timeout_s)
        self.drift = drift or (lambda: drift_statuses(store, config.drift, clock))
        self.manager = AlertManager(
            store,
            sinks=webhook_sinks(config.webhooks, client=self.client, sleep=sleep),
            actions=build_actions(config.actions, ActionDeps(alerts=AlertStore(store))),
            clock=clock,
        )

    @classmethod
    def from_settings(cls, settings: Settings, store: MetadataStore, **kwargs: Any) -> Monitor:
        return cls(store, load_monitoring_config(settings), **kwargs)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, now: datetime | float | None = None) -> CheckReport:
        """Run every rule once; open alerts for what is wrong, resolve what cleared."""
        now = resolve_now(now, self.clock)
        raised: list[Alert] = []
        resolved: list[Alert] = []

        def raise_(kind: str, key: str, severity: str, message: str, details: dict) -> None:
            alert = self.manager.raise_alert(kind, key, severity, message, details)  # type: ignore[arg-type]
            if alert is not None:
                raised.append(alert)

        def settle(kind: str, still_wrong: set[str], clearable: Callable[[str], bool] = lambda _k: True) -> None:
            for alert in self.manager.open_alerts(kind):
                if alert.key not in still_wrong and clearable(alert.key):
                    done = self.manager.resolve(kind, alert.key)
                    if done is not None:
                        resolved.append(done)

        # freshness SLOs
        stale = set()
        for f in freshness(self.store, self.config.freshness, now=now):
            if not f.breached:
                continue
            stale.add(f.source)
            when = (
                f"was last refreshed {_hours(f.age_s)} ago"
                if f.age_s is not None
                else "has never been refreshed successfully"
            )
            raise_(
                "freshness",
                f.source,
                "warning",
                f"source {f.source} {when} (SLO {(f.slo_s or 0) / 3600:g} h)",
                f.model_dump(mode="json"),
            )
        settle("freshness", stale)

        # pipeline runs
        by_problem: dict[str, set[str]] = {"failed": set(), "stuck": set()}
        for p in run_problems(self.store, self.config.runs, now=now):
            by_problem[p.problem].add(p.source)
            details = {**p.run.model_dump(mode="json"), "runs_affected": p.runs_affected}
            raise_(f"run_{p.problem}", p.source, p.severity, p.message, details)
        settle("run_failed", by_problem["failed"])
        settle("run_stuck", by_problem["stuck"])

        # drift
        alerting, ok = set(), set()
        for st in self.drift():
            key = f"{st.stream}/{st.feature}"
            if st.status == "ok":
                ok.add(key)
            elif st.status == "alert":
                alerting.add(key)
                raise_(
                    "drift",
                    key,
                    "warning",
                    f"drift on {key}: PSI {st.psi:.3f} ≥ {self.config.drift.alert:g} "
                    f"(reference n={st.reference_n}, current n={st.current_n})",
                    {**drift_status_dict(st), "warn": self.config.drift.warn, "alert": self.config.drift.alert},
                )
        settle("drift", alerting, clearable=lambda key: key in ok)

        still_open = self.manager.open_alerts()
        log.info("monitoring check: %d raised, %d resolved, %d open", len(raised), len(resolved), len(still_open))
        return CheckReport(checked_at=now, raised=raised, resolved=resolved, open=still_open)


def drift_status_dict(status: Any) -> dict:
    if isinstance(status, BaseModel):
        return status.model_dump(mode="json")
    return {k: getattr(status, k, None) for k in ("stream", "feature", "psi", "status", "reference_n", "current_n")}
