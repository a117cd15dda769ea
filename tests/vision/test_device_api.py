"""The central API for devices: tokens, the fleet's production model, frame uploads."""

from __future__ import annotations

import hashlib
import json
import uuid

import cv2
import numpy as np
import pytest
from fake_central import png_claiming
from fastapi.testclient import TestClient

pytest.importorskip("ultralytics")

from shared.auth import (  # noqa: E402
    Device,
    DeviceRegistry,
    KeyRegistry,  # noqa: E402
)
from shared.config import Settings  # noqa: E402
from shared.metadata import MetadataStore  # noqa: E402
from shared.server import create_app  # noqa: E402
from vision.datasets.synth import generate  # noqa: E402

CAM1, CAM2 = "token-cam-01-aaaaaaaaaaaa", "token-cam-02-bbbbbbbbbbbb"


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory):
    import vision.api
    from vision.registry import ModelRegistry
    from vision.release import export_version
    from vision.training import train_detector

    home = tmp_path_factory.mktemp("central")
    settings = Settings(home=home, train_threads=2, frame_max_bytes=60_000)
    data = generate(home / "data", train=12, val=6, imgsz=64, seed=5)
    registry = ModelRegistry.from_settings(settings)
    store = MetadataStore(settings.resolved_database_url)
    res = train_detector(settings, store, registry, data=data, epochs=1, imgsz=64, batch=6)
    export_version(settings, registry, res.version)
    devices = DeviceRegistry(
        [Device(id="cam-01", fleet="line-1", token=CAM1), Device(id="cam-02", fleet="line-2", token=CAM2)]
    )
    app = create_app(
        settings,
        plugins=[lambda ctx: vision.api.plugin(ctx, registry=registry)],
        keys=KeyRegistry([]),
        devices=devices,
    )
    with TestClient(app) as client:
        yield client, registry, res.version, settings


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _jpeg(w: int = 64, h: int = 48) -> bytes:
    img = np.full((h, w, 3), 128, np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _meta(device: str = "cam-01", frame_id: str | None = None, **extra) -> str:
    return json.dumps(
        {
            "device_id": device,
            "frame_id": frame_id or uuid.uuid4().hex,
            "reason": "close_to_threshold",
            "predictions": [],
            **extra,
        }
    )


def test_devices_need_a_valid_token(central) -> None:
    client, *_ = central
    assert client.get("/v1/devices/model").status_code == 401
    assert client.get("/v1/devices/model", headers=_auth("nope-nope-nope-nope")).status_code == 401
    r = client.post("/v1/devices/frames", files={"image": ("f.jpg", _jpeg(), "image/jpeg")}, data={"meta": _meta()})
    assert r.status_code == 401


def test_a_token_knows_its_device(central) -> None:
    client, *_ = central
    assert client.get("/v1/devices/me", headers=_auth(CAM2)).json() == {"id": "cam-02", "fleet": "line-2"}


def test_no_production_model_yet_is_a_clear_404(central) -> None:
    client, registry, version, _ = central
    assert registry.production("line-1") is None
    r = client.get("/v1/devices/model", headers=_auth(CAM1))
    assert r.status_code == 404 and "promote" in r.json()["detail"]


def test_fleet_model_metadata_and_verified_download(central) -> None:
    client, registry, version, settings = central
    registry.promote(version)
    info = client.get("/v1/devices/model", headers=_auth(CAM1)).json()
    assert info["version"] == version and info["precision"] == "fp32"
    assert info["names"] == ["scratch", "spot", "crack"] and info["imgsz"] == 64
    blob = client.get(info["url"], headers=_auth(CAM1))
    assert blob.status_code == 200
    assert hashlib.sha256(blob.content).hexdigest() == info["sha256"] and len(blob.content) == info["size"]
    # Another fleet's name, or a version that is not production, is refused.
    assert client.get("/v1/devices/model?fleet=line-2", headers=_auth(CAM1)).status_code == 403
    wrong = client.get("/v1/devices/model/download?version=999&precision=fp32", headers=_auth(CAM1))
    assert wrong.status_code == 404


def test_a_fleet_can_have_its_own_production_version(central) -> None:
    client, registry, version, _ = central
    registry.promote(version)
    registry.promote(version, fleet="line-2")
    assert client.get("/v1/devices/model", headers=_auth(CAM2)).json()["version"] == version


def test_frame_upload_is_stored_and_idempotent(central) -> None:
    client, _, _, settings = central
    fid = uuid.uuid4().hex
    files = {"image": ("f.jpg", _jpeg(), "image/jpeg")}
    first = client.post("/v1/devices/frames", headers=_auth(CAM1), files=files, data={"meta": _meta(frame_id=fid)})
    assert first.status_code == 201 and first.json() == {"id": f"cam-01/{fid}", "duplicate": False}
    again = client.post("/v1/devices/frames", headers=_auth(CAM1), files=files, data={"meta": _meta(frame_id=fid)})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    stored = json.loads((settings.home / "frames" / "cam-01" / f"{fid}.json").read_text())
    assert stored["fleet"] == "line-1" and stored["width"] == 64 and stored["height"] == 48
    assert (settings.home / "frames" / "cam-01" / f"{fid}.jpg").read_bytes() == _jpeg()


@pytest.mark.parametrize(
    ("image", "meta", "status", "says"),
    [
        (b"hello, not an image", None, 415, "JPEG or PNG"),
        (_jpeg()[:200], None, 422, "decoded"),
        (_jpeg(4, 4), None, 422, "between 8"),
        (png_claiming(60000, 60000), None, 422, "between 8"),
        (png_claiming(9000, 100), None, 422, "9000x100"),
        (b"\xff\xd8\xff" + b"0" * 70_000, None, 413, "limit"),
        (_jpeg(), '{"device_id": "cam-01", "frame_id": "x"}', 422, "frame_id"),
        (_jpeg(), "not json", 422, "meta"),
        (_jpeg(), _meta(device="cam-02"), 403, "cam-01"),
    ],
)
def test_bad_frame_uploads_get_clear_errors(central, image: bytes, meta: str | None, status: int, says: str) -> None:
    client, _, _, settings = central
    before = set((settings.home / "frames").rglob("*"))
    r = client.post(
        "/v1/devices/frames",
        headers=_auth(CAM1),
        files={"image": ("f.jpg", image, "image/jpeg")},
        data={"meta": meta or _meta()},
    )
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]
    assert set((settings.home / "frames").rglob("*")) == before  # nothing half-stored
