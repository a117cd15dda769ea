"""The API keeps its published contract: schemathesis against the OpenAPI schema a real server serves.

One app with every plugin (documents Q&A with a little handbook ingested, the device API with a
promoted model, monitoring) runs under uvicorn; schemathesis loads `/openapi.json` from it and
checks every operation as an admin, a plain user and a device, with all its checks (status codes,
content types, response schemas with formats, positive data accepted, negative data rejected,
405 with `Allow`, …). Its examples, coverage and fuzzing phases run per operation, bounded to 25
generated cases each, with a fixed seed and derandomized, so CI sees the same cases every run; the
stateful phase (responses feeding later requests: an upload read, deleted, then gone) runs for the
two user roles. Nothing is skipped for time: the stream answers at once with the extractive
generator, and the whole module takes about 40 s on 2 cores.

Two things OpenAPI cannot say are generated as the schema's descriptions say them: a frame is a
decodable JPEG or PNG with sides of at least 8 pixels, and a document is a file that yields text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from datetime import datetime

import pytest

schemathesis = pytest.importorskip("schemathesis")
for _module in ("fastapi", "uvicorn", "mlflow", "onnx", "PIL", "vision.api"):
    pytest.importorskip(_module)

from live_server import serve_in_thread  # noqa: E402

from shared.auth import Device, DeviceRegistry, KeyRegistry, UserEntry  # noqa: E402
from shared.config import Settings  # noqa: E402
from vision.api import FRAME_META_EXAMPLE  # noqa: E402

ADMIN_KEY = "contract-admin-key-0123456789"
USER_KEY = "contract-user-key-0123456789"
DEVICE_TOKEN = "contract-device-token-0123456789"
ROLES = {
    "admin": {"X-API-Key": ADMIN_KEY},
    "user": {"X-API-Key": USER_KEY},
    "device": {"Authorization": f"Bearer {DEVICE_TOKEN}"},
}


class HashEmbedder:
    """Words hashed into 64 buckets, L2-normalised: deterministic, instant, no model to load."""

    name = "hash-64"
    dim = 64

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            vec[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]


def _image(fmt: str, w: int, h: int, shade: int) -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (w, h), (shade, 255 - shade, shade // 2)).save(out, format=fmt)
    return out.getvalue()


def _register_media_types() -> None:
    """What the parts' `encoding` content types stand for, as the server checks them (see the docstring)."""
    from hypothesis import strategies as st

    side = st.integers(8, 48)
    for media, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG")):
        schemathesis.openapi.media_type(media, st.builds(_image, st.just(fmt), side, side, st.integers(0, 255)))
    words = st.lists(st.text("abcdefghij", min_size=1, max_size=8), min_size=1, max_size=30)
    text = st.builds(
        lambda title, body: f"# {title}\n\n{' '.join(body)}\n".encode(), st.text("klmnop", min_size=1), words
    )
    for media in ("text/markdown", "text/plain"):
        schemathesis.openapi.media_type(media, text)


_register_media_types()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import rag.api
    import shared.monitoring.api
    import vision.api
    from rag.service import RagService
    from shared.server import create_app

    base = tmp_path_factory.mktemp("contract")
    settings = Settings(home=base / "home", monitor_interval_s=0, sync_folder=base / "docs")
    docs = base / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\nEveryone gets 27 days of paid leave a year.\n")
    keys = KeyRegistry(
        [UserEntry(name="root", key=ADMIN_KEY, admin=True), UserEntry(name="ada", key=USER_KEY, groups=["eng"])]
    )
    # The device of the schema's example upload, so that the examples phase stores a frame.
    devices = DeviceRegistry([Device(id="line1-cam01", fleet="line-1", token=DEVICE_TOKEN)])

    def rag_plugin(ctx):  # noqa: ANN001, ANN202
        svc = RagService(settings, metadata=ctx.metadata, embedder_factory=HashEmbedder)
        run = svc.ingest(docs, ["public"], kind="sync")
        assert run.status == "succeeded", run
        return rag.api.plugin(ctx, service=svc)

    def vision_plugin(ctx):  # noqa: ANN001, ANN202
        return vision.api.plugin(ctx, registry=_registry(settings))

    app = create_app(
        settings,
        plugins=[rag_plugin, vision_plugin, lambda ctx: shared.monitoring.api.plugin(ctx, interval_s=0)],
        keys=keys,
        devices=devices,
    )
    with serve_in_thread(app) as url:
        yield url


def _registry(settings: Settings):  # noqa: ANN202
    from fake_central import mean_model

    from vision.registry import ModelRegistry
    from vision.training import model_dir

    registry = ModelRegistry.from_settings(settings)
    weights = settings.home / "best.pt"
    weights.write_bytes(b"not trained")
    mv = registry.record_training(params={}, metrics={"mAP50": 0.5}, weights=weights, tags={"imgsz": "32"})
    data = mean_model(1.0)
    folder = model_dir(settings, mv.version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.fp32.onnx").write_bytes(data)
    registry.set_tags(
        mv.version,
        {
            "onnx.fp32.sha256": hashlib.sha256(data).hexdigest(),
            "onnx.fp32.size": len(data),
            "preferred_precision": "fp32",
        },
    )
    registry.promote(mv.version, fleet="line-1")
    return registry


@pytest.fixture(scope="module", params=sorted(ROLES))
def role(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def api_schema(role: str, server: str):
    config = schemathesis.Config.from_dict(
        {
            "seed": 20260101,
            "headers": ROLES[role],
            "generation": {"max-examples": 25, "deterministic": True, "database": "none"},
        }
    )
    return schemathesis.openapi.from_url(f"{server}/openapi.json", config=config)


if not hasattr(pytest.Function, "_nodeid"):  # pytest 9.2 renamed it; schemathesis' lazy schemas still set it
    pytest.Function._nodeid = property(lambda self: self.nodeid, lambda self, value: None)

schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_the_api_keeps_its_contract(case) -> None:  # noqa: ANN001
    _fill_empty_parts(case)
    case.call_and_validate()


def _fill_empty_parts(case) -> None:  # noqa: ANN001
    """Parts of a frame upload that schemathesis leaves empty in a schema-valid case get valid content.

    Its coverage phase fills every part without a media-type strategy with "" (here `meta`, which
    must be a JSON object), and its examples phase sends the image part empty: neither is what the
    schema describes (a JSON object; a JPEG or PNG, which OpenAPI can only say in words).
    """
    body = case.body
    if case.operation.path != "/v1/devices/frames" or not isinstance(body, dict) or not case.meta:
        return
    if not case.meta.generation.mode.is_positive:
        return
    if not getattr(body.get("image"), "data", body.get("image")):
        body["image"] = _image("PNG", 16, 16, 128)
    if body.get("meta") == "":
        body["meta"] = dict(FRAME_META_EXAMPLE)


def test_workflows_keep_the_contract(api_schema, role: str) -> None:  # noqa: ANN001
    from hypothesis import settings

    if role == "device":
        pytest.skip("a device's operations link to nothing (frames are write-only)")
    api_schema.as_state_machine().run(
        settings=settings(max_examples=15, stateful_step_count=6, derandomize=True, deadline=None, database=None)
    )


# --- what schemathesis found, pinned down one by one -----------------------------------------
def test_a_405_lists_every_method_of_the_path(server: str) -> None:
    import httpx

    r = httpx.options(f"{server}/v1/documents")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = httpx.put(f"{server}/v1/documents/some-id", headers=ROLES["admin"])
    assert r.status_code == 405 and r.headers["allow"] == "DELETE, GET"


def test_times_leave_with_their_offset(server: str) -> None:
    import httpx

    def get(path: str) -> list | dict:
        r = httpx.get(f"{server}{path}", headers=ROLES["admin"])
        assert r.status_code == 200, r.text
        return r.json()

    status = get("/v1/monitoring/status")
    stamps = [
        *(d["updated_at"] for d in get("/v1/documents")),
        *(r[k] for r in get("/v1/runs") for k in ("started_at", "finished_at")),
        *(s[k] for s in get("/v1/sources") for k in ("last_success_at", "last_change_at")),
        status["checked_at"],
        *(r["started_at"] for r in status["recent_runs"]),
    ]
    stamps = [s for s in stamps if s is not None]  # a run still going has no finish yet (the sync is a job)
    assert len(stamps) >= 6
    assert all(datetime.fromisoformat(s).utcoffset() is not None for s in stamps), stamps


@pytest.mark.parametrize("rating", [False, True, "1", 1.5, 6])
def test_only_whole_numbers_are_ratings(server: str, rating: object) -> None:
    import httpx

    r = httpx.post(f"{server}/v1/feedback", json={"question": "q", "rating": rating}, headers=ROLES["user"])
    assert r.status_code == 422, r.text
    assert httpx.post(f"{server}/v1/feedback", json={"question": "q", "rating": 1.0}, headers=ROLES["user"]).is_success
