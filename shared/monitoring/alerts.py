"""Alerts: raised once per (kind, key) while open, logged, delivered, acted upon, resolved.

A check that still sees a problem calls `raise_alert` again every time; only the first call
opens the alert (logged at its severity, posted to every sink, its actions run), later ones
just count a sighting and refresh the message and details, so receivers are not flooded.
`resolve` closes it (kept in the table with `resolved_at`) and tells the sinks, so a
receiver sees the problem clear; the next occurrence opens a new alert.

Sinks are objects with `deliver(alert) -> bool` (see `webhooks.WebhookSink`); actions are
the configured reactions of `actions.py` (a drift alert on a vision stream asks for
retraining). A sink or action that fails is logged and never stops the others.
Configuration (webhook URLs, actions) is read by `monitoring_config.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from shared.metadata.store import MetadataStore
from shared.monitoring.actions import Action
from shared.monitoring.alert_store import Alert, AlertStore, Severity
from shared.monitoring.clock import Clock, resolve_now

log = logging.getLogger(__name__)

LOG_LEVEL: dict[str, int] = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class Sink(Protocol):
    def deliver(self, alert: Alert) -> bool: ...


class AlertManager:
    """Opens, de-duplicates and resolves alerts; tells the log and the sinks; runs actions."""

    def __init__(
        self,
        store: MetadataStore,
        *,
        sinks: Sequence[Sink] = (),
        actions: Sequence[Action] = (),
        clock: Clock = time.time,
    ) -> None:
        self.alerts = AlertStore(store)
        self.sinks = list(sinks)
        self.actions = list(actions)
        self.clock = clock

    def raise_alert(
        self, kind: str, key: str, severity: Severity, message: str, details: dict | None = None
    ) -> Alert | None:
        """Open the alert and notify; None when the same (kind, key) is already open."""
        alert, opened = self.alerts.open_or_touch(
            kind=kind,
            key=key,
            severity=severity,
            message=message,
            details=dict(details or {}),
            now=resolve_now(clock=self.clock),
        )
        if not opened:
            log.debug("alert %s/%s still open (seen %d times)", kind, key, alert.count)
            return None
        log.log(LOG_LEVEL[severity], "ALERT [%s] %s/%s: %s", severity, kind, key, message)
        self._deliver(alert)
        for action in self.actions:
            if action.applies_to(alert):
                try:
                    done = action(alert)
                except Exception:
                    log.exception("action %s for alert %s/%s failed", action.name, kind, key)
                    continue
                if done:
                    log.info("alert %s/%s: %s", kind, key, done)
        return alert

    def resolve(self, kind: str, key: str) -> Alert | None:
        """Close the open (kind, key) alert and notify; None when none was open."""
        alert = self.alerts.resolve(kind, key, resolve_now(clock=self.clock))
        if alert is not None:
            log.info("RESOLVED %s/%s (open since %s): %s", kind, key, alert.raised_at.isoformat(), alert.message)
            self._deliver(alert)
        return alert

    def open_alerts(self, kind: str | None = None) -> list[Alert]:
        return self.alerts.open_alerts(kind)

    def _deliver(self, alert: Alert) -> None:
        for sink in self.sinks:
            try:
                sink.deliver(alert)
            except Exception:
                log.exception("alert sink %r failed for %s/%s", sink, alert.kind, alert.key)
