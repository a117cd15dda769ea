"""What the device API reports at `/metrics`: frames by device, fleet and reason, model downloads,
and the model version each fleet's devices say they run.

The real device router in the real app; the fleet's production model is a tiny real ONNX
file (no training), answered by a small `current(fleet)` object as the router expects.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from fake_central import mean_model  # noqa: E402

from shared.auth import KeyRegistry  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.objectstore import LocalObjectStore  # noqa: E402
from shared.server import ApiPlugin, AppContext, create_app  # noqa: E402

TOKENS = {
    "cam-01": "token-cam-01-aaaaaaaaaaaa",
    "cam-02": "token-cam-02-bbbbbbbbbbbb",
    "cam-03": "token-cam-03-cccccccccccc",
}
FLEETS = {"cam-01": "line-1", "cam-02": "line-2", "cam-03": "line-1"}
PRODUCTION = {"line-1": "4", "line-2": "7"}


class FleetModels:
    """The fleet's production model: one tiny ONNX file, a version per fleet."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def current(self, fleet: str):
        from vision.api import ModelInfo

        version = PRODUCTION[fleet]
        info = ModelInfo(
            version=version,
            sha256=hashlib.sha256(self.path.read_bytes()).hexdigest(),
            size=self.path.stat().st_size,
            precision="fp32",
            url=f"/v1/devices/model/download?version={version}&precision=fp32",
            names=["scratch"],
            imgsz=32,
        )
        return info, self.path


@pytest.fixture
def client(tmp_path: Path):
    import vision.api
    from shared.auth import Device, DeviceRegistry

    model = tmp_path / "model.fp32.onnx"
    model.write_bytes(mean_model(1.0))
    devices = DeviceRegistry([Device(id=d, fleet=FLEETS[d], token=t) for d, t in TOKENS.items()])

    def plugin(ctx: AppContext) -> ApiPlugin:
        vision.api.attach(ctx, frames=LocalObjectStore(tmp_path / "frames"), models=FleetModels(model))
        return ApiPlugin(name="vision", router=vision.api.router)

    app = create_app(Settings(home=tmp_path / "home"), plugins=[plugin], keys=KeyRegistry([]), devices=devices)
    with TestClient(app) as c:
        yield c


def samples(c: TestClient) -> dict[tuple[str, frozenset], float]:
    page = c.get("/metrics")
    assert page.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(page.text)
        for s in f.samples
    }


def series(c: TestClient, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples(c).items() if n == name}


def L(**labels: str) -> frozenset:
    return frozenset(labels.items())


def send_frame(
    c: TestClient,
    device: str,
    *,
    reason: str | None,
    version: str | None,
    frame_id: str | None = None,
    as_device: str | None = None,
):
    ok, jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 128, np.uint8))
    assert ok
    meta = {"device_id": device, "frame_id": frame_id or uuid.uuid4().hex, "reason": reason, "model_version": version}
    return c.post(
        "/v1/devices/frames",
        headers={"Authorization": f"Bearer {TOKENS[as_device or device]}"},
        files={"image": ("f.jpg", jpg.tobytes(), "image/jpeg")},
        data={"meta": json.dumps(meta)},
    )


def test_frames_are_counted_by_device_fleet_and_reason(client: TestClient) -> None:
    fid = uuid.uuid4().hex
    assert send_frame(client, "cam-01", reason="uncertain", version="4", frame_id=fid).status_code == 201
    assert send_frame(client, "cam-01", reason="uncertain", version="4").status_code == 201
    assert send_frame(client, "cam-02", reason="rare-class", version="7").status_code == 201
    assert send_frame(client, "cam-03", reason=None, version=None).status_code == 201
    # A retried upload is stored once and counted once; a device posing as another is refused.
    assert send_frame(client, "cam-01", reason="uncertain", version="4", frame_id=fid).status_code == 200
    assert send_frame(client, "cam-01", reason="uncertain", version="4", as_device="cam-02").status_code == 403
    unauthenticated = client.post(
        "/v1/devices/frames", files={"image": ("f.jpg", b"x", "image/jpeg")}, data={"meta": "{}"}
    )
    assert unauthenticated.status_code == 401

    assert series(client, "loopline_frames_received_total") == {
        L(device="cam-01", fleet="line-1", reason="uncertain"): 2,
        L(device="cam-02", fleet="line-2", reason="rare-class"): 1,
        L(device="cam-03", fleet="line-1", reason="none"): 1,
    }
    requests = series(client, "loopline_http_request_duration_seconds_count")
    route = "/v1/devices/frames"
    assert requests[L(method="POST", route=route, status="201")] == 4
    assert requests[L(method="POST", route=route, status="200")] == 1
    assert requests[L(method="POST", route=route, status="403")] == 1
    assert requests[L(method="POST", route=route, status="401")] == 1


def test_the_model_in_use_per_fleet_follows_what_devices_report(client: TestClient) -> None:
    assert series(client, "loopline_model_version_in_use") == {}
    send_frame(client, "cam-01", reason="uncertain", version="4")
    send_frame(client, "cam-02", reason="uncertain", version="7")
    assert series(client, "loopline_model_version_in_use") == {
        L(fleet="line-1", version="4"): 1,
        L(fleet="line-2", version="7"): 1,
    }
    # cam-03 of the same fleet has updated: line-1 now runs 5, and 4 is gone from the page.
    send_frame(client, "cam-03", reason="uncertain", version="5")
    assert series(client, "loopline_model_version_in_use") == {
        L(fleet="line-1", version="5"): 1,
        L(fleet="line-2", version="7"): 1,
    }
    # A frame without a version says nothing about the model in use.
    send_frame(client, "cam-01", reason="uncertain", version=None)
    assert series(client, "loopline_model_version_in_use")[L(fleet="line-1", version="5")] == 1


def test_model_downloads_are_counted_by_fleet_and_version(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKENS['cam-01']}"}
    info = client.get("/v1/devices/model", headers=auth).json()
    for _ in range(2):
        assert client.get(info["url"], headers=auth).status_code == 200
    other = {"Authorization": f"Bearer {TOKENS['cam-02']}"}
    line2 = client.get("/v1/devices/model", headers=other).json()
    assert client.get(line2["url"], headers=other).status_code == 200
    # Asking for a version that is not the fleet's production model downloads nothing.
    assert client.get("/v1/devices/model/download?version=999&precision=fp32", headers=auth).status_code == 404
    assert series(client, "loopline_model_downloads_total") == {
        L(fleet="line-1", version=info["version"]): 2,
        L(fleet="line-2", version=line2["version"]): 1,
    }
    requests = series(client, "loopline_http_request_duration_seconds_count")
    assert requests[L(method="GET", route="/v1/devices/model/download", status="200")] == 3
    assert requests[L(method="GET", route="/v1/devices/model/download", status="404")] == 1
