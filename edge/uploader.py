"""Delivers outbox frames to the central service, retrying with backoff, losing nothing.

`POST {central}/v1/devices/frames` (multipart/form-data: `image` = the JPEG, `meta` = a JSON
string) with `Authorization: Bearer <device token>`. The central side is idempotent on
`frame_id`, so a frame whose acknowledgement got lost is simply sent again:

- 2xx (201 created, 200 already had it) -> acked, removed from the outbox;
- 408, 429, 5xx, connection errors, timeouts -> kept, retried later (exponential backoff
  with jitter, `Retry-After` honoured); the round stops so a down central is not hammered;
- 401/403 -> kept and retried: a bad token is the device's problem, not the frame's, and
  dead-lettering the whole backlog over a configuration mistake would throw it away;
- any other 4xx -> dead-lettered with the status and the server's message, never retried.

It does not decide what to send (edge.selection) nor store anything itself (edge.outbox).
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from http.client import HTTPException
from typing import Any

from edge.outbox import Outbox, OutboxItem

log = logging.getLogger(__name__)

FRAMES_PATH = "/v1/devices/frames"
_RETRY_4XX = {401, 403, 408, 429}


class Outcome(str, Enum):  # noqa: UP042 - StrEnum would change what str() and f-strings print
    DELIVERED = "delivered"  # 201
    DUPLICATE = "duplicate"  # 200: the central already had it
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter: half the delay fixed, half random, capped."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int, rng: random.Random) -> float:
        d = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return d / 2 + rng.uniform(0, d / 2)


@dataclass
class DrainReport:
    """What one drain() round did; `wait` is how long to wait before the next round."""

    delivered: int = 0
    duplicates: int = 0
    dead: int = 0
    retried: int = 0
    wait: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def acked(self) -> int:
        return self.delivered + self.duplicates


def encode_multipart(fields: list[tuple[str, bytes, str | None, str | None]]) -> tuple[bytes, str]:
    """multipart/form-data body and Content-Type for (name, data, filename, content_type) parts."""
    boundary = f"loopline-{uuid.uuid4().hex}"
    out = bytearray()
    for name, data, filename, ctype in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def direct_opener() -> urllib.request.OpenerDirector:
    """An opener that ignores *_proxy environment variables: devices talk to central directly."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Uploader:
    """Sends due outbox frames; clock, sleep, RNG and HTTP opener are passed in for tests.

    The agent stores each frame with the metrics snapshot of its capture time, which is sent
    as is (central buckets its drift counts by `captured_at`). `metrics_snapshot` (optional)
    is what frames stored without one (by older versions) send as meta["metrics"]; a frame kept
    by an earlier run of the agent (another drift `epoch`) is sent without its drift counts,
    since central follows one run's running totals per device and two runs' totals
    interleaved (a deferred frame after a restart) would be counted twice.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        central: str,
        token: str,
        device_id: str,
        metrics_snapshot: Callable[[], dict[str, Any]] | None = None,
        opener: urllib.request.OpenerDirector | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        backoff: Backoff = Backoff(),
        timeout: float = 10.0,
        batch: int = 20,
    ) -> None:
        self.outbox = outbox
        self.url = central.rstrip("/") + FRAMES_PATH
        self.device_id = device_id
        self._token = token
        self._metrics = metrics_snapshot
        self._opener = opener or direct_opener()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.backoff = backoff
        self.timeout = timeout
        self.batch = batch
        self.failures = 0  # consecutive failed rounds: drives the round-level backoff
        self.blocked_until = 0.0

    def drain(self, max_items: int | None = None) -> DrainReport:
        """One round: send due frames oldest first until none is due, one fails, or max_items."""
        report = DrainReport()
        now = self._clock()
        if now < self.blocked_until:
            report.wait = self.blocked_until - now
            return report
        sent = 0
        while max_items is None or sent < max_items:
            items = self.outbox.due(min(self.batch, max_items - sent) if max_items else self.batch, now)
            if not items:
                break
            for item in items:
                outcome, detail, retry_after = self._send(item)
                sent += 1
                if outcome is Outcome.RETRY:
                    self._retry_later(item, detail, retry_after, report)
                    return report
                if outcome is Outcome.DEAD:
                    self.outbox.dead_letter(item.frame_id, detail)
                    report.dead += 1
                    log.error("frame %s refused by central (%s); moved to dead letters", item.frame_id, detail)
                else:
                    self.outbox.ack(item.frame_id)
                    if outcome is Outcome.DUPLICATE:
                        report.duplicates += 1
                    else:
                        report.delivered += 1
            now = self._clock()
        if sent and self.failures:  # only an answered request proves central is back
            log.info("central reachable again after %d failed round(s)", self.failures)
            self.failures = 0
        return report

    def flush(self, *, max_rounds: int = 10) -> bool:
        """Drain until the outbox has nothing pending, sleeping out backoffs; True when empty."""
        for _ in range(max_rounds):
            report = self.drain()
            if not self.outbox.stats().pending:
                return True
            wait = report.wait
            if not report.retried and not wait:
                nxt = self.outbox.next_due_at()
                wait = max(0.0, (nxt or 0.0) - self._clock())
            self._sleep(wait)
        return not self.outbox.stats().pending

    def _retry_later(self, item: OutboxItem, detail: str, retry_after: float | None, report: DrainReport) -> None:
        now = self._clock()
        self.failures += 1
        round_wait = max(self.backoff.delay(self.failures, self._rng), retry_after or 0.0)
        frame_wait = max(self.backoff.delay(item.attempts + 1, self._rng), retry_after or 0.0)
        self.blocked_until = now + round_wait
        self.outbox.defer(item.frame_id, until=now + frame_wait, error=detail)
        report.retried += 1
        report.wait = round_wait
        report.errors.append(detail)
        log.warning(
            "upload of frame %s failed (%s); attempt %d, retrying in %.1fs, frames stay in the outbox",
            item.frame_id,
            detail,
            item.attempts + 1,
            round_wait,
        )

    def _send(self, item: OutboxItem) -> tuple[Outcome, str, float | None]:
        """POST one frame; (outcome, detail for logs and dead letters, Retry-After seconds)."""
        try:
            image = item.read()
        except FileNotFoundError:
            return Outcome.DEAD, "image file missing from the outbox", None
        meta = dict(item.meta)
        meta["device_id"] = self.device_id
        meta["frame_id"] = item.frame_id
        if self._metrics is not None:
            meta["metrics"] = _with_current_metrics(meta.get("metrics"), self._metrics())
        meta.setdefault("metrics", {})
        body, ctype = encode_multipart(
            [
                ("image", image, f"{item.frame_id}.jpg", "image/jpeg"),
                ("meta", json.dumps(meta, separators=(",", ":")).encode(), None, None),
            ]
        )
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": ctype, "Accept": "application/json"},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
            text = _body_text(exc)
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            detail = f"HTTP {status}: {text}" if text else f"HTTP {status}"
            if status in (401, 403):
                log.error("central rejected the device token (HTTP %d); check --token. Frames are kept.", status)
            if status in _RETRY_4XX or status >= 500 or status < 400:
                return Outcome.RETRY, detail, retry_after
            return Outcome.DEAD, detail, None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            return Outcome.RETRY, f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}", None
        if status == 200:
            return Outcome.DUPLICATE, "", None
        if 200 <= status < 300:
            return Outcome.DELIVERED, "", None
        return Outcome.RETRY, f"unexpected HTTP {status}", None


def _with_current_metrics(stored: Any, current: dict[str, Any]) -> dict[str, Any]:
    """The metrics to send with a stored frame: its own snapshot, the current one if it has none."""
    if not isinstance(stored, dict):
        return current
    kept_in = stored.get("drift", {}).get("epoch") if isinstance(stored.get("drift"), dict) else None
    now_in = current.get("drift", {}).get("epoch") if isinstance(current.get("drift"), dict) else None
    if kept_in is not None and now_in is not None and kept_in != now_in:
        return {k: v for k, v in stored.items() if k != "drift"}
    return stored


def _body_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read()[:500].decode("utf-8", "replace")
    except Exception:  # the body is only for the message
        return ""
    try:
        detail = json.loads(raw).get("detail")
        if detail:
            return str(detail)[:300]
    except (ValueError, AttributeError):
        pass
    return raw.strip()[:300]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: ignore it, our own backoff applies
