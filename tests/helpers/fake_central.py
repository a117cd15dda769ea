"""Central's device endpoints in miniature, for the edge tests: stdlib http.server on 127.0.0.1.

One `FakeCentral` serves both sides a device talks to:

- models: `GET /v1/devices/model?fleet=F` answers the manifest set by `publish()`, and
  `GET /v1/devices/model/download?version=V` its file; `mode` makes the download misbehave:
  "truncate" (connection cut half-way) or "extra" (more bytes than announced);
- frames: `POST /v1/devices/frames` checks the token, parses the multipart body and dedupes on
  frame_id (201 new, 200 duplicate). `script` queues special answers for the next posts: an
  HTTP status, (status, headers, body), or "commit-then-drop" (store, then cut the connection
  before answering: a lost acknowledgement).

Every request is recorded in `requests` as (path, Authorization header); `posts` counts the
POSTs, `stored` every frame_id stored (a repeat there would be a double delivery). down()/up()
switch it off and on again on the same port. Also here: the clock the tests move, the tiny
ONNX models the fake central serves, a PNG that claims any size, and vision.api's real device
router for contract tests.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import pytest
from live_server import free_port

TOKEN = "device-token-0123456789"
DEVICE = "line1-cam01"
FLEET = "line-1"


class FakeCentral:
    """See the module docstring. Use as a context manager, or call down() when done."""

    def __init__(self, *, token: str = TOKEN, fleet: str = FLEET, names: list[str] | None = None) -> None:
        self.token = token
        self.fleet = fleet
        self.names = names or ["scratch", "dent"]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.manifest: dict | None = None
        self.files: dict[str, bytes] = {}
        self.mode = ""
        self.frames: dict[str, dict] = {}
        self.stored: list[str] = []
        self.requests: list[tuple[str, str | None]] = []
        self.posts = 0
        self.script: list = []
        self.lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self.up()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def publish(self, version: str, data: bytes, *, sha256: str | None = None, size: int | None = None) -> dict:
        """Make `data` the fleet's model; `sha256`/`size` override what the manifest announces."""
        self.files[version] = data
        self.manifest = {
            "version": version,
            "sha256": sha256 or hashlib.sha256(data).hexdigest(),
            "size": len(data) if size is None else size,
            "precision": "fp32",
            "url": f"/v1/devices/model/download?version={version}&precision=fp32",
            "names": list(self.names),
            "imgsz": 32,
        }
        return self.manifest

    def downloads(self) -> int:
        return sum(1 for path, _ in self.requests if path.startswith("/v1/devices/model/download"))

    def up(self) -> None:
        if self._httpd is not None:
            return
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        httpd.daemon_threads = True
        httpd.central = self  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self._httpd = httpd

    def down(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    @property
    def central(self) -> FakeCentral:
        return self.server.central  # type: ignore[attr-defined]

    def answer(
        self,
        status: int,
        body: dict | bytes,
        *,
        ctype: str = "application/json",
        headers: dict | None = None,
        length: int | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.central.token}"

    def do_GET(self) -> None:
        central = self.central
        with central.lock:
            central.requests.append((self.path, self.headers.get("Authorization")))
        if not self.authorized():
            return self.answer(401, {"detail": "unknown token"})
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/v1/devices/model":
            if query.get("fleet") != [central.fleet]:
                return self.answer(403, {"detail": "wrong fleet"})
            if central.manifest is None:
                return self.answer(404, {"detail": "no production model for fleet"})
            return self.answer(200, central.manifest)
        if url.path == "/v1/devices/model/download":
            data = central.files[query["version"][0]]
            if central.mode == "truncate":
                self.answer(200, data[: len(data) // 2], ctype="application/octet-stream", length=len(data))
                self.close_connection = True
                return None
            if central.mode == "extra":
                return self.answer(200, data + b"\0" * 100, ctype="application/octet-stream")
            return self.answer(200, data, ctype="application/octet-stream")
        return self.answer(404, {})

    def do_POST(self) -> None:
        central = self.central
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with central.lock:
            central.requests.append((self.path, self.headers.get("Authorization")))
            central.posts += 1
            special = central.script.pop(0) if central.script else None
        if self.path != "/v1/devices/frames":
            return self.answer(404, {"detail": "not found"})
        if not self.authorized():
            return self.answer(401, {"detail": "missing or unknown device token"})
        if isinstance(special, int):
            return self.answer(special, {"detail": f"scripted {special}"})
        if isinstance(special, tuple):
            status, headers, answer = special
            return self.answer(status, answer, headers=headers)
        parts = parse_multipart(self.headers["Content-Type"], body)
        meta = json.loads(parts["meta"]["data"])
        fid = meta["frame_id"]
        with central.lock:
            duplicate = fid in central.frames
            if not duplicate:
                central.frames[fid] = {"meta": meta, "image": parts["image"], "auth": self.headers["Authorization"]}
                central.stored.append(fid)
        if special == "commit-then-drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        return self.answer(200 if duplicate else 201, {"id": f"{meta.get('device_id')}/{fid}", "duplicate": duplicate})


def parse_multipart(content_type: str, body: bytes) -> dict[str, dict]:
    """A multipart/form-data body as {name: {"data", "filename", "content_type"}}."""
    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert msg.is_multipart(), content_type
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = {
            "data": part.get_payload(decode=True),
            "filename": part.get_filename(),
            "content_type": part.get("Content-Type"),
        }
    return out


class FakeClock:
    """A clock the test moves; sleep() advances it (and can run a hook, e.g. bring central up)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


# --- tiny real models (built with onnx: the vision extra) ----------------------------------
def onnx_model(graph: Any, metadata: dict[str, str] | None = None) -> bytes:
    """A checked, serialized opset-13 model around `graph`, with `metadata` as its properties."""
    import onnx

    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def mean_model(scale: float, *, side: int | None = None) -> bytes:
    """score = mean(image) * scale: brightness decides the score. `side` fixes the input size."""
    from onnx import TensorProto, helper

    dims = [1, 3, side or "h", side or "w"]
    return onnx_model(
        helper.make_graph(
            [
                helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1),
                helper.make_node("Constant", [], ["s"], value=helper.make_tensor("sv", TensorProto.FLOAT, [], [scale])),
                helper.make_node("Mul", ["m", "s"], ["score"]),
            ],
            "mean",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1, 1, 1])],
        )
    )


def yolo_like_model() -> bytes:
    """An ultralytics-shaped detector (1, 4+1, 1): one centred box scored by the image's mean."""
    from onnx import TensorProto, helper

    box = helper.make_tensor("box", TensorProto.FLOAT, [1, 4, 1], [16.0, 16.0, 10.0, 10.0])
    return onnx_model(
        helper.make_graph(
            [
                helper.make_node("ReduceMean", ["images"], ["m"], keepdims=1),
                helper.make_node(
                    "Constant", [], ["shape"], value=helper.make_tensor("sh", TensorProto.INT64, [3], [1, 1, 1])
                ),
                helper.make_node("Reshape", ["m", "shape"], ["score"]),
                helper.make_node("Constant", [], ["b"], value=box),
                helper.make_node("Concat", ["b", "score"], ["output0"], axis=1),
            ],
            "yolo-like",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 1])],
        ),
        {"names": "{0: 'scratch'}", "imgsz": "[32, 32]", "task": "detect", "stride": "32"},
    )


# --- frames ------------------------------------------------------------------------------------
def png_claiming(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb needs no real pixels)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\x00" * 64)
    chunk += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


# --- the real thing, for contract tests -------------------------------------------------------
@contextmanager
def real_device_api(
    frames_dir: Path, models: object = None, *, settings: Any = None, metrics: Any = None, store: Any = None
) -> Iterator[tuple[str, Any]]:
    """vision.api's device router (FastAPI: tests only) served by uvicorn, knowing one device
    (DEVICE in FLEET with TOKEN) and storing frames under `frames_dir`; `models` answers
    `current(fleet) -> (ModelInfo, path)`. `settings` (default: `Settings` with a home beside
    `frames_dir`) sets the frame limits; `metrics` (default: off) records what was stored.
    `store` replaces the frame folder with another object store (S3). Yields (url, frame store).
    Skips the test where fastapi, uvicorn or the vision extra is missing."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    api = pytest.importorskip("vision.api")
    from fastapi import FastAPI
    from live_server import serve_in_thread

    from shared.auth import Device, DeviceRegistry
    from shared.config import Settings
    from shared.metrics import ServiceMetrics
    from shared.objectstore import LocalObjectStore

    devices = DeviceRegistry([Device(id=DEVICE, fleet=FLEET, token=TOKEN)])
    store = store if store is not None else LocalObjectStore(frames_dir)
    settings = settings or Settings(home=frames_dir.parent / "central-home", frame_max_bytes=8_000_000)
    ctx = SimpleNamespace(
        settings=settings, metrics=metrics or ServiceMetrics(enabled=False), devices=devices, services={}
    )
    app = FastAPI()
    app.state.ctx = ctx
    api.attach(ctx, frames=store, models=models)
    app.include_router(api.router)
    with serve_in_thread(app) as url:
        yield url, store
