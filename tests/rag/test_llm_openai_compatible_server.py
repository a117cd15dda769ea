"""The LLM answer path against a local OpenAI-compatible *test* server started by the test.

No real model is involved: `fake_openai_server` is a tiny FastAPI app served by uvicorn on
127.0.0.1 (a free port) in a background thread. It implements `POST /v1/chat/completions`
in its plain JSON form and its `stream: true` form (SSE chunks `data: {...}`, then
`data: [DONE]`), records every request, and answers with a canned text citing [1]. The
loopline service talks to it through llama-index's OpenAILike exactly as it would talk to
vLLM, Ollama or any other OpenAI-compatible endpoint.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

import rag.api
from rag.answer import ABSTAIN_TEXT, LLM_ABSTAIN
from rag.samples import write_handbook
from rag.service import RagService
from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.server import create_app

MODEL = "some-unknown-model-name"
CANNED = "Salary bands are reviewed every March, according to the compensation handbook [1]."
# The streamed reply, piece by piece (joined, it is the canned answer).
TOKENS = ["Salary ", "bands ", "are reviewed ", "every March", ", according to ", "the compensation handbook", " [1]."]
assert "".join(TOKENS) == CANNED
DECLINED_TOPIC = "parental leave for pets"
KEY = "test-key-pia-0123456789"
ADMIN_KEY = "test-key-root-0123456789"


@dataclass
class FakeOpenAIServer:
    """What the test server saw, and where it listens."""

    port: int = 0
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def last(self) -> dict:
        with self.lock:
            return self.requests[-1]


def fake_openai_app(state: FakeOpenAIServer) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        with state.lock:
            state.requests.append({"body": body, "headers": dict(request.headers)})
        created = int(time.time())
        # A question the sources do not answer gets the agreed "not found" sentence.
        reply = LLM_ABSTAIN if DECLINED_TOPIC in json.dumps(body["messages"]) else CANNED
        if body.get("stream"):

            async def chunks() -> AsyncIterator[str]:
                for i, tok in enumerate(TOKENS):
                    delta = {"role": "assistant", "content": tok} if i == 0 else {"content": tok}
                    chunk = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": body.get("model"),
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                last = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": created,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }

    return app


def serve_in_thread(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Serve `app` with uvicorn on 127.0.0.1, on a port the OS picks; returns once it listens."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="fake-openai-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the OpenAI-compatible test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, port


@pytest.fixture(scope="module")
def fake_openai_server() -> Iterator[FakeOpenAIServer]:
    state = FakeOpenAIServer()
    server, thread, state.port = serve_in_thread(fake_openai_app(state))
    yield state
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive()


@dataclass
class LlmWorld:
    svc: RagService
    client: TestClient


@pytest.fixture(scope="module")
def llm_world(embedder, tmp_path_factory, fake_openai_server: FakeOpenAIServer) -> Iterator[LlmWorld]:
    base = tmp_path_factory.mktemp("llm")
    settings = Settings(
        home=base / "home",
        llm_base_url=fake_openai_server.base_url,
        llm_model=MODEL,
        llm_api_key="test",
        llm_timeout_s=20,
    )
    svc = RagService(settings, embedder_factory=lambda: embedder)
    root = base / "handbook"
    for folder, groups in write_handbook(root).items():
        svc.ingest(root / folder, groups)
    keys = KeyRegistry(
        [
            UserEntry(name="pia", key=KEY, groups=["people-ops"]),
            UserEntry(name="root", key=ADMIN_KEY, admin=True),
        ]
    )
    app = create_app(settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys)
    yield LlmWorld(svc, TestClient(app))
    svc.close()


def _text(content) -> str:
    """A chat message's content, whether sent as a string or as content parts."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [] if isinstance(part, dict))


def _messages(req: dict) -> tuple[str, str]:
    msgs = req["body"]["messages"]
    system = [_text(m["content"]) for m in msgs if m["role"] == "system"]
    user = [_text(m["content"]) for m in msgs if m["role"] == "user"]
    assert len(system) == 1 and len(user) == 1, msgs
    return system[0], user[0]


QUESTION = "When are salary bands reviewed?"


def test_llm_answer_comes_from_the_openai_compatible_test_server(
    llm_world: LlmWorld, fake_openai_server: FakeOpenAIServer
) -> None:
    before = fake_openai_server.count()
    r = llm_world.client.post("/v1/query", json={"question": QUESTION}, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["mode"] == "llm"
    assert a["abstained"] is False
    assert a["answer"] == CANNED
    assert a["citations"] and a["citations"][0]["source"] == "compensation.md"
    assert fake_openai_server.count() == before + 1

    req = fake_openai_server.last()
    assert req["body"]["model"] == MODEL
    assert not req["body"].get("stream")
    assert req["headers"]["authorization"] == "Bearer test"
    system, user = _messages(req)
    assert "cite" in system.lower() and "[1]" in system
    assert "only" in system.lower()  # grounded: only the provided sources
    # every citation the API returns is a numbered source of the prompt, with its text
    for c in a["citations"]:
        assert f"[{c['n']}]" in user
        assert c["text"] in user
        assert user.index(f"[{c['n']}]") < user.index(c["text"])
    assert "Salary bands are reviewed once a year, in March." in user
    assert QUESTION in user
    assert user.index("[1]") < user.index(QUESTION)  # sources first, then the question


def test_llm_prompt_holds_only_sources_the_user_may_read(
    llm_world: LlmWorld, fake_openai_server: FakeOpenAIServer
) -> None:
    q = "How many days of paid vacation does an employee get, and when are salary bands reviewed?"
    r = llm_world.client.post("/v1/query", json={"question": q, "as_user": "pia"}, headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    _, user = _messages(fake_openai_server.last())
    assert "27 days" in user or "March" in user
    # pia reads public and people-ops: engineering and sales text never reaches the model
    for secret in ("on-call", "deploy freeze", "sales director", "15 percent"):
        assert secret not in user


def test_llm_streaming_yields_the_server_tokens_in_order(
    llm_world: LlmWorld, fake_openai_server: FakeOpenAIServer
) -> None:
    before = fake_openai_server.count()
    r = llm_world.client.post("/v1/query/stream", json={"question": QUESTION}, headers={"X-API-Key": KEY})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in r.text.split("\n\n"):
        data = [ln[5:].strip() for ln in block.splitlines() if ln.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "citations" and kinds[-1] == "done" and "error" not in kinds
    assert [e["text"] for e in events if e["type"] == "token"] == TOKENS
    done = events[-1]["answer"]
    assert done["mode"] == "llm" and done["answer"] == CANNED and not done["abstained"]
    assert [c["doc_id"] for c in done["citations"]] == [c["doc_id"] for c in events[0]["citations"]]
    assert fake_openai_server.count() == before + 1
    req = fake_openai_server.last()
    assert req["body"]["stream"] is True
    assert req["body"]["model"] == MODEL
    _, user = _messages(req)
    assert QUESTION in user and "[1]" in user


@pytest.mark.parametrize("endpoint", ["/v1/query", "/v1/query/stream"])
def test_llm_is_not_called_when_nothing_relevant_is_found(
    llm_world: LlmWorld, fake_openai_server: FakeOpenAIServer, endpoint: str
) -> None:
    before = fake_openai_server.count()
    r = llm_world.client.post(endpoint, json={"question": "What is the capital of Peru?"}, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    if endpoint.endswith("stream"):
        done = [json.loads(b.split("data:", 1)[1]) for b in r.text.split("\n\n") if "data:" in b][-1]
        assert done["type"] == "done"
        answer = done["answer"]
    else:
        answer = r.json()
    assert answer["abstained"] is True
    assert answer["answer"] == ABSTAIN_TEXT
    assert answer["citations"] == []
    assert answer["mode"] == "llm"
    assert fake_openai_server.count() == before


def test_llm_is_not_called_for_documents_outside_the_users_groups(
    llm_world: LlmWorld, fake_openai_server: FakeOpenAIServer
) -> None:
    """The answer is in the index, but only for sales: pia's question never reaches the model."""
    before = fake_openai_server.count()
    r = llm_world.client.post(
        "/v1/query", json={"question": "Who must approve a discount of 25 percent?"}, headers={"X-API-Key": KEY}
    )
    assert r.status_code == 200
    a = r.json()
    assert all(c["source"] != "discounts.md" for c in a["citations"])
    if a["abstained"]:
        assert fake_openai_server.count() == before
    else:  # something public was relevant enough; it must not carry sales text
        _, user = _messages(fake_openai_server.last())
        assert "sales director" not in user


def test_unknown_model_name_is_accepted_by_openailike(fake_openai_server: FakeOpenAIServer) -> None:
    from rag.answer import LLMGenerator
    from rag.models import Citation

    gen = LLMGenerator(model=MODEL, base_url=fake_openai_server.base_url, api_key="test", timeout_s=20)
    cite = Citation(n=1, source="a.md", title="A", score=0.9, text="Alpha text.", snippet="Alpha text.", doc_id="d")
    assert gen.generate("What is alpha?", [cite]) == CANNED
    assert list(gen.stream("What is alpha?", [cite])) == TOKENS
    assert fake_openai_server.last()["body"]["model"] == MODEL


def test_an_llm_that_finds_no_answer_in_the_sources_abstains_without_citations(
    llm_world: LlmWorld, fake_openai_server: FakeOpenAIServer
) -> None:
    """Retrieval found related chunks, but the model says they do not answer: abstained."""
    before = fake_openai_server.count()
    question = f"How many weeks of {DECLINED_TOPIC} do we get?"
    r = llm_world.client.post("/v1/query", json={"question": question}, headers={"X-API-Key": KEY})
    a = r.json()
    assert fake_openai_server.count() == before + 1  # the model was asked
    assert a["mode"] == "llm" and a["abstained"] is True
    assert a["answer"] == LLM_ABSTAIN and a["citations"] == []
