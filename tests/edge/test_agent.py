"""The device loop end to end against a local central: frames selected, stored, delivered, models followed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from fake_central import (
    DEVICE,
    FLEET,
    TOKEN,
    FakeCentral,
    FakeClock,
    mean_model,
    real_device_api,
    yolo_like_model,
)

from edge.agent import DeviceAgent, agent
from edge.metrics import Metrics
from edge.outbox import Outbox
from edge.selection import FrameSelector, load_rules
from edge.types import Detection
from edge.updater import ModelUpdater, UpdateStatus
from edge.uploader import Uploader

pytest.importorskip("onnx", reason="the tiny test models are built with onnx (vision extra)")

EPOCH = 1_700_000_000.0  # where the agent tests' clocks start


# --- a detector over the mean model ------------------------------------------------------
class MeanDetector:
    """A detector on onnxruntime over the mean model: one box whose score is the frame's brightness."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        x = image_bgr.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        score = float(self.session.run(None, {self.input: x})[0].ravel()[0])
        h, w = image_bgr.shape[:2]
        return [Detection(0, "scratch", min(score, 1.0), (0.0, 0.0, float(w), float(h)))] if score > 0.05 else []


def blank_frame_loader(path: Path) -> None:
    MeanDetector(path).detect(np.zeros((32, 32, 3), np.uint8))


def frame(brightness: float, h: int = 48, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), round(brightness * 255), np.uint8)


# --- a central in miniature: model manifest + download + frame uploads ------------------
@pytest.fixture
def central():
    with FakeCentral(names=["scratch"]) as c:
        yield c


def uncertain_selector(clock=None) -> FrameSelector:
    rules = load_rules([{"type": "close_to_threshold", "name": "uncertain", "threshold": 0.25, "delta": 0.1}])
    return FrameSelector(rules, clock=clock or FakeClock(EPOCH))


def build(home: Path, url: str, source, *, clock=None, metrics: Metrics | None = None) -> DeviceAgent:
    import time

    clock = clock or time.time
    metrics = metrics or Metrics()
    outbox = Outbox(home / "outbox", clock=clock)
    uploader = Uploader(
        outbox, central=url, token=TOKEN, device_id=DEVICE, metrics_snapshot=metrics.snapshot, clock=clock, timeout=5
    )
    updater = ModelUpdater(home / "models", central=url, token=TOKEN, fleet=FLEET, loader=blank_frame_loader, timeout=5)
    return DeviceAgent(
        MeanDetector,
        source,
        uncertain_selector(clock),
        outbox,
        uploader,
        updater,
        metrics,
        clock=clock,
        upload_interval=0.05,
        update_interval=60,
        drain_timeout=5,
    )


def frames(*levels: float) -> list[tuple[str, np.ndarray]]:
    return [(f"f{i}", frame(b)) for i, b in enumerate(levels)]


# --- tests ------------------------------------------------------------------------------
def test_a_fresh_device_fetches_its_model_and_ships_the_uncertain_frames(tmp_path: Path, central: FakeCentral) -> None:
    central.publish("1", mean_model(1.0))
    device = build(tmp_path / "home", central.url, frames(0.3, 0.8, 0.3, 0.9, 0.28, 0.0))
    summary = device.run()
    assert (summary.frames, summary.selected, summary.delivered, summary.pending, summary.errors) == (6, 3, 3, 0, 0)
    assert summary.model_version == "1"
    assert len(central.stored) == 3 and len(set(central.stored)) == 3
    metas = [central.frames[fid]["meta"] for fid in central.stored]
    assert {m["reason"] for m in metas} == {"uncertain"} and {m["model_version"] for m in metas} == {"1"}
    assert {m["device_id"] for m in metas} == {DEVICE}
    assert sorted(round(m["predictions"][0]["score"], 2) for m in metas) == [0.28, 0.3, 0.3]
    assert metas[0]["predictions"][0] == {
        "cls": 0,
        "name": "scratch",
        "score": metas[0]["predictions"][0]["score"],
        "box": [0.0, 0.0, 64.0, 48.0],
    }
    assert metas[0]["captured_at"].endswith("+00:00") and metas[0]["metrics"]["frames"] >= 1
    image = cv2.imdecode(np.frombuffer(central.frames[central.stored[0]]["image"]["data"], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3) and abs(int(image.mean()) - 76) <= 2
    snap = device.metrics.snapshot()
    assert snap["frames"] == 6 and snap["selected"] == {"uncertain": 3} and snap["model_version"] == "1"
    assert snap["counters"]["uploads"]["delivered"] == 3


def test_frames_wait_out_an_outage_and_are_delivered_once_after_a_restart(tmp_path: Path, central: FakeCentral) -> None:
    home, clock = tmp_path / "home", FakeClock(EPOCH)
    central.publish("1", mean_model(1.0))
    build(home, central.url, [], clock=clock).run()  # installs the model
    central.down()
    summary = build(home, central.url, frames(0.3, 0.32, 0.9, 0.2), clock=clock).run()
    assert (summary.frames, summary.selected, summary.delivered, summary.pending) == (4, 3, 0, 3)
    assert summary.model_version == "1"  # ran on the model on disk, central unreachable

    central.up()
    clock.now += 3600  # past every frame's retry time
    after = build(home, central.url, [], clock=clock).run()
    assert (after.delivered, after.pending) == (3, 0)
    assert len(central.stored) == 3 and len(set(central.stored)) == 3


def test_a_model_failing_at_run_time_is_rolled_back_and_not_reinstalled(tmp_path: Path, central: FakeCentral) -> None:
    home = tmp_path / "home"
    central.publish("1", mean_model(1.0))
    build(home, central.url, []).run()
    # v2 accepts only 32x32 input: it passes the blank-frame test, then fails on the camera's 48x64 frames
    central.publish("2", mean_model(1.0, side=32))
    metrics = Metrics()
    device = build(home, central.url, frames(0.3, 0.3, 0.3, 0.3, 0.8), metrics=metrics)
    assert device.updater.check().status is UpdateStatus.UPDATED
    summary = device.run()
    assert summary.errors == 3 and summary.frames == 5  # failure_limit=3, then back on v1
    assert summary.model_version == "1" and device.updater.current().version == "1"
    assert summary.selected == 1 and summary.delivered == 1
    counters = metrics.snapshot()["counters"]
    assert counters["detector_errors"][""] == 3 and counters["model_rollbacks"][""] == 1
    assert device.updater.check().status is UpdateStatus.SKIPPED
    assert (
        ModelUpdater(home / "models", central=central.url, token=TOKEN, fleet=FLEET, loader=blank_frame_loader)
        .current()
        .version
        == "1"
    )


def test_a_model_the_detector_cannot_load_is_not_retried_every_frame(tmp_path: Path, central: FakeCentral) -> None:
    central.publish("1", mean_model(1.0))
    device = build(tmp_path / "home", central.url, frames(0.3, 0.3, 0.3, 0.3))
    calls = []

    def broken_factory(path: Path) -> MeanDetector:
        calls.append(path)
        raise RuntimeError("this device's runtime lacks an operator")

    device.detector_factory = broken_factory
    summary = device.run()
    assert (summary.frames, summary.errors, summary.selected, summary.model_version) == (4, 4, 0, None)
    assert len(calls) == 1
    assert device.metrics.snapshot()["counters"]["detector_errors"] == {"load": 1}


def test_update_polls_are_spaced_by_the_interval_while_uploads_keep_going(tmp_path: Path, central: FakeCentral) -> None:
    import time

    central.publish("1", mean_model(1.0))

    def slow_source():  # a camera: ~0.4 s of frames
        for i in range(8):
            time.sleep(0.05)
            yield f"f{i}", frame(0.3 if i % 2 else 0.9)

    device = build(tmp_path / "home", central.url, slow_source())
    device.upload_interval, device.update_interval = 0.02, 30.0
    summary = device.run()
    counters = device.metrics.snapshot()["counters"]
    assert counters["model_checks"] == {"up_to_date": 1}  # once at start, then not before 30 s
    assert summary.delivered == 4 and counters["uploads"]["delivered"] == 4


def test_stopping_a_device_that_has_no_model_yet(tmp_path: Path, central: FakeCentral) -> None:
    stop = threading.Event()
    device = build(tmp_path / "home", central.url, frames(0.3))
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    summary = device.run(stop)
    timer.join()
    assert (summary.frames, summary.model_version) == (0, None)


def test_the_agent_command_runs_the_real_detector_end_to_end(tmp_path: Path, central: FakeCentral) -> None:
    pytest.importorskip("edge.detector")
    pytest.importorskip("edge.sources")
    central.publish("5", yolo_like_model())
    images = tmp_path / "images"
    images.mkdir()
    for i, level in enumerate([0.3, 0.8, 0.31, 0.9]):
        cv2.imwrite(str(images / f"{i}.png"), frame(level, 64, 64) + np.uint8(i))  # distinct frames
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {"rules": [{"type": "close_to_threshold", "name": "uncertain", "threshold": 0.25}], "dedup_distance": None}
        )
    )
    args = [
        "--central",
        central.url,
        "--token",
        TOKEN,
        "--fleet",
        FLEET,
        "--source",
        str(images),
        "--home",
        str(tmp_path / "home"),
        "--rules",
        str(rules),
        "--metrics-port",
        "0",
    ]
    first = CliRunner().invoke(agent, args)
    assert first.exit_code != 0 and "pass --device-id" in first.output
    result = CliRunner().invoke(agent, [*args, "--device-id", DEVICE])
    assert result.exit_code == 0, result.output
    assert (
        f"device {DEVICE}: 4 frames, 2 selected, 2 delivered, 0 waiting in the outbox, 0 errors, model 5"
        in result.output
    )
    expected = [(round(0.3 * 255) + 0) / 255, (round(0.31 * 255) + 2) / 255]  # frames 0 and 2: grey level / 255
    got = sorted(central.frames[f]["meta"]["predictions"][0]["score"] for f in central.stored)
    assert got == pytest.approx(expected, abs=1e-3)
    again = CliRunner().invoke(agent, args)  # the id is remembered
    assert again.exit_code == 0 and f"device {DEVICE}:" in again.output


def test_the_agent_command_samples_a_lighting_shift_against_the_models_reference(
    tmp_path: Path, central: FakeCentral
) -> None:
    """The model ships its training frames' quality; central boosts sampling while the fleet drifts."""
    pytest.importorskip("edge.detector")
    pytest.importorskip("edge.sources")
    from edge.quality import QUALITY_EDGES, FixedHistograms, frame_quality
    from vision.datasets.synth import Shift, render_plate

    rng = np.random.default_rng(0)
    training = FixedHistograms(QUALITY_EDGES)
    for _ in range(200):
        training.add(frame_quality(render_plate(rng, 64)[0]))
    manifest = central.publish("5", yolo_like_model())
    manifest["reference"] = training.to_json()["histograms"]
    manifest["sampling"] = {"boost": 4.0, "reason": "drift alert open on vision:line-1: brightness"}
    images = tmp_path / "images"
    images.mkdir()
    for i in range(24):  # the lamp failed: washed-out, flat plates
        cv2.imwrite(str(images / f"plate-{i:03d}.png"), render_plate(rng, 64, Shift(brightness=70, contrast=0.6))[0])
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"type": "input_drift", "name": "drift"}], "dedup_distance": None}))
    args = ["--central", central.url, "--token", TOKEN, "--fleet", FLEET, "--source", str(images)]
    args += ["--home", str(tmp_path / "home"), "--rules", str(rules), "--device-id", DEVICE, "--metrics-port", "0"]
    result = CliRunner().invoke(agent, args)
    assert result.exit_code == 0, result.output
    assert f"device {DEVICE}: 24 frames, 5 selected, 5 delivered" in result.output  # 25% x 4 from frame 20 on
    metas = sorted((central.frames[f]["meta"] for f in central.stored), key=lambda m: m["source_frame"])
    assert [m["source_frame"] for m in metas] == [f"plate-{i:03d}.png" for i in range(19, 24)]
    assert {m["reason"] for m in metas} == {"drift"}
    assert [m["metrics"]["frames"] for m in metas] == [20, 21, 22, 23, 24]  # counts as at capture, not upload


def test_a_bad_rules_file_is_reported_before_anything_runs(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"type": "close_to_treshold", "name": "u"}]))
    result = CliRunner().invoke(
        agent,
        [
            "--central",
            "http://127.0.0.1:9",
            "--token",
            TOKEN,
            "--fleet",
            FLEET,
            "--source",
            str(tmp_path),
            "--home",
            str(tmp_path / "h"),
            "--rules",
            str(rules),
            "--device-id",
            DEVICE,
            "--metrics-port",
            "0",
        ],
    )
    assert result.exit_code != 0
    assert "unknown type 'close_to_treshold'" in result.output


# --- the real central API ------------------------------------------------------------------
def test_contract_with_the_central_device_api(tmp_path: Path) -> None:
    """Updater and uploader against vision.api's router (FastAPI in tests only): manifest, download, frames."""
    model = tmp_path / "model.fp32.onnx"
    model.write_bytes(mean_model(1.0))

    class Models:
        def current(self, fleet: str):
            from vision.api import ModelInfo

            info = ModelInfo(
                version="4",
                sha256=hashlib.sha256(model.read_bytes()).hexdigest(),
                size=model.stat().st_size,
                precision="fp32",
                url="/v1/devices/model/download?version=4&precision=fp32",
                names=["scratch"],
                imgsz=32,
            )
            return info, model

    with real_device_api(tmp_path / "central-frames", Models()) as (url, store):
        summary = build(tmp_path / "home", url, frames(0.3, 0.9, 0.33)).run()
    assert (summary.model_version, summary.selected, summary.delivered, summary.pending) == ("4", 2, 2, 0)
    records = [json.loads(store.get(k)) for k in store.list(DEVICE) if k.endswith(".json")]
    assert len(records) == 2
    assert {(r["reason"], r["model_version"], r["fleet"], r["width"], r["height"]) for r in records} == {
        ("uncertain", "4", FLEET, 64, 48)
    }


# --- one agent per home ----------------------------------------------------------------------
def agent_command(central: FakeCentral, home: Path, source: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge.cli",
        "agent",
        "--central",
        central.url,
        "--token",
        TOKEN,
        "--fleet",
        FLEET,
        "--source",
        str(source),
        "--home",
        str(home),
        "--device-id",
        DEVICE,
        "--metrics-port",
        "0",
    ]


def test_a_second_agent_on_the_same_home_exits_at_once_naming_the_first(tmp_path: Path, central: FakeCentral) -> None:
    """Two agents on one home upload each other's outbox twice: the second one must not start."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), frame(0.3, 64, 64) + np.uint8(i))
    home = tmp_path / "home"
    command = agent_command(central, home, images)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not central.requests:  # central has no model yet: the first agent asks, and waits
            assert first.poll() is None and time.monotonic() < deadline, "the first agent did not start"
            time.sleep(0.05)
        second = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        assert str(home) in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr
        assert first.poll() is None  # the first one goes on
    finally:
        first.kill()  # SIGKILL: no clean-up runs, and the OS drops the lock with the process
        first.wait()
    central.publish("5", yolo_like_model())
    after = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
    assert f"device {DEVICE}: 3 frames" in after.stdout


def test_the_home_lock_is_held_until_its_holder_lets_go(tmp_path: Path) -> None:
    from edge.agent import lock_home

    held = lock_home(tmp_path)
    with pytest.raises(click.ClickException, match=rf"{tmp_path}.*pid {os.getpid()}"):
        lock_home(tmp_path)
    held.close()
    lock_home(tmp_path).close()
