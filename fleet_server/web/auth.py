"""Who a browser is: its session cookie, and for changes the session's CSRF token."""

from __future__ import annotations

import asyncio

from aiohttp import web

from fleet_server.api.errors import FORBIDDEN, ApiError
from fleet_server.auth import Identity
from fleet_server.db import Database
from fleet_server.web import csrf, sessions
from fleet_server.web.sessions import Session

SESSION: web.RequestKey[Session | None] = web.RequestKey("web_session", object)  # type: ignore[arg-type]


class CookieSessions:
    """The dashboard's sessions, for the page routes and for the API (routing.BrowserSessions)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def session(self, request: web.Request) -> Session | None:
        """The request's session (looked up once per request), or None."""
        if SESSION in request:
            return request[SESSION]
        session_id = request.cookies.get(sessions.COOKIE)
        found = None
        if session_id:
            found = await asyncio.to_thread(sessions.lookup, self.db, session_id)
        request[SESSION] = found
        return found

    async def identify(self, request: web.Request) -> Identity | None:
        found = await self.session(request)
        if found is None:
            return None
        if csrf.needed(request):
            if not csrf.same_origin(request):
                raise ApiError(403, FORBIDDEN, "cross-site requests are refused")
            if not csrf.matches(found.csrf_token, csrf.sent_token(request)):
                raise ApiError(
                    403,
                    FORBIDDEN,
                    f"the CSRF token is missing or wrong: send the session's in {csrf.HEADER}",
                )
        return found.identity
