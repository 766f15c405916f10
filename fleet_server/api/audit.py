"""GET /api/v1/audit and GET /api/v1/cars/{vin}/audit: the trail, oldest first, paged by seq."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from fleet_server import audit
from fleet_server.api import schemas
from fleet_server.api.cars import _int
from fleet_server.api.context import service
from fleet_server.api.errors import NOT_FOUND, ApiError
from fleet_server.api.routing import Route
from fleet_server.auth import Role

MAX_LIMIT = 1000
MAX_SEQ = 2**62

_ENTRY = {
    "type": "object",
    "required": ["seq", "at", "actor", "action", "vins", "request_ids", "hash", "prev_hash"],
    "properties": {
        "seq": {"type": "integer"},
        "at": {"type": "string"},
        "actor": {"type": "string"},
        "action": {"type": "string"},
        "vins": {"type": "array", "items": {"type": "string"}},
        "request_ids": {"type": "array", "items": {"type": "string"}},
        "key_id": {"type": ["string", "null"]},
        "detail": {},
        "prev_hash": {"type": "string"},
        "hash": {"type": "string"},
    },
}
_PAGE = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {"type": "array", "items": _ENTRY},
        "next_after": {"type": ["integer", "null"]},
    },
}
_PARAMETERS = [
    {
        "name": "after",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
    },
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
]


async def _page(request: web.Request, vin: str | None) -> dict[str, Any]:
    after = _int(request.query, "after", 0, 0, MAX_SEQ)
    limit = _int(request.query, "limit", 100, 1, MAX_LIMIT)
    found = await asyncio.to_thread(
        audit.entries, service(request).db, vin=vin, after=after, limit=limit
    )
    next_after = found[-1].seq if len(found) == limit else None
    return {"items": [e.to_json() for e in found], "next_after": next_after}


async def fleet_audit(request: web.Request) -> web.Response:
    return web.json_response(await _page(request, None))


async def car_audit(request: web.Request) -> web.Response:
    vin = request.match_info["vin"]
    page = await _page(request, vin)
    # A car with entries is answered even if it left the inventory: the record outlives it.
    if not page["items"] and service(request).inventory.get(vin) is None:
        raise ApiError(404, NOT_FOUND, f"no car with VIN {vin!r} is known")
    return web.json_response(page)


ROUTES = [
    Route(
        "GET",
        "/api/v1/audit",
        fleet_audit,
        Role.VIEWER,
        {
            "summary": "The audit trail, oldest first; page with after=next_after",
            "parameters": _PARAMETERS,
            "responses": {
                "200": {"description": "entries", "content": schemas.json_content(_PAGE)},
                "400": schemas.error("bad paging"),
                **schemas.AUTH_ERRORS,
            },
        },
    ),
    Route(
        "GET",
        "/api/v1/cars/{vin}/audit",
        car_audit,
        Role.VIEWER,
        {
            "summary": "The audit entries naming one car (the software update record of "
            "UNECE R156 / ISO 24089)",
            "parameters": [schemas.VIN_PARAMETER, *_PARAMETERS],
            "responses": {
                "200": {"description": "entries", "content": schemas.json_content(_PAGE)},
                "400": schemas.error("bad paging"),
                **schemas.AUTH_ERRORS,
                "404": schemas.error("no car with this VIN is known, and none has entries"),
            },
        },
    ),
]
