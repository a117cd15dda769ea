"""What devices are told about their fleet's model: a damaged export, the input reference, the sampling boost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
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


# --- what ships with the model, and what central asks while the fleet drifts ------------------
def test_the_manifest_carries_the_input_reference_export_counted(versions, client: TestClient, tmp_path: Path) -> None:
    from edge.quality import QUALITY_EDGES
    from vision.datasets.synth import render_plate
    from vision.release import write_reference
    from vision.training import model_dir

    before = versions.add()  # exported before references existed
    versions.registry.promote(before, fleet="line-1")
    assert client.get("/v1/devices/model", headers=AUTH).json()["reference"] is None

    version = versions.add()
    rng = np.random.default_rng(0)
    images = [tmp_path / f"train-{i}.png" for i in range(12)]
    for path in images:
        cv2.imwrite(str(path), render_plate(rng, 64)[0])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    path, used = write_reference(model_dir(versions.settings, version), [*images, tmp_path / "broken.png"])
    assert used == 12 and path.name == "reference.json"
    versions.registry.promote(version, fleet="line-1")
    reference = client.get("/v1/devices/model", headers=AUTH).json()["reference"]
    assert set(reference) == set(QUALITY_EDGES)
    for feature, hist in reference.items():
        assert hist["edges"] == list(QUALITY_EDGES[feature]) and len(hist["counts"]) == len(hist["edges"]) + 1
        assert sum(hist["counts"]) == 12


def test_sampling_is_boosted_while_a_drift_alert_is_open_on_the_fleet_and_falls_back_after(
    versions, client: TestClient
) -> None:
    alerts = client.app.state.ctx.alerts
    versions.registry.promote(versions.add(), fleet="line-1")
    now = datetime.now(UTC)

    def sampling() -> dict:
        return client.get("/v1/devices/model", headers=AUTH).json()["sampling"]

    assert sampling() == {"boost": 1.0, "reason": None}
    alerts.open_or_touch(
        kind="drift", key="vision:line-2/brightness", severity="warning", message="", details={}, now=now
    )
    assert sampling()["boost"] == 1.0  # another fleet drifts
    alerts.open_or_touch(
        kind="drift", key="vision:line-1/contrast", severity="warning", message="", details={}, now=now
    )
    alerts.open_or_touch(
        kind="drift", key="vision:line-1/brightness", severity="warning", message="", details={}, now=now
    )
    assert sampling() == {"boost": 4.0, "reason": "drift alert open on vision:line-1: brightness, contrast"}
    alerts.resolve("drift", "vision:line-1/contrast", now)
    assert sampling()["boost"] == 4.0
    alerts.resolve("drift", "vision:line-1/brightness", now)
    assert sampling() == {"boost": 1.0, "reason": None}
