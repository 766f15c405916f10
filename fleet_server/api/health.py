"""/healthz (the process answers) and /readyz (database, broker, retained topics read)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from fleet_server.api.context import service
from fleet_server.api.routing import Route
from fleet_server.db import DatabaseError
from fleet_server.metrics import CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = service(request)
    try:
        await asyncio.wait_for(asyncio.to_thread(svc.db.ping), 5)
        database = True
    except (DatabaseError, TimeoutError):
        database = False
    checks = {
        "database": database,
        "broker": svc.link.connected,
        "inventory": svc.synced and svc.inventory.loaded,
    }
    ready = all(checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(service(request).metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


_STATUS = {
    "type": "object",
    "properties": {"status": {"type": "string"}},
}
_READY = {
    "type": "object",
    "required": ["ready", "checks"],
    "properties": {
        "ready": {"type": "boolean"},
        "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}

ROUTES = [
    Route(
        "GET",
        "/healthz",
        healthz,
        None,
        {
            "summary": "The process is alive",
            "responses": {
                "200": {
                    "description": "alive",
                    "content": {"application/json": {"schema": _STATUS}},
                }
            },
        },
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        None,
        {
            "summary": "Ready: database reachable, broker connected, retained topics read",
            "responses": {
                "200": {
                    "description": "ready",
                    "content": {"application/json": {"schema": _READY}},
                },
                "503": {
                    "description": "not ready; checks say what is missing",
                    "content": {"application/json": {"schema": _READY}},
                },
            },
        },
    ),
]

METRICS_ROUTE = Route(
    "GET",
    "/metrics",
    metrics,
    None,
    {
        "summary": "Prometheus metrics (no token needed)",
        "responses": {
            "200": {
                "description": "metrics",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    },
)
