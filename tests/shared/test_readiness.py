"""`/readyz` says ready only once what the first answer needs is loaded, and startup does not wait for it.

The rag plugin loads the query embedder in the background as the app starts. The embedder
factory here blocks on an event the test sets, so "still loading" and "loaded" are states the
test chooses, not timings it hopes for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.context import WAITING_FOR, ApiPlugin, AppContext, Warmup
from shared.server import create_app

KEY = {"X-API-Key": "readiness-user-key-0123"}
LOADING = "rag: loading the embedding model all-MiniLM-L6-v2"


class CountingEmbedder:
    """Eight fixed dimensions; remembers what it embedded."""

    name = "counting-8"
    dim = 8

    def __init__(self) -> None:
        self.queries: list[str] = []

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return [1.0] + [0.0] * (self.dim - 1)


class GatedFactory:
    """An embedder factory whose "model load" lasts until `release` is set; counts its loads."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.release = threading.Event()
        self.loads: list[str] = []
        self.embedder = CountingEmbedder()
        self._fail_first = fail_first

    def __call__(self) -> CountingEmbedder:
        self.loads.append(threading.current_thread().name)
        if self._fail_first and len(self.loads) == 1:
            raise OSError("model files not there yet")
        assert self.release.wait(30), "the test never released the model load"
        return self.embedder


def rag_app(tmp_path: Path, factory: GatedFactory):  # noqa: ANN201
    pytest.importorskip("fastapi")
    import rag.api
    from rag.service import RagService

    svc = RagService(Settings(home=tmp_path / "home"), embedder_factory=factory)
    keys = KeyRegistry([UserEntry(name="ada", key=KEY["X-API-Key"])])
    return create_app(svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys)


def test_ready_once_the_embedding_model_is_loaded_and_the_first_question_does_not_load_it(tmp_path: Path) -> None:
    factory = GatedFactory()
    app = rag_app(tmp_path, factory)
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}  # started without waiting for the model
        waiting = client.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.json()["status"] == "starting"
        assert waiting.json()["waiting_for"] == [LOADING]
        assert waiting.json()["rag"] == {"documents": 0, "chunks": 0}

        factory.release.set()
        assert app.state.ctx.services["rag"].warmup.wait(10)
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "rag": {"documents": 0, "chunks": 0}}

        answer = client.post("/v1/query", json={"question": "How many days of leave?"}, headers=KEY)
        assert answer.status_code == 200, answer.text
    assert factory.loads == ["loopline-rag-warmup"]  # loaded once, in the background: not again for the question
    assert factory.embedder.queries == ["warm-up", "How many days of leave?"]


def test_a_failed_warm_up_keeps_the_service_unready_and_is_tried_again(tmp_path: Path) -> None:
    factory = GatedFactory(fail_first=True)
    factory.release.set()
    app = rag_app(tmp_path, factory)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while True:  # the first try fails on its thread; the next readiness check starts another
            body = client.get("/readyz").json()
            if "trying again" in " ".join(body["waiting_for"]) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert body["status"] == "starting"
        assert body["waiting_for"] == [f"{LOADING} (the last try failed with OSError; trying again)"]
        assert app.state.ctx.services["rag"].warmup.wait(10)
        assert client.get("/readyz").status_code == 200
    assert len(factory.loads) == 2


def test_any_plugin_can_make_the_service_wait(tmp_path: Path) -> None:
    """The contract of `ApiPlugin.ready`: sentences under `waiting_for`, named after their plugin."""
    gate = threading.Event()
    warmup = Warmup("filling the cache", gate.wait)

    def plugin(ctx: AppContext) -> ApiPlugin:
        warmup.start()
        return ApiPlugin(
            name="cache", router=APIRouter(), ready=lambda: {"entries": 3, WAITING_FOR: warmup.waiting_for()}
        )

    app = create_app(Settings(home=tmp_path / "home"), plugins=[plugin], keys=KeyRegistry([]), metrics=False)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "starting", "waiting_for": ["cache: filling the cache"], "cache": {"entries": 3}}
        gate.set()
        assert warmup.wait(10)
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready", "cache": {"entries": 3}}
