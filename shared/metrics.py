"""Prometheus metrics of the central service: the metric set, the request middleware, `/metrics`.

Each app gets its own `ServiceMetrics` with its own `CollectorRegistry` (no module-level
registry), so several apps in one process — tests, benchmarks — never share counters.
Verticals record what happened (answers, ingests, frames, downloads) through its methods;
drift PSI and source freshness are read from the monitoring store at scrape time.

It deliberately never labels anything with user input: routes are templates, devices are
registered ids, and device-supplied values (selection reason, model version) are checked
against a safe pattern and capped in number, the rest folded into "other".
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.auth import request_secret

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.context import AppContext
    from shared.metadata.store import MetadataStore
    from shared.monitoring.drift import DriftMonitor
    from shared.monitoring.freshness import FreshnessSLOs

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"  # a path no route knows: never the raw path, it is user input
OTHER = "other"
NONE = "none"
INGEST_OUTCOMES = ("added", "updated", "unchanged", "deleted", "failed")
ANSWER_MODES = ("extractive", "llm")
# Queries answer in tens of milliseconds extractively and in seconds with an LLM.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INGEST_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
_SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class _BoundedLabel:
    """Keeps a device-supplied label value only if it looks safe and the set is not full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        if value is None or value == "":
            return NONE
        text = str(value)
        if not _SAFE_LABEL.match(text):
            return OTHER
        with self._lock:
            if text in self._seen:
                return text
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(text)
            return text


class MonitoringCollector(Collector):
    """Drift PSI and source freshness, computed from the metadata store when scraped.

    A scrape never fails because of it: a monitoring module that is not installed, a table
    that does not exist yet or a store that cannot be reached is logged and skipped.
    """

    def __init__(
        self,
        store: Callable[[], MetadataStore],
        *,
        drift: Callable[[], DriftMonitor] | None = None,
        slos: Callable[[], FreshnessSLOs] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._drift_monitor = drift
        self._slos = slos
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at scrape time; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        psi = GaugeMetricFamily(
            "loopline_drift_psi",
            "Population stability index of a monitored feature, current window against its reference.",
            labels=["stream", "feature"],
        )
        age = GaugeMetricFamily(
            "loopline_source_freshness_age_seconds",
            "Seconds since the last successful ingest or sync of a source.",
            labels=["source"],
        )
        for fill in (self._drift, self._freshness):
            try:
                fill(psi, age)
            except ImportError as exc:
                log.debug("metrics: %s not available yet (%s)", fill.__name__, exc)
            except Exception as exc:  # noqa: BLE001 - a scrape must never fail on monitoring data
                log.warning(
                    "metrics: %s skipped in this scrape (%s: %s)", fill.__name__.lstrip("_"), type(exc).__name__, exc
                )
        yield psi
        yield age

    def _drift(self, psi: GaugeMetricFamily, _age: GaugeMetricFamily) -> None:
        from shared.monitoring.drift import DriftMonitor

        monitor = self._drift_monitor() if self._drift_monitor else DriftMonitor(self._store(), clock=self._clock)
        for s in monitor.status():
            if s.psi is not None:
                psi.add_metric([s.stream, s.feature], float(s.psi))

    def _freshness(self, _psi: GaugeMetricFamily, age: GaugeMetricFamily) -> None:
        from shared.monitoring.freshness import FreshnessSLOs, freshness

        slos = self._slos() if self._slos is not None else FreshnessSLOs()
        for f in freshness(self._store(), slos, now=self._clock()):
            if f.age_s is not None:
                age.add_metric([f.source], float(f.age_s))


class ServiceMetrics:
    """The metric objects of one app, in their own registry, and the ways to record them.

    With `enabled=False` every record call returns at once and nothing is exposed: the
    app is built without the middleware and without `/metrics` (used to measure overhead).
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        store: Callable[[], MetadataStore] | None = None,
        drift: Callable[[], DriftMonitor] | None = None,
        owns_store: bool = True,
        slos: Callable[[], FreshnessSLOs] | None = None,
        clock: Callable[[], float] = time.time,
        max_label_values: int = 50,
    ) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.request_duration = Histogram(
            "loopline_http_request_duration_seconds",
            "Time from request to the end of the response, by method, route template and status.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.answers = Counter(
            "loopline_answers", "Answers given (abstentions included), by mode.", ["mode"], registry=r
        )
        self.abstentions = Counter(
            "loopline_abstentions", "Answers that abstained: nothing relevant enough to cite.", registry=r
        )
        self.ingest_runs = Counter(
            "loopline_ingest_runs",
            "Ingest runs started through the API, by kind and final status.",
            ["kind", "status"],
            registry=r,
        )
        self.ingest_documents = Counter(
            "loopline_ingest_documents",
            "Documents handled by ingest runs, by kind and outcome.",
            ["kind", "outcome"],
            registry=r,
        )
        self.ingest_duration = Histogram(
            "loopline_ingest_duration_seconds",
            "Duration of ingest runs, by kind.",
            ["kind"],
            buckets=INGEST_BUCKETS,
            registry=r,
        )
        self.frames_received = Counter(
            "loopline_frames_received",
            "Frames stored from devices, by device, fleet and selection reason.",
            ["device", "fleet", "reason"],
            registry=r,
        )
        self.model_version_in_use = Gauge(
            "loopline_model_version_in_use",
            "1 for the model version last reported by a device of the fleet.",
            ["fleet", "version"],
            registry=r,
        )
        self.model_downloads = Counter(
            "loopline_model_downloads",
            "Model files downloaded by devices, by fleet and version.",
            ["fleet", "version"],
            registry=r,
        )
        for mode in ANSWER_MODES:  # series exist from the start, so rate() sees the first answer
            self.answers.labels(mode=mode)
        self._reason = _BoundedLabel(max_label_values)
        self._version = _BoundedLabel(max_label_values)
        self._in_use: dict[str, str] = {}
        self._in_use_lock = threading.Lock()
        self._store_factory = store
        self._owns_store = owns_store
        self._store: MetadataStore | None = None
        self._store_lock = threading.Lock()
        if store is not None:
            self.registry.register(MonitoringCollector(self._monitoring_store, drift=drift, slos=slos, clock=clock))

    @classmethod
    def for_context(cls, ctx: AppContext, *, enabled: bool | None = None) -> ServiceMetrics:
        """The metrics of a central service: drift and freshness from the root's store and drift monitor."""
        settings = ctx.settings

        def configured_slos() -> FreshnessSLOs:  # re-read per scrape: an edited monitoring.yaml applies at once
            from shared.monitoring.monitoring_config import load_monitoring_config

            return load_monitoring_config(settings).freshness

        return cls(
            enabled=settings.metrics_enabled if enabled is None else enabled,
            store=lambda: ctx.metadata,
            drift=lambda: ctx.drift,
            owns_store=False,
            slos=configured_slos,
        )

    def _monitoring_store(self) -> MetadataStore:
        with self._store_lock:  # opened on the first scrape, not at startup: the app starts without a database
            if self._store is None:
                assert self._store_factory is not None
                self._store = self._store_factory()
            return self._store

    def close(self) -> None:
        with self._store_lock:
            if self._store is not None and self._owns_store:
                self._store.close()
            self._store = None

    # --- recording -------------------------------------------------------------------
    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        if self.enabled:
            self.request_duration.labels(method=method, route=route, status=str(status)).observe(seconds)

    def record_answer(self, mode: str, abstained: bool) -> None:
        if not self.enabled:
            return
        self.answers.labels(mode=mode if mode in ANSWER_MODES else OTHER).inc()
        if abstained:
            self.abstentions.inc()

    def record_ingest(self, kind: str, status: str, counts: Mapping[str, int], seconds: float) -> None:
        """One finished ingest run; `counts` holds the run's added/updated/… document counts."""
        if not self.enabled:
            return
        self.ingest_runs.labels(kind=kind, status=status).inc()
        for outcome in INGEST_OUTCOMES:
            n = int(counts.get(outcome, 0) or 0)
            child = self.ingest_documents.labels(kind=kind, outcome=outcome)
            if n:
                child.inc(n)
        self.ingest_duration.labels(kind=kind).observe(max(seconds, 0.0))

    def record_frame(self, device: str, fleet: str, reason: str | None, model_version: str | None) -> None:
        """A frame stored from a device; its `model_version` becomes its fleet's version in use."""
        if not self.enabled:
            return
        self.frames_received.labels(device=device, fleet=fleet, reason=self._reason(reason)).inc()
        if model_version:
            self.set_model_in_use(fleet, model_version)

    def set_model_in_use(self, fleet: str, version: str) -> None:
        if not self.enabled:
            return
        label = self._version(version)
        with self._in_use_lock:
            previous = self._in_use.get(fleet)
            if previous == label:
                return
            if previous is not None:
                self.model_version_in_use.remove(fleet, previous)  # one series per fleet: the current one
            self.model_version_in_use.labels(fleet=fleet, version=label).set(1)
            self._in_use[fleet] = label

    def record_download(self, fleet: str, version: str) -> None:
        if self.enabled:
            self.model_downloads.labels(fleet=fleet, version=self._version(version)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's template (`/v1/documents/{doc_id}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Pure ASGI middleware timing each HTTP request to the end of its response body.

    Pure ASGI rather than BaseHTTPMiddleware: it adds no task per request and does not
    buffer streamed answers. The route is read after routing has put it in the scope.
    """

    def __init__(self, app: Callable[..., Any], metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope["method"], route_template(scope), status, time.perf_counter() - start)


def metrics_router(metrics: ServiceMetrics, settings: Settings) -> APIRouter:
    """`GET /metrics` in the Prometheus text format.

    Unauthenticated unless `LOOPLINE_METRICS_TOKEN` is set (then `Authorization: Bearer
    TOKEN`, as Prometheus' `authorization` scrape option sends it). Without a token,
    expose the port only to the scraper's network: the page names devices and fleets.
    """
    router = APIRouter(tags=["ops"])
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    @router.get(
        "/metrics",
        summary="Prometheus metrics of this service.",
        response_class=Response,
        responses={
            200: {
                "description": "The Prometheus text format.",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            },
            401: {"description": "LOOPLINE_METRICS_TOKEN is set and the request does not send it as a bearer token."},
        },
    )
    def scrape(request: Request) -> Response:
        if token is not None:
            given = request_secret(request.headers) or ""
            if not hmac.compare_digest(given.encode(), token.encode()):
                raise HTTPException(
                    401,
                    detail="metrics are protected: send 'Authorization: Bearer LOOPLINE_METRICS_TOKEN'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
