"""The central HTTP service: one FastAPI app, each vertical mounted as a plugin.

Verticals register an entry point in the `loopline.api` group: a callable taking the
`AppContext` (the composition root, `shared.context`) and returning an `ApiPlugin` (router,
readiness check, stop, close). This module never imports a vertical; it only discovers
them. Authentication is declared once, in `shared.dependencies`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.auth import DeviceRegistry, KeyRegistry
from shared.cli import extra_for
from shared.config import Settings
from shared.context import WAITING_FOR, ApiPlugin, AppContext
from shared.metadata.store import MetadataStore
from shared.metrics import RequestMetricsMiddleware, metrics_router

log = logging.getLogger(__name__)
DEFAULT_BODY_BYTES = 1 << 20  # JSON requests; plugins that take uploads declare more

__all__ = ["ApiPlugin", "AppContext", "create_app", "discover_plugins"]

PluginFactory = Callable[[AppContext], ApiPlugin]
HTTP_METHODS = {"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"}


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


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadinessOut(BaseModel):
    """`/readyz`: the status, then each plugin's details under its name (e.g. `"rag": {"documents": 42}`)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "starting", "unready"]
    waiting_for: list[str] | None = Field(None, description="While starting: what the service still waits for.")
    error: str | None = Field(None, description="When unready: the kind of error a readiness check raised.")


async def allow_all_methods(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer to an HTTP error, except that a 405 lists in `Allow` every method of the path.

    The router answers 405 from the first route whose path matches, so its `Allow` names only that
    route's methods while other routes serve the same path with others. The methods are read from
    the app's OpenAPI schema, the contract clients see; a path it does not list keeps its `Allow`.
    """
    if exc.status_code == 405:
        methods = documented_methods(request.app.openapi(), request.url.path)
        if methods:
            exc = StarletteHTTPException(405, detail=exc.detail, headers={**(exc.headers or {}), "Allow": methods})
    return await http_exception_handler(request, exc)


def documented_methods(schema: dict, path: str) -> str:
    """The methods the OpenAPI `schema` documents for a concrete `path`, as an `Allow` value ("" if none)."""
    found: set[str] = set()
    for template, operations in schema.get("paths", {}).items():
        pieces = re.split(r"(\{[^}]+\})", template)
        if re.fullmatch("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in pieces), path):
            found |= {m.upper() for m in operations if m.upper() in HTTP_METHODS}
    return ", ".join(sorted(found))


def readiness(ctx: AppContext) -> tuple[int, dict]:
    """(status code, body) of `/readyz`: 200 ready; 503 while a plugin waits for something, or unready."""
    details: dict[str, dict] = {}
    waiting: list[str] = []
    try:
        for plugin in ctx.plugins:
            found = dict(plugin.ready())
            waiting += [f"{plugin.name}: {what}" for what in found.pop(WAITING_FOR, None) or []]
            details[plugin.name] = found
    except Exception as exc:  # a store that fails its check makes the service unready
        log.exception("readiness check failed")
        return 503, {"status": "unready", "error": type(exc).__name__}
    if waiting:
        return 503, {"status": "starting", "waiting_for": waiting, **details}
    return 200, {"status": "ready", **details}


def discover_plugins() -> list[PluginFactory]:
    found = []
    for ep in entry_points(group="loopline.api"):
        try:
            found.append(ep.load())
        except ImportError as exc:
            log.warning(
                "API plugin %s not loaded (%s); install its extra: loopline[%s]", ep.name, exc, extra_for(ep.name)
            )
    return found


def create_app(
    settings: Settings,
    *,
    plugins: Sequence[PluginFactory] | None = None,
    keys: KeyRegistry | None = None,
    devices: DeviceRegistry | None = None,
    metadata: MetadataStore | None = None,
    local_token: str | None = None,
    metrics: bool | None = None,
) -> FastAPI:
    """The app on one composition root; `metrics=False` (or LOOPLINE_METRICS_ENABLED=false) builds it
    without /metrics or recording. The keywords replace parts of the root (see `AppContext.build`)."""
    ctx = AppContext.build(
        settings, keys=keys, devices=devices, metadata=metadata, local_token=local_token, metrics=metrics
    )
    if not len(ctx.keys):
        log.warning(
            "no API keys configured (%s): only the local admin token can call the API",
            settings.resolved_api_keys_file,
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        ctx.start()
        yield
        ctx.close()

    app = FastAPI(
        title="loopline",
        version="0.1.0",
        description="Document Q&A over your groups' documents, with citations. Authenticate with `X-API-Key`.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_exception_handler(StarletteHTTPException, allow_all_methods)
    for factory in plugins if plugins is not None else discover_plugins():
        plugin = factory(ctx)
        ctx.plugins.append(plugin)
        app.include_router(plugin.router)
    body_limit = max([p.max_body_bytes for p in ctx.plugins] + [DEFAULT_BODY_BYTES]) + (1 << 20)  # + multipart framing
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    if ctx.metrics.enabled:  # outside the size limit: refused bodies are counted too
        app.add_middleware(RequestMetricsMiddleware, metrics=ctx.metrics)
        app.include_router(metrics_router(ctx.metrics, settings))

    @app.get("/healthz", tags=["ops"], summary="The process is up.")
    async def healthz() -> HealthOut:  # on the event loop: answers even when every worker thread is busy
        return HealthOut(status="ok")

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="The stores answer and what the first requests need is loaded; ready for traffic.",
        response_model=None,
        responses={
            200: {"model": ReadinessOut, "description": "Ready."},
            503: {
                "model": ReadinessOut,
                "description": "Starting (`waiting_for` says for what), or unready (a store does not answer).",
            },
        },
    )
    def readyz() -> JSONResponse:
        status, body = readiness(ctx)
        return JSONResponse(body, status_code=status)

    return app
