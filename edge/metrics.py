"""Device metrics: latency, throughput, confidences, selections, and a /metrics endpoint.

Recording a frame costs a few microseconds (a lock, a bisect, a ring-buffer write, one bin
per detection); percentiles and frames/s are computed only when read. `snapshot()` is the
compact dict sent with every upload as `metrics`; `prometheus()` is the text exposition
format, served by `serve(port)` on a stdlib HTTP server. It does not push anywhere.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from edge.quality import FixedHistograms
from edge.types import Detection

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BINS = 10  # [0, 0.1], (0.1, 0.2], ..., (0.9, 1.0]
PREFIX = "loopline_edge_"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Metrics:
    """Thread-safe counters for one device; `window` recent frames feed p50/p95 and frames/s."""

    def __init__(self, *, window: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._window = window
        self._lat = np.zeros(window, dtype=np.float64)
        self._times = np.zeros(window, dtype=np.float64)
        self._frames = 0
        self._lat_sum = 0.0
        self._lat_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # last one: above every bound
        self._conf_bins = [0] * CONFIDENCE_BINS
        self._detections = 0
        self._conf_sum = 0.0
        self._selected: Counter[str] = Counter()
        self._counters: dict[str, Counter[str]] = {}
        self.model_version: str | None = None
        self._drift = FixedHistograms()  # quality and prediction features, for central's drift checks

    # --- recording -------------------------------------------------------------------
    def observe_frame(self, latency_s: float, detections: Sequence[Detection], now: float | None = None) -> None:
        """One processed frame: its inference latency and its detections' scores."""
        now = self._clock() if now is None else now
        b = bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)
        with self._lock:
            i = self._frames % self._window
            self._lat[i] = latency_s
            self._times[i] = now
            self._frames += 1
            self._lat_sum += latency_s
            self._lat_buckets[b] += 1
            for d in detections:  # bins are (lo, hi], like Prometheus' le; 0 goes to the first
                self._conf_bins[min(CONFIDENCE_BINS - 1, max(0, math.ceil(d.score * CONFIDENCE_BINS) - 1))] += 1
                self._conf_sum += d.score
            self._detections += len(detections)
            self._drift.add(
                {"max_score": max((d.score for d in detections), default=0.0), "detections": len(detections)}
            )
            self._drift.add_categories("class", [d.name for d in detections])

    def observe_quality(self, features: dict[str, float]) -> None:
        """One frame's quality features (edge.quality.frame_quality), counted over fixed bins."""
        with self._lock:
            self._drift.add(features)

    def record_selection(self, reason: str) -> None:
        with self._lock:
            self._selected[reason] += 1

    def count(self, name: str, kind: str = "", n: int = 1) -> None:
        """Bump counter `name` (e.g. "uploads", kind "delivered"); exported as <name>_total{kind=...}."""
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} must match {_NAME.pattern}")
        with self._lock:
            self._counters.setdefault(name, Counter())[kind] += n

    def set_model_version(self, version: str | None) -> None:
        self.model_version = version

    # --- reading ---------------------------------------------------------------------
    def _recent(self) -> tuple[np.ndarray, np.ndarray]:
        n = min(self._frames, self._window)
        return self._lat[:n].copy(), self._times[:n].copy()

    def snapshot(self) -> dict:
        """A compact JSON-ready view: sent with every upload as meta["metrics"]."""
        with self._lock:
            lat, times = self._recent()
            frames, lat_sum, buckets = self._frames, self._lat_sum, list(self._lat_buckets)
            conf, selected = list(self._conf_bins), dict(self._selected)
            drift = self._drift.to_json()
            counters = {k: dict(v) for k, v in self._counters.items()}
            detections = self._detections
        p50, p95 = (np.percentile(lat, [50, 95]) * 1000).tolist() if len(lat) else (None, None)
        span = float(times.max() - times.min()) if len(times) > 1 else 0.0
        return {
            "frames": frames,
            "detections": detections,
            "fps": round((len(times) - 1) / span, 2) if span > 0 else 0.0,
            "latency_ms": {
                "p50": None if p50 is None else round(p50, 3),
                "p95": None if p95 is None else round(p95, 3),
                "mean": round(lat_sum / frames * 1000, 3) if frames else None,
                "buckets_le_ms": [b * 1000 for b in LATENCY_BUCKETS_S] + ["+Inf"],
                "counts": buckets,
            },
            "confidence": {"bins": [round(i / CONFIDENCE_BINS, 2) for i in range(CONFIDENCE_BINS + 1)], "counts": conf},
            "selected": selected,
            "counters": counters,
            "model_version": self.model_version,
            "drift": drift,  # running totals over fixed bins; central adds what grew since the last upload
            "uptime_s": round(self._clock() - self._started, 1),
        }

    def prometheus(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        s = self.snapshot()
        lines: list[str] = []

        def metric(name: str, mtype: str, help_: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
            lines.append(f"# HELP {PREFIX}{name} {help_}")
            lines.append(f"# TYPE {PREFIX}{name} {mtype}")
            for suffix, labels, value in samples:
                lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                lines.append(
                    f"{PREFIX}{name}{suffix}{{{lab}}} {_num(value)}" if lab else f"{PREFIX}{name}{suffix} {_num(value)}"
                )

        lat = s["latency_ms"]
        cum = np.cumsum(lat["counts"]).tolist()
        with self._lock:
            lat_sum, conf_sum = self._lat_sum, self._conf_sum
        bounds = [_num(b) for b in LATENCY_BUCKETS_S] + ["+Inf"]
        metric(
            "inference_latency_seconds",
            "histogram",
            "Detector latency per frame.",
            [("_bucket", {"le": le}, c) for le, c in zip(bounds, cum)]
            + [("_sum", {}, lat_sum), ("_count", {}, s["frames"])],
        )
        metric(
            "inference_latency_quantile_seconds",
            "gauge",
            "Latency percentiles over the recent frames.",
            [("", {"quantile": q}, (lat[k] or 0.0) / 1000) for q, k in (("0.5", "p50"), ("0.95", "p95"))],
        )
        metric("frames_total", "counter", "Frames processed.", [("", {}, s["frames"])])
        metric("frames_per_second", "gauge", "Throughput over the recent frames.", [("", {}, s["fps"])])
        conf = np.cumsum(s["confidence"]["counts"]).tolist()
        edges = [_num(e) for e in s["confidence"]["bins"][1:-1]] + ["+Inf"]
        metric(
            "detection_confidence",
            "histogram",
            "Scores of the detections kept by the detector.",
            [("_bucket", {"le": le}, c) for le, c in zip(edges, conf)]
            + [("_sum", {}, conf_sum), ("_count", {}, s["detections"])],
        )
        metric(
            "selected_frames_total",
            "counter",
            "Frames selected for labeling, by rule.",
            [("", {"reason": r}, n) for r, n in sorted(s["selected"].items())],
        )
        for name, kinds in sorted(s["counters"].items()):
            metric(
                f"{name}_total",
                "counter",
                f"Count of {name.replace('_', ' ')}.",
                [("", {"kind": k} if k else {}, n) for k, n in sorted(kinds.items())],
            )
        if s["model_version"] is not None:
            metric(
                "model_info",
                "gauge",
                "The model in use (value is always 1).",
                [("", {"version": s["model_version"]}, 1)],
            )
        metric("uptime_seconds", "gauge", "Seconds since the metrics started.", [("", {}, s["uptime_s"])])
        return "\n".join(lines) + "\n"

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve GET /metrics on host:port (0: any free port) in a daemon thread."""
        return MetricsServer(self, host, port)


class MetricsServer:
    """A running /metrics endpoint; close() stops it."""

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = metrics.prometheus().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("metrics http: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics served at http://%s:%d/metrics", host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if isinstance(v, float) else str(v)
