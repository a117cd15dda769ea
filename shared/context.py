"""The composition root: what one loopline process builds once and hands to every plugin.

One settings object, one metadata store (one engine, one session factory), one drift
monitor, one alert store, one object store, the key and device registries and the metrics
of the app. Plugins and CLI commands receive these; nothing opens its own engine. What
this module does not do: know a vertical (plugins add their own services to `services`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter

from shared.auth import DeviceRegistry, KeyRegistry
from shared.config import Settings
from shared.metadata.store import MetadataStore
from shared.metrics import ServiceMetrics
from shared.monitoring.alert_store import AlertStore
from shared.monitoring.drift import DriftMonitor
from shared.objectstore import LocalObjectStore, ObjectStore

log = logging.getLogger(__name__)


@dataclass
class ApiPlugin:
    name: str
    router: APIRouter
    ready: Callable[[], dict] = lambda: {}
    close: Callable[[], None] = lambda: None
    stop: Callable[[], None] = lambda: None  # abandon long work at once (SIGTERM); close follows


@dataclass
class AppContext:
    settings: Settings
    keys: KeyRegistry
    devices: DeviceRegistry
    metadata: MetadataStore
    drift: DriftMonitor
    alerts: AlertStore
    objects: ObjectStore
    metrics: ServiceMetrics
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
        store = metadata or MetadataStore(settings.resolved_database_url)
        ctx = cls(
            settings=settings,
            keys=keys if keys is not None else KeyRegistry.from_file(settings.resolved_api_keys_file),
            devices=devices if devices is not None else DeviceRegistry.from_file(settings.resolved_devices_file),
            metadata=store,
            drift=DriftMonitor(store),
            alerts=AlertStore(store),
            objects=LocalObjectStore(settings.home),
            metrics=ServiceMetrics(enabled=False),
            local_token=local_token,
            _owns_metadata=metadata is None,
        )
        ctx.metrics = ServiceMetrics.for_context(ctx, enabled=metrics)
        return ctx

    def stop(self) -> None:
        """The service is shutting down: every plugin abandons its long work now."""
        for plugin in self.plugins:
            try:
                plugin.stop()
            except Exception:
                log.exception("stopping plugin %s failed", plugin.name)

    def close(self) -> None:
        self.stop()
        for plugin in self.plugins:
            try:
                plugin.close()
            except Exception:
                log.exception("closing plugin %s failed", plugin.name)
        if self._owns_metadata:
            self.metadata.close()
