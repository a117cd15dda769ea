"""The central HTTP service: one FastAPI app, each vertical mounted as a plugin.

Verticals register an entry point in the `loopline.api` group: a callable taking the
`AppContext` and returning an `ApiPlugin` (router, readiness check, close). This module
never imports a vertical; it only discovers them. Authentication lives here: API keys
from the keys file, plus the local admin token of `service.json` for the CLI hand-off.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from shared.auth import KeyRegistry, Principal
from shared.config import Settings
from shared.metrics import RequestMetricsMiddleware, ServiceMetrics, metrics_router

log = logging.getLogger(__name__)
LOCAL_ADMIN = "local-admin"


@dataclass
class ApiPlugin:
    name: str
    router: APIRouter
    ready: Callable[[], dict] = lambda: {}
    close: Callable[[], None] = lambda: None
    stop: Callable[[], None] = lambda: None  # abandon long work at once (SIGTERM); close follows


@dataclass
class AppContext:
    settings: Settings
    keys: KeyRegistry
    local_token: str | None = None
    plugins: list[ApiPlugin] = field(default_factory=list)
    metrics: ServiceMetrics = field(default_factory=lambda: ServiceMetrics(enabled=False))

    def stop(self) -> None:
        """The service is shutting down: every plugin abandons its long work now."""
        for plugin in self.plugins:
            try:
                plugin.stop()
            except Exception:
                log.exception("stopping plugin %s failed", plugin.name)

    def authenticate(self, request: Request) -> Principal:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if key and self.local_token and hmac.compare_digest(key.encode(), self.local_token.encode()):
            return Principal(name=LOCAL_ADMIN, admin=True, local=True)
        who = self.keys.authenticate(key)
        if who is None:
            raise HTTPException(
                status_code=401,
                detail="missing or unknown API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return who


PluginFactory = Callable[[AppContext], ApiPlugin]


class BodySizeLimit:
    """Refuse a request whose declared body is over the limit before anything reads it.

    FastAPI parses (and spools) a body before auth dependencies run, so without this an
    anonymous client could make the server write any amount to disk. Bodies sent without a
    Content-Length are bounded by the handlers' own limits.
    """

    def __init__(self, app, max_bytes: int) -> None:  # noqa: ANN001
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                    response = JSONResponse(
                        {"detail": f"request body is over the limit of {self.max_bytes:,} bytes"}, status_code=413
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def discover_plugins() -> list[PluginFactory]:
    found = []
    for ep in entry_points(group="loopline.api"):
        try:
            found.append(ep.load())
        except ImportError as exc:
            log.warning("API plugin %s not loaded (%s); install its extra, e.g. loopline[%s]", ep.name, exc, ep.name)
    return found


def create_app(
    settings: Settings,
    *,
    plugins: Sequence[PluginFactory] | None = None,
    keys: KeyRegistry | None = None,
    local_token: str | None = None,
    metrics: bool | None = None,
) -> FastAPI:
    """The app; `metrics=False` (or LOOPLINE_METRICS_ENABLED=false) builds it without /metrics or recording."""
    ctx = AppContext(
        settings=settings,
        keys=keys if keys is not None else KeyRegistry.from_file(settings.resolved_api_keys_file),
        local_token=local_token,
        metrics=ServiceMetrics.for_settings(settings, enabled=metrics),
    )
    if not len(ctx.keys):
        log.warning(
            "no API keys configured (%s): only the local admin token can call the API",
            settings.resolved_api_keys_file,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        ctx.stop()
        for plugin in ctx.plugins:
            try:
                plugin.close()
            except Exception:
                log.exception("closing plugin %s failed", plugin.name)
        ctx.metrics.close()

    app = FastAPI(
        title="loopline",
        version="0.1.0",
        description="Document Q&A over your groups' documents, with citations. Authenticate with `X-API-Key`.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    body_limit = max(settings.upload_max_bytes, settings.frame_max_bytes) + (1 << 20)  # + multipart framing
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    if ctx.metrics.enabled:
        app.add_middleware(RequestMetricsMiddleware, metrics=ctx.metrics)
        app.include_router(metrics_router(ctx.metrics, settings))
    for factory in plugins if plugins is not None else discover_plugins():
        plugin = factory(ctx)
        ctx.plugins.append(plugin)
        app.include_router(plugin.router)

    @app.get("/healthz", tags=["ops"], summary="The process is up.")
    async def healthz() -> dict:  # on the event loop: answers even when every worker thread is busy
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="The stores answer; ready for traffic.")
    def readyz():
        details = {}
        try:
            for plugin in ctx.plugins:
                details[plugin.name] = plugin.ready()
        except Exception as exc:  # a store that fails its check makes the service unready
            log.exception("readiness check failed")
            return JSONResponse({"status": "unready", "error": type(exc).__name__}, status_code=503)
        return {"status": "ready", **details}

    return app
