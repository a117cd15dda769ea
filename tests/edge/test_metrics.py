"""Device metrics: right numbers in the snapshot, valid Prometheus text served over HTTP, cheap per frame."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import pytest

from edge.metrics import Metrics
from edge.types import Detection


def det(score: float) -> Detection:
    return Detection(cls=0, name="scratch", score=score, box=(0.0, 0.0, 1.0, 1.0))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def parse(text: str) -> dict[str, float]:
    """Sample lines as {'name{labels}': value}; every line must be a comment or a sample."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")), line
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def test_snapshot_has_latency_percentiles_fps_confidences_and_selections() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    for i in range(1, 101):  # 1..100 ms, one frame every 50 ms
        clock.now = i * 0.05
        m.observe_frame(i / 1000, [det(0.05), det(0.1), det(0.55), det(1.0)] if i == 1 else [det(0.95)])
    m.record_selection("uncertain")
    m.record_selection("uncertain")
    m.record_selection("random")
    m.count("uploads", "delivered", 3)
    m.set_model_version("7")
    s = m.snapshot()
    assert s["frames"] == 100 and s["detections"] == 103
    assert s["latency_ms"]["p50"] == pytest.approx(50.5)
    assert s["latency_ms"]["p95"] == pytest.approx(95.05)
    assert s["latency_ms"]["mean"] == pytest.approx(50.5)
    assert s["fps"] == pytest.approx(20.0)
    assert s["confidence"]["bins"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert s["confidence"]["counts"] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 100]
    assert s["selected"] == {"uncertain": 2, "random": 1}
    assert s["counters"] == {"uploads": {"delivered": 3}}
    assert s["model_version"] == "7"
    assert sum(s["latency_ms"]["counts"]) == 100


def test_percentiles_follow_the_recent_window() -> None:
    m = Metrics(window=10)
    for _ in range(50):
        m.observe_frame(0.5, [])
    for _ in range(10):
        m.observe_frame(0.002, [])
    s = m.snapshot()
    assert s["latency_ms"]["p95"] == pytest.approx(2.0)
    assert s["frames"] == 60


def test_an_idle_device_reports_zeros_not_errors() -> None:
    s = Metrics().snapshot()
    assert (s["frames"], s["fps"], s["latency_ms"]["p50"], s["selected"]) == (0, 0.0, None, {})
    assert "loopline_edge_frames_total 0" in Metrics().prometheus()


def test_prometheus_text_is_well_formed_and_consistent() -> None:
    m = Metrics()
    for ms in (0.5, 3, 3, 40, 4000):
        m.observe_frame(ms / 1000, [det(0.3)])
    m.record_selection('odd "reason"\\')
    m.set_model_version("v2")
    text = m.prometheus()
    samples = parse(text)
    name = "loopline_edge_inference_latency_seconds"
    assert f"# TYPE {name} histogram" in text
    buckets = [v for k, v in samples.items() if k.startswith(f"{name}_bucket")]
    assert buckets == sorted(buckets)  # cumulative
    assert samples[f'{name}_bucket{{le="0.001"}}'] == 1
    assert samples[f'{name}_bucket{{le="0.005"}}'] == 3
    assert samples[f'{name}_bucket{{le="2.5"}}'] == 4
    assert samples[f'{name}_bucket{{le="+Inf"}}'] == samples[f"{name}_count"] == 5
    assert samples[f"{name}_sum"] == pytest.approx(4.0465)
    assert samples['loopline_edge_detection_confidence_bucket{le="0.2"}'] == 0
    assert samples['loopline_edge_detection_confidence_bucket{le="0.3"}'] == 5
    assert samples["loopline_edge_frames_total"] == 5
    assert samples['loopline_edge_selected_frames_total{reason="odd \\"reason\\"\\\\"}'] == 1
    assert samples['loopline_edge_model_info{version="v2"}'] == 1
    assert text.endswith("\n")


def test_metrics_are_served_for_scraping() -> None:
    m = Metrics()
    m.observe_frame(0.01, [det(0.9)])
    server = m.serve(0)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert parse(resp.read().decode())["loopline_edge_frames_total"] == 1
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=5)
        assert err.value.code == 404
    finally:
        server.close()


def test_counts_are_exact_under_concurrent_recording() -> None:
    m = Metrics()

    def work() -> None:
        for _ in range(2000):
            m.observe_frame(0.001, [det(0.5)])
            m.count("uploads", "delivered")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = m.snapshot()
    assert s["frames"] == 8000 and s["detections"] == 8000 and s["counters"]["uploads"]["delivered"] == 8000


def test_counter_names_are_checked() -> None:
    with pytest.raises(ValueError, match="must match"):
        Metrics().count("Bad Name")


def test_recording_a_frame_is_cheap() -> None:
    """Generous bound (shared CI cores); typically a few microseconds."""
    m = Metrics()
    dets = [det(0.3), det(0.7), det(0.9)]
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        m.observe_frame(0.01, dets)
    per_frame_us = (time.perf_counter() - t0) / n * 1e6
    assert per_frame_us < 100, per_frame_us
