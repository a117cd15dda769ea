"""The central app's guards: key comparison, body size before auth, readiness errors."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.testclient import TestClient

from shared.auth import KeyRegistry, UserEntry
from shared.config import Settings
from shared.dependencies import require_user
from shared.server import ApiPlugin, AppContext, create_app


def _app(tmp_path: Path, *, ready=lambda: {}) -> TestClient:  # noqa: ANN001
    def plugin(ctx: AppContext) -> ApiPlugin:
        router = APIRouter()

        @router.post("/v1/echo")
        async def echo(request: Request, who=Depends(require_user)) -> dict:  # noqa: ANN001
            return {"user": who.name, "bytes": len(await request.body())}

        return ApiPlugin(name="echo", router=router, ready=ready)

    settings = Settings(home=tmp_path, upload_max_bytes=1000, frame_max_bytes=1000)
    keys = KeyRegistry([UserEntry(name="ada", key="ada-key-123456")])
    return TestClient(create_app(settings, plugins=[plugin], keys=keys, local_token="local-token-xyz", metrics=False))


def test_a_non_ascii_key_is_refused_not_a_crash(tmp_path: Path) -> None:
    client = _app(tmp_path)
    r = client.post("/v1/echo", headers={"X-API-Key": "café".encode("latin-1")}, content=b"{}")
    assert r.status_code == 401
    assert (
        client.post("/v1/echo", headers={"X-API-Key": "local-token-xyz"}, content=b"{}").json()["user"] == "local-admin"
    )


def test_an_oversized_body_is_refused_before_it_is_read(tmp_path: Path) -> None:
    client = _app(tmp_path)
    big = b"x" * (3 << 20)
    r = client.post("/v1/echo", content=big)  # no key at all: the size is refused first
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    ok = client.post("/v1/echo", headers={"X-API-Key": "ada-key-123456"}, content=b"x" * 500)
    assert ok.status_code == 200 and ok.json()["bytes"] == 500


def test_readiness_failure_does_not_leak_the_error_text(tmp_path: Path) -> None:
    def broken() -> dict:
        raise RuntimeError("postgresql://admin:secret@db.internal/prod unreachable")

    r = _app(tmp_path, ready=broken).get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"status": "unready", "error": "RuntimeError"}
