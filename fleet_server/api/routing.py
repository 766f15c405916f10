"""Routes as data: method, path, handler, the role it needs and its OpenAPI description.

Each API module exports ``ROUTES``; app.py mounts them and openapi.py documents the same
list, so the document cannot drift from what is served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from fleet_server.api.context import service
from fleet_server.api.errors import FORBIDDEN, UNAUTHENTICATED, ApiError
from fleet_server.auth import Identity, Role, authenticate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)


class BrowserSessions(Protocol):
    """Who a request without an Authorization header is, by its session cookie (the
    dashboard's login, fleet_server/web). Raises ApiError when a change lacks its CSRF token."""

    async def identify(self, request: web.Request) -> Identity | None: ...


BROWSER_SESSIONS: web.AppKey[BrowserSessions] = web.AppKey("browser_sessions")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    role: Role | None
    """None: no token needed (health, metrics, the OpenAPI document)."""
    doc: dict[str, Any] = field(default_factory=dict)
    """The OpenAPI operation object (summary, parameters, requestBody, responses)."""


def identity(request: web.Request) -> Identity:
    found: Identity = request[IDENTITY]
    return found


def guarded(route: Route) -> Handler:
    """The route's handler behind its role check: 401 without a valid token, 403 below the role."""
    needed = route.role
    handler = route.handler
    if needed is None:
        return handler

    async def check(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        sessions = request.app.get(BROWSER_SESSIONS)
        if header is None and sessions is not None and (who := await sessions.identify(request)):
            pass  # the dashboard's page, by its session cookie (and CSRF token)
        else:
            scheme, _, token = (header or "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(
                    401, UNAUTHENTICATED, "an API token is needed: Authorization: Bearer <token>"
                )
            db = service(request).db
            found = await asyncio.to_thread(authenticate, db, token.strip())
            if found is None:
                raise ApiError(401, UNAUTHENTICATED, "the token is unknown or revoked")
            who = found
        if not who.allows(needed):
            raise ApiError(
                403,
                FORBIDDEN,
                f"the token {who.name!r} has role {who.role.label}; this needs {needed.label}",
            )
        request[IDENTITY] = who
        return await handler(request)

    return check
