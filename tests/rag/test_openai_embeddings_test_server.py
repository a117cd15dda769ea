"""OpenAI-compatible embeddings, against a local embeddings *test* server started by the test.

The server (FastAPI on 127.0.0.1, a free port) answers `POST /v1/embeddings` with
deterministic bag-of-words vectors, so retrieval is meaningful without any model. The
collection then records the endpoint's model, and the bundled local model is refused on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi import FastAPI
from live_server import serve_in_thread

from rag.embeddings import LocalEmbedder, OpenAIEmbedder
from rag.service import RagService
from rag.vectorstore import EmbeddingMismatch
from shared.auth import Principal
from shared.config import Settings

DIM = 64
ADMIN = Principal(name="root", admin=True)


def _bow(text: str) -> list[float]:
    vec = [0.0] * DIM
    for word in text.lower().split():
        word = word.strip(".,?!:;()[]\"'")
        if word:
            vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
    return vec


@pytest.fixture(scope="module")
def embeddings_server():
    app = FastAPI()
    seen: list[dict] = []

    @app.post("/v1/embeddings")
    def embeddings(body: dict) -> dict:
        seen.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return {
            "object": "list",
            "model": body["model"],
            "data": [{"object": "embedding", "index": i, "embedding": _bow(t)} for i, t in enumerate(inputs)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    with serve_in_thread(app) as url:
        yield f"{url}/v1", seen


def test_ingest_and_answer_with_an_openai_compatible_embedding_endpoint(embeddings_server, tmp_path: Path) -> None:
    base_url, seen = embeddings_server
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "bikes.md").write_text("# Bikes\n\nBicycles are parked in the basement garage near the lifts.\n")
    (docs / "food.md").write_text("# Food\n\nThe canteen serves soup and salad every weekday at noon.\n")
    settings = Settings(
        home=tmp_path / "home", embedding_base_url=base_url, embedding_model="bow-64", hybrid=False, min_relevance=0.1
    )
    svc = RagService(settings)
    assert svc.ingest(docs, ["public"]).added == 2
    assert svc.store.collection_info().embedding_model == "openai:bow-64"
    assert svc.store.collection_info().dim == DIM
    answer = svc.ask("Where are bicycles parked?", ADMIN)
    assert answer.citations[0].source == "bikes.md"
    assert any(req["model"] == "bow-64" for req in seen)
    svc.close()

    # The same collection with the bundled local model: refused, not silently mixed.
    local = RagService(Settings(home=tmp_path / "home"), embedder_factory=lambda: LocalEmbedder())
    with pytest.raises(EmbeddingMismatch, match="openai:bow-64"):
        local.ask("Where are bicycles parked?", ADMIN)
    local.close()


def test_embedding_vectors_are_normalised(embeddings_server) -> None:
    base_url, _ = embeddings_server
    emb = OpenAIEmbedder(model="bow-64", base_url=base_url, api_key="k")
    v = emb.embed_query("soup soup salad")
    assert emb.dim == DIM
    assert abs(sum(x * x for x in v) - 1.0) < 1e-6
