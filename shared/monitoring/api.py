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

from fastapi import APIRouter, Depends, HTTPException, Request

from shared.auth import Principal
from shared.metadata.store import MetadataStore
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.rules import CheckReport, Monitor
from shared.monitoring.status import monitoring_status
from shared.server import ApiPlugin, AppContext

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


def plugin(
    ctx: AppContext,
    *,
    store: MetadataStore | None = None,
    monitor: Monitor | None = None,
    interval_s: float | None = None,
) -> ApiPlugin:
    """Entry point of the `loopline.api` group; `store`, `monitor`, `interval_s` override for tests."""
    settings = ctx.settings
    owns_store = store is None
    if store is None:
        settings.ensure_home()
        store = MetadataStore(settings.resolved_database_url)
    owns_monitor = monitor is None
    stopping = threading.Event()
    mon = monitor or Monitor.from_settings(settings, store, sleep=stopping.wait)
    alerts = AlertStore(store)
    check_lock = threading.Lock()

    def run_check() -> CheckReport:
        with check_lock:
            return mon.check()

    def admin(request: Request) -> Principal:
        who = ctx.authenticate(request)
        if not who.admin:
            raise HTTPException(403, detail=f"user '{who.name}' is not an admin; monitoring is for admins")
        return who

    router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"])

    @router.get("/status", summary="Drift per stream and feature, freshness, recent runs, open alerts (admins).")
    def status(who: Principal = Depends(admin)) -> dict:
        return monitoring_status(store, settings=settings, config=mon.config)

    @router.post("/check", response_model=CheckReport, summary="Run the monitoring rules now (admins).")
    def check(who: Principal = Depends(admin)) -> CheckReport:
        log.info("user %s ran the monitoring checks", who.name)
        return run_check()

    every = settings.monitor_interval_s if interval_s is None else interval_s
    periodic = PeriodicCheck(run_check, every, stop=stopping).start() if every > 0 else None
    if periodic:
        log.info("monitoring checks run every %.0fs", every)

    def ready() -> dict:
        return {"open_alerts": len(alerts.open_alerts()), "background_checks": bool(periodic and periodic.running)}

    def close() -> None:
        stopping.set()
        if periodic:
            periodic.stop()
        if owns_monitor:
            mon.close()
        if owns_store:
            store.close()

    return ApiPlugin(name="monitoring", router=router, ready=ready, close=close)
