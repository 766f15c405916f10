"""The dashboard's HTTP side (aiohttp): the page, its files, and two event streams.

``/events`` sends the fleet model once and then batches of changes (server-sent events);
``/logs`` sends one workload's log tail. Every response carries a Content-Security-Policy
that allows only this server's own script and style, so even a value that slipped into the
page as markup could not run.

Who may use it: whoever has the address the dashboard printed, which holds a token made at
start (``/?token=...``). Opening it sets the token as a cookie (HttpOnly, SameSite=Strict)
and leads to the page; the page, ``/events`` and ``/logs`` need that cookie. So another
user of the same machine, who can reach 127.0.0.1 but not the operator's terminal, can
neither see the fleet nor ask cars for logs under the operator's MQTT identity; and another
site's page cannot either (Host and Sec-Fetch-Site checks, and the cookie is not sent).

A stream is written in pieces of at most ``WRITE_CHUNK`` bytes, each awaited until the
connection took it, so a client that does not read holds back only that much of the
dashboard's memory; one that has taken nothing for ``STALL_SECONDS`` is cut off (a browser
reconnects by itself and gets the model again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from fleetctl.client.connection import BrokerError
from fleetctl.dashboard import WILDCARDS
from fleetctl.dashboard.feed import Feed, Page, PageItem, Resync, TooManyPages, encode
from fleetctl.dashboard.logs import LogRequestError, TooManyTails

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# A comment line this often keeps proxies from closing a quiet stream and tells us when the
# page has gone.
KEEPALIVE_SECONDS = 15.0
SHUTDOWN_SECONDS = 0.5
# A car that does not start answering a log request within this long is reported as such.
LOG_ANSWER_SECONDS = 10.0
WRITE_CHUNK = 64 * 1024
STALL_SECONDS = 30.0

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Access:
    """Who the dashboard answers: the Host headers it accepts (known once the port is
    bound; until then, none) and the token its cookie must hold."""

    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    allowed: frozenset[str] = frozenset()
    cookie: str = "fleetctl_dashboard"

    def bound(self, allowed: frozenset[str], port: int) -> None:
        self.allowed = allowed
        # Cookies are not kept apart by port: each dashboard of the machine has its own.
        self.cookie = f"fleetctl_dashboard_{port}"

    def holds_token(self, request: web.Request) -> bool:
        given = request.cookies.get(self.cookie, "")
        return hmac.compare_digest(given.encode(), self.token.encode())


FEED: web.AppKey[Feed] = web.AppKey("feed", Feed)
ACCESS: web.AppKey[Access] = web.AppKey("access", Access)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    # A page of another site that resolves its name to the dashboard's address (DNS
    # rebinding) sends its own Host; and no other site may start log requests.
    if request.host not in access.allowed:
        raise web.HTTPForbidden(text="unexpected Host header", headers=SECURITY_HEADERS)
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise web.HTTPForbidden(text="cross-site requests are refused", headers=SECURITY_HEADERS)
    if not request.path.startswith("/static/") and not access.holds_token(request):
        given = request.query.get("token", "")
        if request.path == "/" and hmac.compare_digest(given.encode(), access.token.encode()):
            # The printed address: the token becomes the cookie, and leaves the address bar.
            found = web.HTTPSeeOther("/", headers=SECURITY_HEADERS)
            found.set_cookie(
                access.cookie, access.token, httponly=True, samesite="Strict", path="/"
            )
            raise found
        raise web.HTTPUnauthorized(
            text="open the address fleetctl dashboard printed: it holds the token",
            headers=SECURITY_HEADERS,
        )
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


class Stalled(Exception):
    """The client took nothing for STALL_SECONDS."""


async def _send(response: web.StreamResponse, data: bytes) -> None:
    """Writes ``data`` piece by piece, each piece once the client has taken the last."""
    view = memoryview(data)
    for start in range(0, len(view), WRITE_CHUNK):
        try:
            # aiohttp waits for the transport to drain once a piece fills its buffer.
            await asyncio.wait_for(response.write(view[start : start + WRITE_CHUNK]), STALL_SECONDS)
        except TimeoutError:
            raise Stalled from None


async def _send_model(response: web.StreamResponse, feed: Feed, resync: Resync) -> None:
    """The snapshot event, encoded car by car as the client takes it: never the whole model
    at once. Cars changed meanwhile are sent as they are now, and their changes follow in
    the page's queue; applying those again changes nothing."""
    piece = bytearray(b'data: {"t":"snapshot","cars":[')
    for number, car in enumerate(resync.cars):
        if number:
            piece += b","
        piece += json.dumps(car.to_dict(), separators=(",", ":")).encode()
        if len(piece) >= WRITE_CHUNK:
            await _send(response, bytes(piece))
            piece.clear()
    tail = {"outcomes": resync.outcomes, "broker": feed.broker_up}
    piece += b"]," + json.dumps(tail, separators=(",", ":")).encode()[1:] + b"\n\n"
    await _send(response, bytes(piece))


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def events(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    try:
        page: Page = feed.listen()
    except TooManyPages as e:
        raise web.HTTPServiceUnavailable(text=f"{e}; close one and reload") from None
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
    # One getter at a time, never cancelled for a keepalive: a batch is never lost.
    getter: asyncio.Future[PageItem] | None = None
    try:
        await response.prepare(request)
        while True:
            if getter is None:
                getter = asyncio.ensure_future(page.next())
            done, _ = await asyncio.wait({getter}, timeout=KEEPALIVE_SECONDS)
            if not done:
                await _send(response, b": keepalive\n\n")
                continue
            item, getter = getter.result(), None
            if isinstance(item, Resync):
                await _send_model(response, feed, item)
            else:
                await _send(response, item)
    except (ConnectionError, Stalled):
        pass
    finally:
        if getter is not None:
            getter.cancel()
        feed.leave(page)
    return response


async def logs(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    query = request.query
    try:
        tail = int(query.get("tail", "100"))
    except ValueError:
        raise web.HTTPBadRequest(text="tail must be a whole number") from None
    try:
        session = feed.logs.open(
            query.get("vin", ""), query.get("workload", ""), tail, query.get("follow") == "1"
        )
    except LogRequestError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    except TooManyTails as e:
        raise web.HTTPServiceUnavailable(text=f"{e}; close one and try again") from None
    except BrokerError as e:
        raise web.HTTPServiceUnavailable(text=str(e)) from None
    response = await _stream(request)
    answered = False
    try:
        while True:
            wait = KEEPALIVE_SECONDS if answered else LOG_ANSWER_SECONDS
            try:
                event = await asyncio.wait_for(session.events.get(), wait)
            except TimeoutError:
                if not answered:
                    await _send(response, encode({"error": "the car did not answer"}))
                    break
                await _send(response, b": keepalive\n\n")
                continue
            answered = True
            await _send(response, encode(event))
            if "end" in event or "error" in event:
                break
    except (ConnectionError, Stalled):
        pass
    finally:
        feed.logs.close(session)
    return response


def allowed_hosts(host: str, port: int, extra: Sequence[str] = ()) -> frozenset[str]:
    """The Host headers the dashboard answers: its loopback names, the address it listens
    on (unless that is every address) and the names given with --allow-host. Whatever the
    address, so that DNS rebinding cannot read the fleet from a dashboard on 0.0.0.0."""
    names = {"localhost", "127.0.0.1", "[::1]", *extra}
    if host not in WILDCARDS:
        names.add(host)
    allowed = set()
    for name in names:
        shown = f"[{name}]" if ":" in name and not name.startswith("[") else name
        allowed.add(f"{shown}:{port}")
        if port == 80:  # browsers leave out the default port
            allowed.add(shown)
    return frozenset(allowed)


def make_app(feed: Feed, access: Access) -> web.Application:
    app = web.Application(middlewares=[_guard])
    app[FEED] = feed
    app[ACCESS] = access
    app.router.add_get("/", index)
    app.router.add_get("/events", events)
    app.router.add_get("/logs", logs)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app


async def serve(
    feed: Feed,
    host: str,
    port: int,
    *,
    connect_timeout: float,
    on_ready: Callable[[str], None],
    stop: asyncio.Event,
    allow_hosts: Sequence[str] = (),
) -> None:
    """Connects to the broker, serves until ``stop`` is set, then closes both."""
    await feed.start(connect_timeout)
    runner: web.AppRunner | None = None
    try:
        # Until the site is bound we do not know the port it got (--port 0): until then
        # every Host is refused.
        access = Access()
        # Pages keep their event streams open for ever: on stop they are cut after
        # SHUTDOWN_SECONDS instead of aiohttp's minute of grace.
        runner = web.AppRunner(
            make_app(feed, access),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner, port)
        access.bound(allowed_hosts(host, bound, allow_hosts), bound)
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{bound}/?token={access.token}")
        await stop.wait()
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        feed.stop()


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default
