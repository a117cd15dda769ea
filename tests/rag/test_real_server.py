"""The API over a real socket: uvicorn serves `create_app` in a thread, httpx calls it.

TestClient skips the HTTP server, its lifespan handling and real multipart transport;
this one test goes through all of them, then shuts the server down cleanly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

import rag.api
from rag.samples import write_handbook
from shared.auth import KeyRegistry, UserEntry
from shared.server import create_app

ADA = "real-key-ada-0123456789"
ROOT = "real-key-root-0123456789"


@pytest.mark.slow
def test_real_uvicorn_server_end_to_end(make_service, tmp_path: Path) -> None:
    svc = make_service(home=tmp_path / "home")
    root = tmp_path / "handbook"
    for folder, groups in write_handbook(root).items():
        svc.ingest(root / folder, groups)
    closed = threading.Event()
    real_close = svc.close

    def close() -> None:
        closed.set()
        real_close()

    svc.close = close  # observe the lifespan closing the plugin on shutdown
    keys = KeyRegistry(
        [UserEntry(name="ada", key=ADA, groups=["engineering"]), UserEntry(name="root", key=ROOT, admin=True)]
    )
    app = create_app(svc.settings, plugins=[lambda ctx: rag.api.plugin(ctx, service=svc)], keys=keys)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="loopline-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            r = http.get("/healthz")
            assert r.status_code == 200 and r.json() == {"status": "ok"}
            r = http.get("/readyz")
            assert r.status_code == 200 and r.json()["rag"]["documents"] == svc.metadata.count_documents() > 0

            q = {"question": "When does the on-call rotation change?"}
            r = http.post("/v1/query", json=q)
            assert r.status_code == 401
            r = http.post("/v1/query", json=q, headers={"Authorization": f"Bearer {ADA}"})
            assert r.status_code == 200, r.text
            a = r.json()
            assert not a["abstained"] and a["citations"][0]["source"] == "on-call.md"
            assert "Monday" in a["answer"]

            doc = (
                b"# Ferry shuttle\n\nThe company ferry shuttle to the Bergen office leaves the fish market at 07:40.\n"
            )
            r = http.post(
                "/v1/documents",
                files={"file": ("ferry.md", doc, "text/markdown")},
                data={"groups": "engineering"},
                headers={"X-API-Key": ADA},
            )
            assert r.status_code == 403
            r = http.post(
                "/v1/documents",
                files={"file": ("ferry.md", doc, "text/markdown")},
                data={"groups": "engineering"},
                headers={"X-API-Key": ROOT},
            )
            assert r.status_code == 201, r.text
            uploaded = r.json()["document"]
            assert uploaded["groups"] == ["engineering"]
            assert uploaded["path"].endswith("/ferry.md") and uploaded["source"] == "uploads"
            assert (svc.settings.home / "uploads" / uploaded["path"]).read_bytes() == doc
            r = http.post(
                "/v1/query", json={"question": "When does the ferry shuttle leave?"}, headers={"X-API-Key": ADA}
            )
            assert r.status_code == 200
            assert uploaded["id"] in {c["doc_id"] for c in r.json()["citations"]}
            assert "07:40" in r.json()["answer"]

            with http.stream("POST", "/v1/query/stream", json=q, headers={"X-API-Key": ADA}) as s:
                assert s.status_code == 200
                assert s.headers["content-type"].startswith("text/event-stream")
                body = "".join(s.iter_text())
            assert body.startswith("event: citations") and "event: done" in body

            spec = http.get("/openapi.json")
            assert spec.status_code == 200
            assert {"/v1/query", "/v1/documents", "/v1/query/stream"} <= set(spec.json()["paths"])
            docs = http.get("/docs")
            assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert not closed.is_set()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive(), "uvicorn did not shut down"
    assert closed.is_set(), "shutting down did not close the service"
