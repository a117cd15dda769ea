"""The uploader against a real HTTP server on 127.0.0.1: outages lose nothing, nothing arrives twice."""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from fake_central import (
    DEVICE,
    TOKEN,
    FakeCentral,
    FakeClock,
    parse_multipart,
    real_device_api,
)

from edge.outbox import Outbox
from edge.uploader import Backoff, Uploader, encode_multipart

META_FIELDS = {"device_id", "frame_id", "captured_at", "model_version", "reason", "predictions", "metrics"}


@pytest.fixture
def central():
    with FakeCentral() as c:
        yield c


def jpeg(seed: int = 0) -> bytes:
    img = np.full((24, 32, 3), seed * 20 % 255, np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def frame_meta(i: int) -> dict:
    return {
        "captured_at": "2025-01-01T00:00:00.000+00:00",
        "model_version": "3",
        "reason": "uncertain",
        "predictions": [{"cls": 0, "name": "scratch", "score": 0.3, "box": [1.0, 2.0, 3.0, 4.0]}],
        "i": i,
    }


def make(
    tmp_path: Path, central_url: str, clock: FakeClock, outbox: type[Outbox] = Outbox, **kw
) -> tuple[Outbox, Uploader]:
    box = outbox(tmp_path / "ob", clock=clock)
    up = Uploader(
        box,
        central=central_url,
        token=kw.pop("token", TOKEN),
        device_id=DEVICE,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(0),
        timeout=5,
        metrics_snapshot=kw.pop("metrics_snapshot", lambda: {"frames": 7, "fps": 9.5}),
        **kw,
    )
    return box, up


def test_frames_arrive_as_multipart_with_the_meta_contract_and_bearer_token(
    tmp_path: Path, central: FakeCentral
) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    ids = [box.put(jpeg(i), frame_meta(i)) for i in range(2)]
    report = up.drain()
    assert (report.delivered, report.duplicates, report.retried, report.dead) == (2, 0, 0, 0)
    assert box.stats().pending == 0
    got = central.frames[ids[1]]
    assert got["auth"] == f"Bearer {TOKEN}"
    assert got["image"] == {"data": jpeg(1), "filename": f"{ids[1]}.jpg", "content_type": "image/jpeg"}
    meta = got["meta"]
    assert META_FIELDS <= set(meta)
    assert meta["device_id"] == DEVICE and meta["frame_id"] == ids[1]
    assert meta["metrics"] == {"frames": 7, "fps": 9.5}
    assert meta["predictions"] == frame_meta(1)["predictions"]
    assert (meta["reason"], meta["model_version"], meta["captured_at"]) == (
        "uncertain",
        "3",
        "2025-01-01T00:00:00.000+00:00",
    )


def test_the_metrics_a_frame_was_kept_with_are_sent_as_kept(tmp_path: Path, central: FakeCentral) -> None:
    """The agent stores the snapshot of capture time: an upload hours later must not replace it
    (central files the drift counts under the capture time); frames from older code get one at upload."""
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    at_capture = {"frames": 3, "drift": {"epoch": "e", "histograms": {}}}
    kept = box.put(jpeg(1), {**frame_meta(1), "metrics": at_capture})
    older = box.put(jpeg(2), frame_meta(2))
    assert up.drain().delivered == 2
    assert central.frames[kept]["meta"]["metrics"] == at_capture
    assert central.frames[older]["meta"]["metrics"] == {"frames": 7, "fps": 9.5}


def test_a_frame_kept_before_a_restart_is_sent_without_its_drift_counts(tmp_path: Path, central: FakeCentral) -> None:
    """Central follows the running totals of the agent's current run; the totals of an earlier run,
    arriving between the current run's (a deferred frame), would count both runs twice."""
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock, metrics_snapshot=lambda: {"frames": 2, "drift": {"epoch": "run-2"}})
    this_run = {"frames": 1, "drift": {"epoch": "run-2", "histograms": {}}}
    last_run = {"frames": 900, "drift": {"epoch": "run-1", "histograms": {}}}
    ids = [box.put(jpeg(i), {**frame_meta(i), "metrics": m}) for i, m in enumerate((this_run, last_run))]
    assert up.drain().delivered == 2
    assert central.frames[ids[0]]["meta"]["metrics"] == this_run
    assert central.frames[ids[1]]["meta"]["metrics"] == {"frames": 900}


def test_outage_keeps_every_frame_and_recovery_delivers_each_exactly_once(tmp_path: Path, central: FakeCentral) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    ids = [box.put(jpeg(i), frame_meta(i)) for i in range(4)]
    central.down()
    for n in range(1, 4):  # three rounds during the outage, each after its (growing) backoff
        report = up.drain()
        assert report.retried == 1 and report.acked == 0 and "cannot reach" in report.errors[0]
        assert 2 ** (n - 1) / 2 <= report.wait <= 2 ** (n - 1)
        assert up.drain().wait > 0  # blocked: no hammering before the backoff is over
        clock.now += report.wait
    assert up.failures == 3
    assert box.stats().pending == 4 and box.stats().dead == 0
    assert sum(i.attempts for i in box.peek(10)) == 3

    central.up()
    clock.now += 600  # past every frame's own backoff
    report = up.drain()
    assert report.delivered == 4 and box.stats().pending == 0
    assert sorted(central.stored) == sorted(ids)  # each stored once
    assert up.drain().acked == 0  # and nothing left to send twice


def test_a_lost_acknowledgement_is_resent_and_answered_as_a_duplicate(tmp_path: Path, central: FakeCentral) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    fid = box.put(jpeg(), frame_meta(0))
    central.script = ["commit-then-drop"]
    first = up.drain()
    assert first.retried == 1 and box.stats().pending == 1  # the device cannot know it arrived
    clock.now += 600
    second = up.drain()
    assert (second.delivered, second.duplicates) == (0, 1)
    assert box.stats().pending == 0
    assert central.stored == [fid] and central.posts == 2


def test_a_refused_frame_becomes_a_dead_letter_and_the_rest_still_go(tmp_path: Path, central: FakeCentral) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    bad, good = box.put(jpeg(0), frame_meta(0)), box.put(jpeg(1), frame_meta(1))
    central.script = [(422, {}, {"detail": "meta: field 'frame_id' string should match pattern"})]
    report = up.drain()
    assert (report.dead, report.delivered) == (1, 1)
    (dead,) = box.dead_letters()
    assert dead.frame_id == bad
    assert dead.last_error == "HTTP 422: meta: field 'frame_id' string should match pattern"
    assert list(central.frames) == [good]
    clock.now += 3600
    assert up.drain().acked == 0 and central.posts == 2  # never retried


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_timeouts_throttling_and_server_errors_are_retried_not_dropped(
    tmp_path: Path, central: FakeCentral, status: int
) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    fid = box.put(jpeg(), frame_meta(0))
    central.script = [status]
    report = up.drain()
    assert report.retried == 1 and report.dead == 0 and f"HTTP {status}" in report.errors[0]
    clock.now += 600
    assert up.drain().delivered == 1 and list(central.frames) == [fid]


def test_retry_after_is_honoured(tmp_path: Path, central: FakeCentral) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock)
    box.put(jpeg(), frame_meta(0))
    central.script = [(429, {"Retry-After": "120"}, {"detail": "slow down"})]
    report = up.drain()
    assert report.wait >= 120
    clock.now += 119
    assert up.drain().acked == 0 and central.posts == 1
    clock.now += 2
    assert up.drain().delivered == 1


def test_a_rejected_token_keeps_the_backlog(tmp_path: Path, central: FakeCentral) -> None:
    """401 is the device's misconfiguration, not the frame's fault: nothing is dead-lettered."""
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock, token="wrong-token-000000")
    box.put(jpeg(), frame_meta(0))
    report = up.drain()
    assert report.retried == 1 and "HTTP 401" in report.errors[0]
    assert box.stats().pending == 1 and box.stats().dead == 0


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(1)
    b = Backoff(base=1.0, cap=60.0)
    delays = [b.delay(n, rng) for n in range(1, 11)]
    for n, d in enumerate(delays, start=1):
        full = min(60.0, 2 ** (n - 1))
        assert full / 2 <= d <= full
    assert max(delays) <= 60 and delays[6] > delays[0] * 16
    assert len({round(d / min(60.0, 2**n), 3) for n, d in enumerate(delays)}) > 3  # jitter, not a fixed ratio


def test_flush_sleeps_out_the_outage_then_delivers(tmp_path: Path, central: FakeCentral) -> None:
    clock = FakeClock()
    box, up = make(tmp_path, central.url, clock, backoff=Backoff(base=1.0, cap=8.0))
    ids = [box.put(jpeg(i), frame_meta(i)) for i in range(3)]
    central.down()
    clock.on_sleep = lambda: central.up() if len(clock.sleeps) == 3 else None
    assert up.flush(max_rounds=20) is True
    assert sorted(central.stored) == sorted(ids)
    failed_round_sleeps = clock.sleeps[:3]
    for n, s in enumerate(failed_round_sleeps, start=1):
        assert 2 ** (n - 1) / 2 <= s <= 2 ** (n - 1)


def test_multipart_encoding_is_parseable() -> None:
    body, ctype = encode_multipart(
        [("image", b"\xff\xd8\xff--x\r\n", "a.jpg", "image/jpeg"), ("meta", b'{"a": 1}', None, None)]
    )
    parts = parse_multipart(ctype, body)
    assert parts["image"] == {"data": b"\xff\xd8\xff--x\r\n", "filename": "a.jpg", "content_type": "image/jpeg"}
    assert parts["meta"]["data"] == b'{"a": 1}' and parts["meta"]["filename"] is None


class PowerCut(Exception):
    pass


class PowerCutBeforeAck(Outbox):
    """An outbox whose device loses power between central's answer and the first ack."""

    cut = True

    def ack(self, frame_id: str) -> bool:
        if self.cut:
            self.cut = False
            raise PowerCut(frame_id)
        return super().ack(frame_id)


# --- the real central router ----------------------------------------------------------
def test_contract_with_the_central_frames_endpoint(tmp_path: Path) -> None:
    """The same uploader against vision.api's router (FastAPI, tests only): 201, then 200 for a resend, 4xx dead-lettered."""
    clock = FakeClock()
    with real_device_api(tmp_path / "central-frames", models=None) as (url, store):
        box, up = make(tmp_path, url, clock)
        fid = box.put(jpeg(3), frame_meta(0))
        assert up.drain().delivered == 1
        record = json.loads(store.get(f"{DEVICE}/{fid}.json"))
        assert (record["frame_id"], record["reason"], record["width"], record["height"]) == (fid, "uncertain", 32, 24)
        assert record["metrics"] == {"frames": 7, "fps": 9.5}

        box.close()
        box, up = make(tmp_path, url, clock, outbox=PowerCutBeforeAck)
        resent = box.put(jpeg(4), frame_meta(1))
        with pytest.raises(PowerCut):
            up.drain()  # central stored it; the device died before acking
        assert box.stats().pending == 1
        assert up.drain().duplicates == 1  # sent again after the restart: 200, acked
        assert box.stats().pending == 0 and store.exists(f"{DEVICE}/{resent}.json")

        box.put(b"not an image at all", frame_meta(2))
        report = up.drain()
        assert report.dead == 1
        assert box.dead_letters()[0].last_error.startswith("HTTP 415")
