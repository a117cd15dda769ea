"""Frame drift from device to verdict: devices count frame quality, central judges each fleet.

A device's `Metrics` counts every frame's quality and predictions over fixed bins; the counts
ride along with frame uploads; central adds what grew to the fleet's stream, freezes a
reference for the production version once enough has arrived, and judges later windows.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.metrics import Metrics
from edge.quality import QUALITY_EDGES, FixedHistograms, frame_quality
from edge.types import Detection
from shared.auth import Device, DeviceRegistry, KeyRegistry
from shared.config import Settings
from shared.metadata import MetadataStore
from shared.monitoring.drift import DriftMonitor
from shared.monitoring.histograms import Histogram
from shared.monitoring.psi import (
    DEFAULT_ALERT,
    DEFAULT_WARN,
    compare_histograms,
    psi_status,
)
from shared.server import create_app
from vision.api import FleetDrift
from vision.datasets.synth import CLASSES, Shift, render_plate
from vision.registry import ModelVersion

CAM1, CAM2 = "token-cam-01-aaaaaaaaaaaa", "token-cam-02-bbbbbbbbbbbb"
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_950_000_000.0

    def __call__(self) -> float:
        return self.t


class Promotions:
    """The registry's answer to "which version is in production for this fleet" (all this API asks)."""

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = versions

    def production(self, fleet: str | None = None) -> ModelVersion | None:
        v = self.versions.get(fleet or "")
        return ModelVersion(version=v, run_id="run", source="models:/x") if v else None


def watch_plates(metrics: Metrics, rng: np.random.Generator, frames: int, shift: Shift | None = None) -> None:
    """What a device does per frame, with a perfect detector: predictions and quality into the metrics."""
    for _ in range(frames):
        img, boxes = render_plate(rng, 48, shift or Shift())
        dets = [Detection(b.cls, CLASSES[b.cls], 0.9, (b.x1, b.y1, b.x2, b.y2)) for b in boxes]
        metrics.observe_frame(0.01, dets)
        metrics.observe_quality(frame_quality(img))


def upload(
    client: TestClient, token: str, device: str, metrics: Metrics | dict, captured_at: float | str | None = None
) -> None:
    """A frame upload carrying `metrics` (a device's, or a snapshot it took when it kept the frame)."""
    _, jpg = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    snapshot = metrics.snapshot() if isinstance(metrics, Metrics) else metrics
    meta = {"device_id": device, "frame_id": uuid.uuid4().hex, "reason": "random", "metrics": snapshot}
    if captured_at is not None:
        meta["captured_at"] = captured_at
    r = client.post(
        "/v1/devices/frames",
        files={"image": ("f.jpg", jpg.tobytes(), "image/jpeg")},
        data={"meta": json.dumps(meta)},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201, r.text


@pytest.fixture
def central(tmp_path: Path):
    import vision.api

    clock = Clock()
    store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
    monitor = DriftMonitor(store, clock=clock)  # defaults: reference from 500 frames, windows of 200
    devices = DeviceRegistry(
        [Device(id="cam-01", fleet="line-1", token=CAM1), Device(id="cam-02", fleet="line-2", token=CAM2)]
    )
    registry = Promotions({"line-1": "3", "line-2": "3"})
    app = create_app(
        Settings(home=tmp_path / "home"),
        plugins=[lambda ctx: vision.api.plugin(ctx, registry=registry, drift=monitor)],
        keys=KeyRegistry([]),
        devices=devices,
        metrics=False,
    )
    with TestClient(app) as client:
        yield client, monitor, clock
    store.close()


def test_a_brightness_shift_on_one_line_alerts_and_the_other_line_stays_quiet(central) -> None:
    client, monitor, clock = central
    cam1, cam2 = Metrics(), Metrics()
    watch_plates(cam1, np.random.default_rng(1), 500)
    watch_plates(cam2, np.random.default_rng(2), 500)
    upload(client, CAM1, "cam-01", cam1)  # the first uploads under version 3 ask for a reference
    upload(client, CAM2, "cam-02", cam2)
    statuses = monitor.status()  # … which freezes it from the 500 frames each device counted
    assert {s.reference_label for s in statuses} == {"3"} and {s.status for s in statuses} == {"no_data"}
    assert {s.stream for s in statuses} == {"vision:line-1", "vision:line-2"}
    features = {s.feature for s in statuses}
    assert set(QUALITY_EDGES) | {"max_score", "detections", "class"} == features

    clock.t += HOUR  # an hour later the lights on line 1 are brighter
    watch_plates(cam1, np.random.default_rng(3), 200, Shift(brightness=30))
    watch_plates(cam2, np.random.default_rng(4), 200)
    upload(client, CAM1, "cam-01", cam1)
    upload(client, CAM2, "cam-02", cam2)
    upload(client, CAM2, "cam-02", cam2)  # a second upload with no new frames adds nothing
    by_key = {(s.stream, s.feature): s for s in monitor.status()}
    line1 = by_key[("vision:line-1", "brightness")]
    assert line1.status == "alert" and line1.current_n == 200
    assert all(s.status != "alert" for (stream, _), s in by_key.items() if stream == "vision:line-2")
    assert by_key[("vision:line-2", "brightness")].current_n == 200
    assert by_key[("vision:line-1", "class")].status != "alert"  # the defects did not change


def test_a_promotion_moves_the_reference_to_the_new_version(tmp_path: Path) -> None:
    clock = Clock()
    store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
    monitor = DriftMonitor(store, clock=clock, min_reference=100, min_current=50)
    versions = {"line-1": "3"}
    feed = FleetDrift(monitor, versions.get, recheck_s=0)
    device = Metrics()
    watch_plates(device, np.random.default_rng(5), 120)
    feed.feed("cam-01", "line-1", device.snapshot())
    monitor.status()
    assert monitor.reference_label("vision:line-1") == "3"
    versions["line-1"] = "4"  # promoted
    clock.t += HOUR
    watch_plates(device, np.random.default_rng(6), 60)
    feed.feed("cam-01", "line-1", device.snapshot())
    assert monitor.reference_label("vision:line-1") == "4"  # requested, not frozen yet: 60 < 100
    assert {s.reference_label for s in monitor.status()} == {"3"}
    watch_plates(device, np.random.default_rng(7), 60)
    feed.feed("cam-01", "line-1", device.snapshot())
    assert {s.reference_label for s in monitor.status()} == {"4"}
    store.close()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def hour_counts(monitor: DriftMonitor, feature: str = "brightness") -> dict[float, float]:
    """Values of a feature counted per hour bucket of line 1, keyed by hours before the clock's hour."""
    now = monitor.bucket_of(monitor.now()).timestamp()
    buckets = monitor.drift_store.buckets(stream="vision:line-1", feature=feature)
    return {(now - b.start.timestamp()) / HOUR: b.n for b in buckets}


def test_counts_land_in_the_hour_the_frames_were_captured_not_the_hour_they_arrived(central) -> None:
    """A device offline for hours uploads its backlog at once: each frame's counts are those it
    was kept with, and they belong to the hour it was captured in."""
    client, monitor, clock = central
    cam, rng = Metrics(), np.random.default_rng(8)
    kept = []  # (snapshot taken when the frame was kept, when)
    for frames, hours_ago in ((30, 3), (10, 2), (10, 1)):
        watch_plates(cam, rng, frames)
        kept.append((cam.snapshot(), clock.t - hours_ago * HOUR))
    (three, t3), (two, t2), (one, t1) = kept
    upload(client, CAM1, "cam-01", three, iso(t3))  # ISO 8601, as devices send it
    upload(client, CAM1, "cam-01", one, t1)  # epoch seconds; the frame of two hours ago was retried later
    assert hour_counts(monitor) == {3.0: 30, 1.0: 20}
    classes = hour_counts(monitor, "class")  # defects seen, a categorical feature
    assert sum(classes.values()) > 0
    upload(client, CAM1, "cam-01", two, iso(t2))  # it arrives now: its counts are in the later ones already
    assert hour_counts(monitor) == {3.0: 30, 1.0: 20} and hour_counts(monitor, "class") == classes
    watch_plates(cam, rng, 5)
    upload(client, CAM1, "cam-01", cam, iso(clock.t + 5 * HOUR))  # a device clock ahead: counted now
    assert hour_counts(monitor) == {3.0: 30, 1.0: 20, 0.0: 5}  # from the latest totals on, none counted twice


def test_frames_without_a_capture_time_are_counted_when_they_arrive(central) -> None:
    client, monitor, _ = central
    cam = Metrics()
    watch_plates(cam, np.random.default_rng(9), 7)
    upload(client, CAM1, "cam-01", cam)
    upload(client, CAM1, "cam-01", cam, "yesterday-ish")
    assert hour_counts(monitor) == {0.0: 7}


def test_malformed_drift_counts_are_ignored_not_fatal(tmp_path: Path, caplog) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")
    feed = FleetDrift(DriftMonitor(store), lambda fleet: None)
    bad = {"drift": {"epoch": "e", "histograms": {"brightness": {"edges": [1, 2], "counts": [1]}}}}
    assert feed.feed("cam-01", "line-1", bad) == 0
    assert "ignored" in caplog.text
    assert feed.feed("cam-01", "line-1", {"drift": {"histograms": {"Bad Name!": {}}}}) == 0
    assert feed.feed("cam-01", "line-1", {}) == 0
    store.close()


# --- false alarms ----------------------------------------------------------------------------
def camera_frames(rng: np.random.Generator, n: int, brightness: float = 0.0) -> np.ndarray:
    """Small frames whose brightness, contrast and tint vary from frame to frame, as a camera's do."""
    base = rng.uniform(110, 160, (n, 1, 1, 1))
    contrast = rng.uniform(0.7, 1.3, (n, 1, 1, 1))
    tint = rng.uniform(-8, 8, (n, 1, 1, 3))
    texture = rng.normal(0, 10, (n, 16, 16, 1))
    return np.clip(base + tint + texture * contrast + brightness, 0, 255).astype(np.uint8)


def device_counts(rng: np.random.Generator, n: int, brightness: float = 0.0) -> dict[str, Histogram]:
    counts = FixedHistograms(QUALITY_EDGES)
    for img in camera_frames(rng, n, brightness):
        counts.add(frame_quality(img))
    return {k: Histogram.from_json(v) for k, v in counts.to_json()["histograms"].items()}


def verdicts(seeds: range, brightness: float, *, reference_n: int = 500, current_n: int = 200) -> list[dict[str, str]]:
    """Per seed: a fresh reference and one current window, judged as `DriftMonitor.status` does
    (reference: fine device bins merged into ten equal-mass groups; current rebinned onto them)."""
    out = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        ref, cur = device_counts(rng, reference_n), device_counts(rng, current_n, brightness)
        out.append(
            {
                f: psi_status(compare_histograms(ref[f].coarsen(10), cur[f]).psi, DEFAULT_WARN, DEFAULT_ALERT)
                for f in ref
            }
        )
    return out


def test_unshifted_windows_rarely_alert_and_shifted_ones_always_do(record_property) -> None:
    """200 seeds at the smallest windows the monitor judges (500 reference, 200 current frames)."""
    calm = verdicts(range(200), brightness=0.0)
    checks = [level for v in calm for level in v.values()]
    alerts = sum(level == "alert" for level in checks)
    windows_alerting = sum("alert" in v.values() for v in calm)
    record_property("false_alarm_feature_checks", f"{alerts}/{len(checks)}")
    record_property("false_alarm_windows", f"{windows_alerting}/{len(calm)}")
    record_property("warn_windows", f"{sum('warn' in v.values() for v in calm)}/{len(calm)}")
    assert windows_alerting <= 2, f"{windows_alerting} of 200 unshifted windows alerted"
    shifted = verdicts(range(1000, 1020), brightness=15.0)
    assert all(v["brightness"] == "alert" for v in shifted)
