"""The employees' page: `GET /` and its three static files, served by the API itself.

Hand-written HTML, CSS and JavaScript with no build step and no third-party assets, so it
works offline. The page holds no data: it signs in with an API key kept in the browser's
session storage and calls the same `/v1` routes as any client. The page and its assets need
no key (they contain nothing private) and go out with a Content-Security-Policy that allows
scripts, styles and connections from this origin only — no inline script or style.
What this module does not do: authenticate, or render any document (the browser does that,
as text).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from shared.context import ApiPlugin, AppContext

STATIC = Path(__file__).parent / "static"
ASSET_PREFIX = "/ui"
# The only files served: a fixed table, so no request path ever reaches the file system.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated each load, so a new version of the page is picked up at once
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get(ASSET_PREFIX + "/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, detail=f"no page asset '{name}'")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=SECURITY_HEADERS)


def plugin(ctx: AppContext) -> ApiPlugin:
    """Entry point of the `loopline.api` group (`web = "rag.web:plugin"`)."""
    return ApiPlugin(name="web", router=router)
