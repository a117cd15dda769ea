"""Alert delivery to webhooks: one JSON POST per alert event, retried with backoff.

Where the URLs come from (see `monitoring_config.py`): `webhooks.urls` in the monitoring
YAML (`$LOOPLINE_HOME/monitoring.yaml`, or `LOOPLINE_MONITORING_FILE`) plus the
comma-separated `LOOPLINE_ALERT_WEBHOOKS`. The body is

    {"kind", "key", "severity", "message", "details", "raised_at", "status", "count"}

(`status` is "open" when raised and "resolved" when it clears). Connection errors, timeouts,
408, 429 and 5xx answers are retried `attempts` times in all, waiting `backoff_s`, then
twice that, and so on; other 4xx answers are not retried (the receiver refused the payload).
The HTTP client and the sleep are injected so tests run against a real local receiver
without waiting. A delivery that fails for good is logged, never raised: a dead receiver
must not stop the checks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
from pydantic import BaseModel, Field

from shared.monitoring.alert_store import Alert

log = logging.getLogger(__name__)

RETRIED_STATUS = frozenset({408, 425, 429})


class WebhookConfig(BaseModel):
    """The `webhooks` section of the monitoring YAML."""

    urls: list[str] = Field(default_factory=list, description="Receivers of every alert event.")
    attempts: int = Field(4, ge=1, le=10, description="Tries per delivery, the first included.")
    backoff_s: float = Field(1.0, ge=0, description="Wait before the 2nd try; doubles after each.")
    timeout_s: float = Field(5.0, gt=0)


def alert_payload(alert: Alert) -> dict:
    """The JSON body receivers get for an alert (raised or resolved)."""
    return {
        "kind": alert.kind,
        "key": alert.key,
        "severity": alert.severity,
        "message": alert.message,
        "details": alert.details,
        "raised_at": alert.raised_at.isoformat(),
        "status": alert.status,
        "count": alert.count,
    }


class WebhookSink:
    """Posts alerts to one URL, retrying transient failures with exponential backoff."""

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client,
        attempts: int = 4,
        backoff_s: float = 1.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.url = url
        self.client = client
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r})"

    def deliver(self, alert: Alert) -> bool:
        """POST the alert; True once the receiver accepted it (2xx), False after giving up."""
        body = alert_payload(alert)
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    if attempt > 1:
                        log.info("webhook %s accepted alert %s/%s on try %d", self.url, alert.kind, alert.key, attempt)
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRIED_STATUS:
                    log.error(
                        "webhook %s refused alert %s/%s with %s: %s (not retried; check the receiver's URL and auth)",
                        self.url,
                        alert.kind,
                        alert.key,
                        problem,
                        response.text[:200],
                    )
                    return False
            if attempt < self.attempts:
                delay = self.backoff_s * 2 ** (attempt - 1)
                log.warning("webhook %s: %s on try %d; retrying in %.1fs", self.url, problem, attempt, delay)
                self.sleep(delay)
        log.error(
            "webhook %s: alert %s/%s not delivered after %d tries (%s)",
            self.url,
            alert.kind,
            alert.key,
            self.attempts,
            problem,
        )
        return False


def webhook_sinks(
    config: WebhookConfig, *, client: httpx.Client, sleep: Callable[[float], object] = time.sleep
) -> list[WebhookSink]:
    return [
        WebhookSink(url, client=client, attempts=config.attempts, backoff_s=config.backoff_s, sleep=sleep)
        for url in config.urls
    ]
