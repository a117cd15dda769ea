"""What devices are told about their fleet's model when the export on central is damaged."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shared.auth import Device, DeviceRegistry, KeyRegistry

TOKEN = "token-cam-07-ccccccccccccc"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(versions):
    import vision.api
    from shared.server import create_app

    devices = DeviceRegistry([Device(id="cam-07", fleet="line-1", token=TOKEN)])
    app = create_app(
        versions.settings,
        plugins=[lambda ctx: vision.api.plugin(ctx, registry=versions.registry)],
        keys=KeyRegistry([]),
        devices=devices,
    )
    with TestClient(app) as c:
        yield c


def _export(versions, version: str) -> Path:
    from vision.training import model_dir

    return model_dir(versions.settings, version) / "model.fp32.onnx"


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda data: data[: len(data) // 2], "truncated or replaced"),  # a copy cut short
        (lambda data: b"\xff" * len(data), "not a readable ONNX model"),  # right size, corrupt bytes
    ],
)
def test_a_damaged_export_is_a_409_like_a_missing_one(versions, client: TestClient, damage, says: str) -> None:
    version = versions.add()
    versions.registry.promote(version, fleet="line-1")
    assert client.get("/v1/devices/model", headers=AUTH).json()["version"] == version
    path = _export(versions, version)
    path.write_bytes(damage(path.read_bytes()))
    for url in ("/v1/devices/model", f"/v1/devices/model/download?version={version}&precision=fp32"):
        r = client.get(url, headers=AUTH)
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert says in detail and f"loopline vision export {version}" in detail


def test_a_missing_export_is_a_409(versions, client: TestClient) -> None:
    version = versions.add()
    versions.registry.promote(version, fleet="line-1")
    _export(versions, version).unlink()
    r = client.get("/v1/devices/model", headers=AUTH)
    assert r.status_code == 409 and f"loopline vision export {version}" in r.json()["detail"]
