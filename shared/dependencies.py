"""FastAPI dependencies, declared once: the app context, the caller, admins, devices.

Routers list them as parameters (`who: Principal = Depends(require_user)`); they read the
composition root from `request.app.state.ctx`, so routes stay flat module-level functions
and tests build apps with real local instances instead of overriding globals.

Also here, the error answers routes document in `responses=` (`error(...)`, `UNAUTHENTICATED`,
`WITH_BODY`, …): every status a route can answer is in the OpenAPI schema, with its body.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel

from shared.auth import Device, Principal, local_admin, request_secret
from shared.context import AppContext


class ErrorOut(BaseModel):
    """Every error answer: what went wrong and, where there is one, what to do about it."""

    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class InvalidRequestOut(BaseModel):
    """A 422: the fields that failed validation, or one sentence naming the field and the fix."""

    detail: str | list[FieldError]


def error(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of an error answer (`{"detail": "…"}`), for a route's `responses=`."""
    model = InvalidRequestOut if status == 422 else ErrorOut
    return {status: {"model": model, "description": description}}


UNAUTHENTICATED = error(401, "Missing or unknown API key (send `X-API-Key: KEY` or `Authorization: Bearer KEY`).")
ADMIN_ONLY = UNAUTHENTICATED | error(403, "The caller is not an admin.")
DEVICE_ONLY = error(401, "Missing or unknown device token (`Authorization: Bearer TOKEN`).")
# Every route with a body: 400 for a body that cannot be parsed, 413 for one over the service's limit
# (the server's middleware, before anything reads it), 422 for one that fails validation.
WITH_BODY = (
    error(400, "The body could not be parsed (not JSON, or not multipart/form-data).")
    | error(413, "The body is over the service's limit.")
    | error(422, "The body or a parameter failed validation.")
)


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
