"""The monitoring API plugin: status and on-demand checks for admins, checks in the background.

`GET /v1/monitoring/status` answers what `loopline monitor status --json` prints;
`POST /v1/monitoring/check` runs the rules now. Both need an admin key: run records and
alerts name every source, whoever may read it. A daemon thread runs the rules every
`LOOPLINE_MONITOR_INTERVAL_S` seconds (default 300; 0 turns it off, as the tests do) and
stops when the app shuts down. The monitoring configuration is read once, at start, so a
broken `monitoring.yaml` stops the service with the file's error instead of failing later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends

from shared.auth import Principal
from shared.context import ApiPlugin, AppContext
from shared.dependencies import ADMIN_ONLY, app_context, require_admin
from shared.monitoring.rules import CheckReport, Monitor
from shared.monitoring.status import MonitoringStatus, monitoring_status

log = logging.getLogger(__name__)


class PeriodicCheck:
    """Calls `fn` every `interval_s` seconds on a daemon thread until `stop()`; errors are logged.

    `stop` may be shared with whatever `fn` waits on (the webhook backoff), so shutting down
    also cuts a retry wait short instead of sitting it out.
    """

    def __init__(
        self,
        fn: Callable[[], object],
        interval_s: float,
        *,
        stop: threading.Event | None = None,
        name: str = "loopline-monitor",
    ) -> None:
        self.fn = fn
        self.interval_s = interval_s
        self._stop = stop or threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> PeriodicCheck:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.fn()
            except Exception:
                log.exception("background monitoring check failed; next try in %.0fs", self.interval_s)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


@dataclass
class MonitoringApi:
    """What the monitoring routes depend on: the configured checks, run one at a time."""

    ctx: AppContext
    monitor: Monitor
    lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> CheckReport:
        with self.lock:
            return self.monitor.check()


def monitoring_api(ctx: AppContext = Depends(app_context)) -> MonitoringApi:
    return ctx.services["monitoring"]


router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"], responses=ADMIN_ONLY)


@router.get(
    "/status",
    response_model=MonitoringStatus,
    summary="Drift per stream and feature, freshness, recent runs, open alerts (admins).",
)
def status(who: Principal = Depends(require_admin), api: MonitoringApi = Depends(monitoring_api)) -> dict:
    return monitoring_status(api.ctx.metadata, settings=api.ctx.settings, config=api.monitor.config)


@router.post("/check", response_model=CheckReport, summary="Run the monitoring rules now (admins).")
def check(who: Principal = Depends(require_admin), api: MonitoringApi = Depends(monitoring_api)) -> CheckReport:
    log.info("user %s ran the monitoring checks", who.name)
    return api.check()


def plugin(ctx: AppContext, *, monitor: Monitor | None = None, interval_s: float | None = None) -> ApiPlugin:
    """Entry point of the `loopline.api` group; `monitor` and `interval_s` override for tests."""
    settings = ctx.settings
    stopping = threading.Event()
    mon = monitor or Monitor(ctx.metadata, ctx.monitoring, sleep=stopping.wait, drift=ctx.drift.status)
    api = ctx.services["monitoring"] = MonitoringApi(ctx, mon)
    every = settings.monitor_interval_s if interval_s is None else interval_s
    periodic = PeriodicCheck(api.check, every, stop=stopping).start() if every > 0 else None
    if periodic:
        log.info("monitoring checks run every %.0fs", every)

    def ready() -> dict:
        return {"open_alerts": len(ctx.alerts.open_alerts()), "background_checks": bool(periodic and periodic.running)}

    def close() -> None:
        stopping.set()
        if periodic:
            periodic.stop()
        if monitor is None:
            mon.close()

    return ApiPlugin(name="monitoring", router=router, ready=ready, stop=stopping.set, close=close)
