"""Frame uploads to vision.api's device router on a real server: pixel caps, decode memory,
racing retries and one frame id with two contents."""

from __future__ import annotations

import hashlib
import json
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from fake_central import DEVICE, FLEET, TOKEN, png_claiming, real_device_api

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from shared.config import Settings  # noqa: E402
from shared.metrics import ServiceMetrics  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Central:
    """The served router, its frame folder and its metrics."""

    def __init__(self, url: str, frames: Path, metrics: ServiceMetrics) -> None:
        self.url, self.frames, self.metrics = url, frames, metrics

    def post(self, frame_id: str, image: bytes, *, kind: str = "jpg", frame_meta: str | None = None) -> httpx.Response:
        meta = frame_meta or json.dumps({"device_id": DEVICE, "frame_id": frame_id, "reason": "uncertain"})
        files = {"image": (f"f.{kind}", image, f"image/{'jpeg' if kind == 'jpg' else kind}")}
        return httpx.post(f"{self.url}/v1/devices/frames", headers=AUTH, files=files, data={"meta": meta}, timeout=60)

    def received(self) -> float:
        """loopline_frames_received_total for the device, as Prometheus would scrape it."""
        labels = {"device": DEVICE, "fleet": FLEET, "reason": "uncertain"}
        return self.metrics.registry.get_sample_value("loopline_frames_received_total", labels) or 0.0

    def files(self) -> list[str]:
        """Everything under the frame folder, dot files (temps) included."""
        return sorted(p.relative_to(self.frames).as_posix() for p in self.frames.rglob("*") if p.is_file())


@contextmanager
def serve(tmp_path: Path, **limits: int) -> Iterator[Central]:
    settings = Settings(home=tmp_path / "central-home", **limits)
    metrics = ServiceMetrics(enabled=True)
    with real_device_api(tmp_path / "frames", settings=settings, metrics=metrics) as (url, _):
        yield Central(url, tmp_path / "frames", metrics)


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    with serve(tmp_path) as c:
        yield c


def jpeg(level: int = 128, w: int = 64, h: int = 48) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), level, np.uint8))
    assert ok
    return buf.tobytes()


def png(w: int, h: int, level: int = 128) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((h, w, 3), level, np.uint8))
    assert ok
    return buf.tobytes()


def at_once(n: int, call: Callable[[int], object]) -> list:
    """Run `call(i)` in n threads released together; their results in order."""
    gate = threading.Barrier(n)

    def run(i: int) -> object:
        gate.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# --- item 7: pixels are capped before decoding, and decodes are bounded ------------------------
def test_a_frame_claiming_more_pixels_than_the_cap_is_refused_before_decoding(central: Central) -> None:
    bomb = png_claiming(8192, 8192)  # within the side limit, 67 Mpx: ~200 MB once decoded
    tracemalloc.start()
    try:
        r = central.post(uuid.uuid4().hex, bomb, kind="png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "8192x8192" in detail and "16,777,216" in detail and "LOOPLINE_FRAME_MAX_PIXELS" in detail
    assert peak < 50e6  # never decoded
    assert central.files() == [] and central.received() == 0


def test_the_pixel_cap_is_a_setting(tmp_path: Path) -> None:
    with serve(tmp_path, frame_max_pixels=10_000) as central:
        assert central.post(uuid.uuid4().hex, png(100, 100), kind="png").status_code == 201
        over = central.post(uuid.uuid4().hex, png(101, 100), kind="png")
        assert over.status_code == 413 and "10,000" in over.json()["detail"]


def test_simultaneous_uploads_decode_one_at_a_time_with_a_concurrency_of_one(tmp_path: Path) -> None:
    """Each 2000x2000 frame takes 12 MB decoded; six at once must not hold 6 x 12 MB."""
    decoded = 2000 * 2000 * 3
    frames = [png(2000, 2000, level=10 + i) for i in range(6)]
    with serve(tmp_path, frame_decode_concurrency=1) as central:
        assert central.post(uuid.uuid4().hex, png(2000, 2000), kind="png").status_code == 201  # warm up
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            statuses = at_once(6, lambda i: central.post(uuid.uuid4().hex, frames[i], kind="png").status_code)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert statuses == [201] * 6
        assert peak < 1.7 * decoded, f"{peak / 1e6:.0f} MB held at once"


# --- item 8: racing retries of one frame ----------------------------------------------------
def test_racing_uploads_of_one_frame_store_it_once_and_count_it_once(central: Central) -> None:
    image = jpeg()
    for round_ in range(4):
        fid = f"race-{round_}-{uuid.uuid4().hex[:8]}"
        answers = at_once(8, lambda _, fid=fid: central.post(fid, image))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 7 + [201], [a.text for a in answers]
        assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7
        assert central.received() == round_ + 1
    assert all(not name.split("/")[-1].startswith(".") for name in central.files())  # no temp files left
    assert len(central.files()) == 8  # 4 frames: image + record each


# --- item 9: validate first; one frame id, one content ---------------------------------------
def test_the_same_frame_id_with_other_content_is_a_conflict_and_keeps_the_first(central: Central) -> None:
    fid = uuid.uuid4().hex
    assert central.post(fid, jpeg(100)).status_code == 201
    other = central.post(fid, jpeg(200))
    assert other.status_code == 409, other.text
    assert fid in other.json()["detail"] and "different" in other.json()["detail"]
    as_png = central.post(fid, png(64, 48), kind="png")
    assert as_png.status_code == 409
    assert (central.frames / DEVICE / f"{fid}.jpg").read_bytes() == jpeg(100)
    assert central.files() == [f"{DEVICE}/{fid}.jpg", f"{DEVICE}/{fid}.json"]
    record = json.loads((central.frames / DEVICE / f"{fid}.json").read_text())
    assert record["sha256"] == hashlib.sha256(jpeg(100)).hexdigest()
    retry = central.post(fid, jpeg(100))
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    assert central.received() == 1


def test_a_retry_that_is_not_a_valid_image_is_refused_not_taken_for_a_duplicate(central: Central) -> None:
    fid = uuid.uuid4().hex
    assert central.post(fid, jpeg()).status_code == 201
    assert central.post(fid, b"hello, not an image").status_code == 415
    assert central.post(fid, jpeg()[:200]).status_code == 422
    assert central.post(fid, jpeg(), frame_meta=json.dumps({"device_id": DEVICE, "frame_id": "x"})).status_code == 422


def test_racing_uploads_of_two_contents_under_one_id_keep_exactly_one(central: Central) -> None:
    contents = [jpeg(60), jpeg(180)]
    for round_ in range(3):
        fid = f"two-{round_}-{uuid.uuid4().hex[:8]}"
        answers = at_once(6, lambda i, fid=fid: central.post(fid, contents[i % 2]))
        winner = next(i for i, a in enumerate(answers) if a.status_code == 201)
        kept = (central.frames / DEVICE / f"{fid}.jpg").read_bytes()
        assert kept == contents[winner % 2]
        for i, a in enumerate(answers):
            if i != winner:
                assert a.status_code == (200 if i % 2 == winner % 2 else 409), (i, winner, a.text)
    assert central.received() == 3


# --- item 14: messages keep patterns as written -------------------------------------------------
def test_a_bad_frame_id_is_reported_with_its_pattern_as_written(central: Central) -> None:
    r = central.post("x", jpeg())
    assert r.status_code == 422
    assert "'^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$'" in r.json()["detail"]


def test_the_devices_own_name_for_the_frame_is_kept_in_its_record(central: Central) -> None:
    """The labeling loop shows labelers which file a frame was (an image-folder source's file name)."""
    fid = uuid.uuid4().hex
    meta = {"device_id": DEVICE, "frame_id": fid, "reason": "uncertain", "source_frame": "plate-000123.png"}
    assert central.post(fid, jpeg(), frame_meta=json.dumps(meta)).status_code == 201
    record = json.loads((central.frames / DEVICE / f"{fid}.json").read_text())
    assert record["source_frame"] == "plate-000123.png"
    too_long = {**meta, "frame_id": uuid.uuid4().hex, "source_frame": "x" * 256}
    r = central.post(too_long["frame_id"], jpeg(), frame_meta=json.dumps(too_long))
    assert r.status_code == 422 and "'source_frame'" in r.json()["detail"] and "255" in r.json()["detail"]


# --- frames in an S3 bucket: the same guarantees through the other adapter -----------------------
def test_frames_in_s3_are_stored_once_and_never_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from s3_server import new_bucket, s3_credentials, s3_server

    from shared.objectstore import S3ObjectStore

    s3_credentials(monkeypatch)
    with s3_server() as endpoint:
        bucket = new_bucket(endpoint)
        store = S3ObjectStore(bucket, "frames/", endpoint_url=endpoint)
        settings = Settings(home=tmp_path / "central-home")
        metrics = ServiceMetrics(enabled=True)
        with real_device_api(tmp_path / "unused", settings=settings, metrics=metrics, store=store) as (url, _):
            central = Central(url, tmp_path / "unused", metrics)
            fid = f"s3-{uuid.uuid4().hex[:8]}"
            answers = at_once(6, lambda i: central.post(fid, [jpeg(60), jpeg(180)][i % 2]))
            winner = next(i for i, a in enumerate(answers) if a.status_code == 201)
            for i, a in enumerate(answers):
                if i != winner:
                    assert a.status_code == (200 if i % 2 == winner % 2 else 409), (i, winner, a.text)
            assert store.get(f"{DEVICE}/{fid}.jpg") == [jpeg(60), jpeg(180)][winner % 2]
            assert store.list() == [f"{DEVICE}/{fid}.jpg", f"{DEVICE}/{fid}.json"]
            assert central.received() == 1
        assert not (tmp_path / "unused").exists(), "nothing went to the local disk"
