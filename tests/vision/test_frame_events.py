"""Frame announcements from the real NATS JetStream: stored exactly as an HTTP upload stores them,
duplicates counted once (also after a crash between the store and the ack), refused ones on the
dead-letter subject and in the metadata store, and consumed inside the served vision plugin."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
from fake_central import DEVICE, FLEET, TOKEN, real_device_api
from nats_server import read_dead_letters

from shared.auth import Device, DeviceRegistry
from shared.config import Settings
from shared.ingestion.jetstream import FRAMES, JetStreamConsumer
from shared.metrics import ServiceMetrics
from shared.objectstore import LocalObjectStore
from vision import api as api_module
from vision.frame_events import INCOMING, FrameEvents, frame_consumer, publish_frames, report


def image(kind: str = "jpg", level: int = 128, w: int = 64, h: int = 48) -> bytes:
    ok, buf = cv2.imencode(f".{kind}", np.full((h, w, 3), level, np.uint8))
    assert ok
    return buf.tobytes()


def meta(frame_id: str, device: str = DEVICE) -> dict:
    return {"device_id": device, "frame_id": frame_id, "reason": "uncertain", "predictions": []}


def inline(frame_id: str, data: bytes, device: str = DEVICE) -> dict:
    return {"meta": meta(frame_id, device), "image_b64": base64.b64encode(data).decode()}


class Central:
    """vision.api attached to a frame folder, an incoming folder and a registry of one device."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(home=tmp_path / "home")
        self.metrics = ServiceMetrics(enabled=True)
        ctx = SimpleNamespace(
            settings=self.settings,
            metrics=self.metrics,
            devices=DeviceRegistry([Device(id=DEVICE, fleet=FLEET, token=TOKEN)]),
            services={},
        )
        self.frames_dir = tmp_path / "frames"
        self.incoming = LocalObjectStore(tmp_path / "incoming")
        self.api = api_module.attach(ctx, frames=LocalObjectStore(self.frames_dir), models=None)

    def consumer(self, connection, topology, store=None) -> JetStreamConsumer:  # noqa: ANN001
        return frame_consumer(
            self.api,
            self.settings,
            url=connection.url,
            topology=topology,
            incoming=self.incoming,
            dead_letters=store,
            nak_delay_s=0.2,
        )

    def received(self) -> float:
        labels = {"device": DEVICE, "fleet": FLEET, "reason": "uncertain"}
        return self.metrics.registry.get_sample_value("loopline_frames_received_total", labels) or 0.0

    def files(self) -> dict[str, bytes]:
        return {p.relative_to(self.frames_dir).as_posix(): p.read_bytes() for p in self.frames_dir.rglob("*.*")}


def test_announced_frames_are_stored_as_an_upload_stores_them(connection, topology, tmp_path: Path) -> None:
    jpg, png = image("jpg", 90), image("png", 200, w=40, h=30)
    central = Central(tmp_path / "stream")
    central.incoming.put(f"{DEVICE}/big-one.png", png)
    publish_frames(
        connection,
        [
            (DEVICE, inline("frame-0001", jpg)),
            (DEVICE, {"meta": meta("frame-0002"), "image_key": f"{DEVICE}/big-one.png"}),
            (DEVICE, inline("frame-0001", jpg)),  # a gateway's retry
        ],
        topology=topology,
    )
    consumer = central.consumer(connection, topology)
    consumer.drain()
    out = report(consumer)
    assert (out["stored"], out["duplicates"], out["acked"], out["dead_lettered"]) == (2, 1, 3, 0)
    assert central.received() == 2  # the retry counted once
    assert not central.incoming.exists(f"{DEVICE}/big-one.png")  # the claim check is cashed

    # The same frames sent over HTTP by the device itself: the same files, byte for byte.
    uploaded_dir = tmp_path / "http-frames"
    with real_device_api(uploaded_dir) as (url, _):
        for frame_id, data, kind in (("frame-0001", jpg, "jpeg"), ("frame-0002", png, "png")):
            resp = httpx.post(
                f"{url}/v1/devices/frames",
                headers={"Authorization": f"Bearer {TOKEN}"},
                files={"image": (f"f.{kind}", data, f"image/{kind}")},
                data={"meta": json.dumps(meta(frame_id))},
                timeout=60,
            )
            assert resp.status_code == 201, resp.text
    uploaded = {p.relative_to(uploaded_dir).as_posix(): p.read_bytes() for p in uploaded_dir.rglob("*.*")}
    assert central.files() == uploaded
    record = json.loads(uploaded[f"{DEVICE}/frame-0002.json"])
    assert (record["fleet"], record["image"], record["width"], record["height"]) == (
        FLEET,
        f"{DEVICE}/frame-0002.png",
        40,
        30,
    )


def test_refused_announcements_are_dead_lettered_with_field_and_reason(
    connection, topology, tmp_path: Path, sqlite_store
) -> None:
    central = Central(tmp_path)
    jpg = image("jpg", 50)
    central.incoming.put("other-cam/x.png", image("png"))
    central.incoming.put(f"{DEVICE}/garbled.png", b"\x89PNG but nothing after")
    publish_frames(
        connection,
        [
            (DEVICE, inline("frame-good-1", jpg)),
            ("ghost-cam", inline("frame-ghost-1", jpg, device="ghost-cam")),
            (DEVICE, inline("frame-other-1", jpg, device="other-cam")),
            (DEVICE, inline("frame-text-01", b"hello, not an image")),
            (DEVICE, {"meta": meta("frame-b64-001"), "image_b64": "***"}),
            (DEVICE, inline("frame-good-1", image("jpg", 51))),  # another image under a stored id
            (DEVICE, {"meta": meta("frame-key-001"), "image_key": "other-cam/x.png"}),
            (DEVICE, {"meta": meta("frame-garbled"), "image_key": f"{DEVICE}/garbled.png"}),
            (DEVICE, inline("short", jpg)),
        ],
        topology=topology,
    )
    consumer = central.consumer(connection, topology, store=sqlite_store)
    consumer.drain()
    out = report(consumer)
    assert (out["stored"], out["acked"], out["dead_lettered"]) == (1, 1, 8)

    dlq = read_dead_letters(connection, topology)
    fields = {json.loads(m["data"])["meta"]["frame_id"]: m["headers"]["Loopline-Field"] for m in dlq}
    assert fields == {
        "frame-ghost-1": "meta.device_id",
        "frame-other-1": "meta.device_id",
        "frame-text-01": "image_b64",
        "frame-b64-001": "image_b64",  # not base64
        "frame-good-1": "meta.frame_id",
        "frame-key-001": "image_key",
        "frame-garbled": "image_key",
        "short": "meta.frame_id",
    }
    reasons = {json.loads(m["data"])["meta"]["frame_id"]: m["headers"]["Loopline-Reason"] for m in dlq}
    assert "not registered" in reasons["frame-ghost-1"]
    assert reasons["frame-text-01"] == "frame must be a JPEG or PNG image"
    assert "already stored with different content" in reasons["frame-good-1"]
    assert "not valid base64" in reasons["frame-b64-001"]
    assert {m["subject"] for m in dlq} == {
        topology.dlq_subject(topology.subject(FRAMES, DEVICE)),
        topology.dlq_subject(topology.subject(FRAMES, "ghost-cam")),
    }
    letters = sqlite_store.dead_letters()
    assert sorted(d.path for d in letters) == sorted(fields)  # recorded under the frame id, schema failures too
    assert {d.source for d in letters} == {f"frames:{DEVICE}", "frames:ghost-cam"}
    assert any("field 'meta.frame_id'" in d.reason for d in letters)
    assert set(central.files()) == {f"{DEVICE}/frame-good-1.jpg", f"{DEVICE}/frame-good-1.json"}
    assert central.incoming.exists("other-cam/x.png")  # not this device's to take
    assert not central.incoming.exists(f"{DEVICE}/garbled.png")  # refused for good: not left behind


def test_a_crash_between_store_and_ack_leaves_one_frame_counted_once(connection, topology, tmp_path: Path) -> None:
    central = Central(tmp_path)
    central.incoming.put(f"{DEVICE}/f.jpg", image("jpg", 77))
    publish_frames(
        connection, [(DEVICE, {"meta": meta("frame-crash-1"), "image_key": f"{DEVICE}/f.jpg"})], topology=topology
    )
    consumer = central.consumer(connection, topology)
    events = consumer.handler
    assert isinstance(events, FrameEvents)

    def crashing(batch):  # noqa: ANN001, ANN202
        result = events(batch)
        if batch[0].attempt == 1:
            raise RuntimeError("process crashed after storing, before acknowledging")
        return result

    consumer.handler = crashing
    stats = consumer.drain()
    assert (stats.acked, stats.retried, stats.dead_lettered) == (1, 1, 0)
    assert (events.totals.stored, events.totals.duplicates) == (1, 1)
    assert central.received() == 1
    assert set(central.files()) == {f"{DEVICE}/frame-crash-1.jpg", f"{DEVICE}/frame-crash-1.json"}


def test_the_served_vision_plugin_consumes_announcements_while_it_runs(connection, topology, tmp_path: Path) -> None:
    from shared.context import AppContext

    settings = Settings(home=tmp_path / "home", nats_url=connection.url, nats_prefix=topology.prefix)
    ctx = AppContext.build(settings, devices=DeviceRegistry([Device(id=DEVICE, fleet=FLEET, token=TOKEN)]))
    try:
        plugin = api_module.plugin(ctx)
        plugin.start()
        big = image("png", 10, w=80, h=60)
        ctx.objects.scoped(INCOMING).put(f"{DEVICE}/served.png", big)
        publish_frames(
            connection,
            [(DEVICE, {"meta": meta("frame-served-1"), "image_key": f"{DEVICE}/served.png"})],
            topology=topology,
        )
        frames = ctx.objects.scoped("frames")
        deadline = time.monotonic() + 20
        while not frames.exists(f"{DEVICE}/frame-served-1.json") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert frames.get(f"{DEVICE}/frame-served-1.png") == big
        assert plugin.ready() == {"devices": 1, "frame_events": "consuming"}
        t0 = time.monotonic()
        plugin.stop()
        plugin.close()
        assert time.monotonic() - t0 < 5
    finally:
        ctx.close()


def test_consume_frames_drains_and_prints_the_counts_as_json(connection, topology, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from vision.frame_cli import consume_frames

    home = tmp_path / "cli-home"
    home.mkdir()
    (home / "devices.yaml").write_text(f"devices:\n  - {{id: {DEVICE}, fleet: {FLEET}, token: {TOKEN}}}\n")
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    monkeypatch.setenv("LOOPLINE_NATS_PREFIX", topology.prefix)
    publish_frames(
        connection,
        [(DEVICE, inline("frame-cli-001", image("jpg"))), (DEVICE, {"meta": meta("frame-cli-002")})],
        topology=topology,
    )
    result = CliRunner().invoke(consume_frames, ["--url", connection.url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["received"], out["stored"], out["dead_lettered"]) == (2, 1, 1)
    assert out["dead_letters"][0]["field"] == "image_key"
    assert (home / "frames" / DEVICE / "frame-cli-001.json").exists()
