"""FastAPI dependencies, declared once: the app context, the caller, admins, devices.

Routers list them as parameters (`who: Principal = Depends(require_user)`); they read the
composition root from `request.app.state.ctx`, so routes stay flat module-level functions
and tests build apps with real local instances instead of overriding globals.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request

from shared.auth import Device, Principal, local_admin, request_secret
from shared.context import AppContext

UNAUTHENTICATED = {
    401: {"description": "Missing or unknown API key (send `X-API-Key: KEY` or `Authorization: Bearer KEY`)."}
}
ADMIN_ONLY = UNAUTHENTICATED | {403: {"description": "The caller is not an admin."}}
DEVICE_ONLY = {401: {"description": "Missing or unknown device token (`Authorization: Bearer TOKEN`)."}}


def app_context(request: Request) -> AppContext:
    return request.app.state.ctx


def require_user(request: Request) -> Principal:
    """The caller, from their API key (or the local admin token of the CLI hand-off); 401 otherwise."""
    ctx = app_context(request)
    secret = request_secret(request.headers)
    if secret and ctx.local_token and hmac.compare_digest(secret.encode(), ctx.local_token.encode()):
        return local_admin()
    who = ctx.keys.authenticate(secret)
    if who is None:
        raise HTTPException(
            status_code=401,
            detail="missing or unknown API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


def require_admin(who: Principal = Depends(require_user)) -> Principal:
    if not who.admin:
        raise HTTPException(403, detail=f"user '{who.name}' is not an admin; this is for admins")
    return who


def require_device(request: Request) -> Device:
    """The device whose token this is; 401 otherwise. A device only ever acts as itself."""
    found = app_context(request).devices.authenticate(request_secret(request.headers))
    if found is None:
        raise HTTPException(
            401,
            detail="missing or unknown device token (Authorization: Bearer TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found
