"""The dashboard's routes in fleet-server: the page, its files, login, logout, the live feed.

The page and its files are fleetctl's (fleetctl/dashboard/static), served unchanged; the
page learns from its first event that it talks to fleet-server (who is logged in, with which
role, the session's CSRF token, whether rollouts are served) and then shows what the role
may do. Everything it changes goes through the API (/api/v1/...) with the session cookie and
the CSRF token, so roles, audit and errors are the API's own.
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from aiohttp import web

import fleetctl.dashboard
from fleet_server import audit
from fleet_server.api.context import SERVICE_KEY, service
from fleet_server.api.routing import BROWSER_SESSIONS
from fleet_server.auth import Role
from fleet_server.db import Database
from fleet_server.service import Service
from fleet_server.web import csrf, sessions
from fleet_server.web.auth import CookieSessions
from fleet_server.web.feed import Change, Feed
from fleet_server.web.sessions import Session

STATIC = Path(fleetctl.dashboard.__file__).parent / "static"
KEEPALIVE_SECONDS = 15.0
ROLLOUTS_PATH = "/api/v1/rollouts"
MAX_TOKEN_FIELD = 512

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

FEED: web.AppKey[Feed] = web.AppKey("dashboard_feed", Feed)
SESSIONS: web.AppKey[CookieSessions] = web.AppKey("dashboard_sessions", CookieSessions)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _secured(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(SECURITY_HEADERS)
            raise
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    return wrapped


def _local(target: str | None) -> str:
    """A path on this server to return to after login; anything else goes to the fleet."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


async def _session(request: web.Request) -> Session | None:
    return await request.app[SESSIONS].session(request)


async def page(request: web.Request) -> web.StreamResponse:
    """The dashboard (``/``, ``/cars/<VIN>``, ``/rollouts``): the same page for each."""
    if await _session(request) is None:
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    return web.FileResponse(STATIC / "index.html")


def _login_page(next_path: str, error: str = "", status: int = 200) -> web.Response:
    message = f'<p class="login-error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Fleet dashboard</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/style.css">
</head>
<body class="login-page">
<header><h1>Fleet dashboard</h1></header>
<main class="login">
<form method="post" action="/login" class="login-form">
<h2>Log in with your API token</h2>
<p class="quiet">The token <code>fleet-server tokens create</code> printed. It is asked once:
the browser keeps a session for 12 hours, not the token.</p>
{message}
<label>Token <input type="password" name="token" id="token" autocomplete="off" required></label>
<input type="hidden" name="next" value="{html.escape(next_path)}">
<button type="submit" id="login">Log in</button>
</form>
</main>
</body>
</html>
"""
    return web.Response(text=body, content_type="text/html", status=status)


async def login_form(request: web.Request) -> web.StreamResponse:
    return _login_page(_local(request.query.get("next")))


def _audited_login(db: Database, token: str) -> tuple[str, Session] | None:
    made = sessions.create(db, token)
    if made is not None:
        with db.transaction() as tx:
            audit.append(tx, actor=made[1].identity.name, action="session.login")
    return made


async def login(request: web.Request) -> web.StreamResponse:
    # Login CSRF (another site logging the browser in as someone else) is refused too.
    if not csrf.same_origin(request):
        raise web.HTTPForbidden(text="cross-site requests are refused")
    form = await request.post()
    token = form.get("token")
    next_path = _local(str(form.get("next") or "/"))
    if not isinstance(token, str) or not token.strip() or len(token) > MAX_TOKEN_FIELD:
        return _login_page(next_path, "Enter a token.", 400)
    made = await asyncio.to_thread(_audited_login, service(request).db, token.strip())
    if made is None:
        return _login_page(next_path, "The token is unknown or revoked.", 401)
    session_id = made[0]
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(
        sessions.COOKIE,
        session_id,
        max_age=int(sessions.LIFETIME),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is not None:
        form = await request.post()
        if not csrf.same_origin(request) or not csrf.matches(
            session.csrf_token, csrf.sent_token(request, form)
        ):
            raise web.HTTPForbidden(text="the CSRF token is missing or wrong")
        db = service(request).db
        await asyncio.to_thread(sessions.end, db, request.cookies[sessions.COOKIE])
    response = web.HTTPSeeOther("/login")
    response.del_cookie(sessions.COOKIE, path="/")
    raise response


def _rollouts_served(app: web.Application) -> bool:
    """Whether a rollouts API is mounted (it comes from its own part of the server)."""
    return any(
        getattr(resource, "canonical", None) == ROLLOUTS_PATH for resource in app.router.resources()
    )


def session_view(request: web.Request, session: Session) -> Change:
    who = session.identity
    return {
        "user": who.name,
        "role": who.role.label,
        "operator": who.allows(Role.OPERATOR),
        "csrf": session.csrf_token,
        "rollouts": _rollouts_served(request.app),
    }


async def events(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is None:
        raise web.HTTPUnauthorized(text="log in first: /login")
    feed = request.app[FEED]
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    queue = feed.listen(session_view(request, session))
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if item.get("t") == "close":
                break
            await response.write(b"data: " + web_json(item) + b"\n\n")
    except ConnectionResetError:
        pass
    finally:
        feed.leave(queue)
    return response


def web_json(item: Change) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode()


def mount(app: web.Application) -> None:
    """Adds the dashboard to fleet-server's application (api/app.py make_app's ``extra``)."""
    svc: Service = app[SERVICE_KEY]
    sessions_ = CookieSessions(svc.db)
    feed = Feed(svc)
    app[SESSIONS] = sessions_
    app[BROWSER_SESSIONS] = sessions_
    app[FEED] = feed
    for path in ("/", "/cars/{vin:.+}", "/rollouts"):
        app.router.add_get(path, _secured(page))
    app.router.add_get("/login", _secured(login_form))
    app.router.add_post("/login", _secured(login))
    app.router.add_post("/logout", _secured(logout))
    app.router.add_get("/events", _secured(events))
    app.router.add_static("/static/", STATIC, append_version=False)

    async def start(app: web.Application) -> None:
        await feed.start()

    async def close_pages(app: web.Application) -> None:
        feed.close_pages()  # open event streams end now, not after the shutdown grace

    async def stop(app: web.Application) -> None:
        await feed.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(close_pages)
    app.on_cleanup.append(stop)
