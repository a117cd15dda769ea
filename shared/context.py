"""The composition root: what one loopline process builds once and hands to every plugin.

One settings object, one metadata store (one engine, one session factory), one drift
monitor, one alert store, one object store, the key and device registries, the metrics
of the app and its jobs (records plus the queue that carries them). Plugins and CLI
commands receive these; nothing opens its own engine. What this module does not do: know a
vertical (plugins add their own services to `services`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from shared.auth import DeviceRegistry, KeyRegistry
from shared.config import Settings
from shared.jobs.service import Jobs
from shared.metadata.store import MetadataStore
from shared.metrics import ServiceMetrics
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.drift import DriftMonitor
from shared.monitoring.monitoring_config import MonitoringConfig, load_monitoring_config
from shared.objectstore import ObjectStore, open_object_store

log = logging.getLogger(__name__)


WAITING_FOR = "waiting_for"


@dataclass
class ApiPlugin:
    """What a vertical mounts on the app, and how `/readyz` asks it whether it can take traffic.

    `ready()` returns the plugin's details for `/readyz` (counts, states) and raises when a
    store it needs does not answer (the service is then unready). A plugin still getting
    ready — a model loading in the background — lists what it waits for, one sentence each,
    under `waiting_for` (see `Warmup`); the service answers 503 until no plugin waits.
    """

    name: str
    router: APIRouter
    ready: Callable[[], dict] = lambda: {}
    close: Callable[[], None] = lambda: None
    max_body_bytes: int = 0  # the largest request body its routes take (uploads); the app refuses larger ones first
    start: Callable[[], None] = lambda: None  # the app starts serving: begin background work (warm-ups)
    stop: Callable[[], None] = lambda: None  # abandon long work at once (SIGTERM); close follows


class Warmup:
    """Work a plugin does in the background at start so that its first request is not slow.

    `start()` runs `fn` on a daemon thread and returns at once, so the service starts (and
    answers `/healthz`) while it runs. `waiting_for()` is what `ApiPlugin.ready` reports under
    `waiting_for`: `[what]` until `fn` returned, then `[]`. A failed try is logged and retried on
    the next readiness check, so the service stays unready instead of failing its first requests.
    """

    def __init__(self, what: str, fn: Callable[[], object], *, name: str = "loopline-warmup") -> None:
        self.what = what
        self._fn = fn
        self._name = name
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None

    def start(self) -> Warmup:
        with self._lock:
            if not self._done.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._failed = None
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            self._fn()
        except Exception as exc:
            self._failed = exc
            log.exception("%s failed; tried again on the next readiness check", self.what)
            return
        self._done.set()
        log.info("%s: done in %.1f s", self.what, time.perf_counter() - t0)

    def join(self, timeout: float | None = None) -> None:
        """Let a running try end (at shutdown: a thread left inside native code aborts the exit)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the work is done (tests, and callers that would rather wait than be refused)."""
        return self._done.wait(timeout)

    def waiting_for(self) -> list[str]:
        if self._done.is_set():
            return []
        failed = self._failed
        if failed is not None:
            self.start()
            return [f"{self.what} (the last try failed with {type(failed).__name__}; trying again)"]
        return [self.what]


@dataclass
class AppContext:
    settings: Settings
    keys: KeyRegistry
    devices: DeviceRegistry
    metadata: MetadataStore
    monitoring: MonitoringConfig
    drift: DriftMonitor
    alerts: AlertStore
    objects: ObjectStore
    metrics: ServiceMetrics
    jobs: Jobs = None  # type: ignore[assignment]  # built by `build` (it runs jobs with this context)
    local_token: str | None = None
    plugins: list[ApiPlugin] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)  # what each plugin's routes depend on, by plugin name
    _owns_metadata: bool = True

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        keys: KeyRegistry | None = None,
        devices: DeviceRegistry | None = None,
        metadata: MetadataStore | None = None,
        local_token: str | None = None,
        metrics: bool | None = None,
    ) -> AppContext:
        """Everything from settings; each keyword replaces one part (tests pass real local instances)."""
        settings.ensure_home()
        monitoring = load_monitoring_config(settings)  # a broken monitoring.yaml stops the start, naming the file
        store = metadata or MetadataStore(settings.resolved_database_url)
        ctx = cls(
            settings=settings,
            keys=keys if keys is not None else KeyRegistry.from_file(settings.resolved_api_keys_file),
            devices=devices if devices is not None else DeviceRegistry.from_file(settings.resolved_devices_file),
            metadata=store,
            monitoring=monitoring,
            drift=DriftMonitor(store, warn=monitoring.drift.warn, alert=monitoring.drift.alert),
            alerts=AlertStore(store),
            objects=open_object_store(settings),
            metrics=ServiceMetrics(enabled=False),
            local_token=local_token,
            _owns_metadata=metadata is None,
        )
        ctx.metrics = ServiceMetrics.for_context(ctx, enabled=metrics)
        ctx.jobs = Jobs.for_context(ctx)
        return ctx

    def start(self) -> None:
        """The app starts serving: plugins begin their background work; waiting jobs are sent on."""
        for plugin in self.plugins:
            plugin.start()
        self.jobs.start()

    def stop(self) -> None:
        """The service is shutting down: every plugin abandons its long work now (running jobs are given back)."""
        self.jobs.runner_stop()
        for plugin in self.plugins:
            try:
                plugin.stop()
            except Exception:
                log.exception("stopping plugin %s failed", plugin.name)

    def close(self) -> None:
        self.stop()
        self.jobs.stop()
        for plugin in self.plugins:
            try:
                plugin.close()
            except Exception:
                log.exception("closing plugin %s failed", plugin.name)
        if self._owns_metadata:
            self.metadata.close()
