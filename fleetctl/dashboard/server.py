"""The dashboard's HTTP side (aiohttp): the page, its files, and two event streams.

``/events`` sends the fleet model once and then batches of changes (server-sent events);
``/logs`` sends one workload's log tail. Every response carries a Content-Security-Policy
that allows only this server's own script and style, so even a value that slipped into the
page as markup could not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from fleetctl.client.connection import BrokerError
from fleetctl.dashboard import is_loopback
from fleetctl.dashboard.feed import Feed
from fleetctl.dashboard.logs import LogRequestError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# A comment line this often keeps proxies from closing a quiet stream and tells us when the
# page has gone.
KEEPALIVE_SECONDS = 15.0
SHUTDOWN_SECONDS = 0.5
# A car that does not start answering a log request within this long is reported as such.
LOG_ANSWER_SECONDS = 10.0

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
class HostCheck:
    """The Host headers the dashboard answers (None: any); known once the port is bound."""

    allowed: frozenset[str] | None = None


FEED: web.AppKey[Feed] = web.AppKey("feed", Feed)
HOSTS: web.AppKey[HostCheck] = web.AppKey("hosts", HostCheck)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    allowed = request.app[HOSTS].allowed
    # On loopback, a page of another site that resolves its name to 127.0.0.1 (DNS
    # rebinding) sends its own Host; and no other site may start log requests.
    if allowed is not None and request.host not in allowed:
        raise web.HTTPForbidden(text="unexpected Host header")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        raise web.HTTPForbidden(text="cross-site requests are refused")
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


def _encode(item: Any) -> bytes:
    return b"data: " + json.dumps(item, separators=(",", ":")).encode() + b"\n\n"


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def events(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    response = await _stream(request)
    page = feed.listen()
    try:
        while True:
            try:
                item = await asyncio.wait_for(page.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            await response.write(_encode(item))
    except ConnectionResetError:
        pass
    finally:
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
                    await response.write(_encode({"error": "the car did not answer"}))
                    break
                await response.write(b": keepalive\n\n")
                continue
            answered = True
            await response.write(_encode(event))
            if "end" in event or "error" in event:
                break
    except ConnectionResetError:
        pass
    finally:
        feed.logs.close(session)
    return response


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The Host headers a loopback dashboard answers; None (any) on other addresses."""
    if not is_loopback(host):
        return None
    names = {host, "localhost", "127.0.0.1", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


def make_app(feed: Feed, hosts: HostCheck) -> web.Application:
    app = web.Application(middlewares=[_guard])
    app[FEED] = feed
    app[HOSTS] = hosts
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
) -> None:
    """Connects to the broker, serves until ``stop`` is set, then closes both."""
    await feed.start(connect_timeout)
    runner: web.AppRunner | None = None
    try:
        # Until the site is bound we do not know the port it got (--port 0).
        # Refuses every Host on loopback until the port is known (--port 0).
        hosts = HostCheck(allowed_hosts(host, port))
        # Pages keep their event streams open for ever: on stop they are cut after
        # SHUTDOWN_SECONDS instead of aiohttp's minute of grace.
        runner = web.AppRunner(
            make_app(feed, hosts),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner, port)
        hosts.allowed = allowed_hosts(host, bound)
        shown = f"[{host}]" if ":" in host else host
        on_ready(f"http://{shown}:{bound}/")
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
