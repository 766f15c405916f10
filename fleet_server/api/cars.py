"""GET /api/v1/cars, GET /api/v1/cars/{vin}, PATCH /api/v1/cars/{vin}/labels."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from fleet_server import audit
from fleet_server.api import schemas
from fleet_server.api.context import service
from fleet_server.api.errors import INVALID_REQUEST, NOT_FOUND, ApiError, json_body
from fleet_server.api.routing import Route, identity
from fleet_server.api.views import detail, summary
from fleet_server.auth import Role
from fleet_server.db import Database
from fleet_server.inventory.cache import Car
from fleet_server.inventory.store import set_labels
from fleet_server.selectors import LabelError, SelectorError, check_key, check_value, parse

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_OFFSET = 2**31
MAX_LABELS_PER_PATCH = 64


def known_car(request: web.Request) -> Car:
    vin = request.match_info["vin"]
    car = service(request).inventory.get(vin)
    if car is None:
        raise ApiError(404, NOT_FOUND, f"no car with VIN {vin!r} is known")
    return car


def _int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, INVALID_REQUEST, f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, INVALID_REQUEST, f"{name} must be from {low} to {high}")
    return value


async def list_cars(request: web.Request) -> web.Response:
    query = request.query
    try:
        selector = parse(query.get("selector", ""))
    except SelectorError as e:
        raise ApiError(400, INVALID_REQUEST, f"selector: {e}") from None
    online_text = query.get("online")
    if online_text not in (None, "true", "false"):
        raise ApiError(400, INVALID_REQUEST, "online must be true or false")
    online = None if online_text is None else online_text == "true"
    limit = _int(query, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    offset = _int(query, "offset", 0, 0, MAX_OFFSET)
    cars = service(request).inventory.select(selector, online)
    items = [summary(car) for car in cars[offset : offset + limit]]
    return web.json_response({"items": items, "total": len(cars)})


async def get_car(request: web.Request) -> web.Response:
    return web.json_response(detail(known_car(request)))


def _label_changes(body: object) -> dict[str, str | None]:
    if not isinstance(body, dict):
        raise ApiError(
            400, INVALID_REQUEST, "the body is a JSON object of labels (null removes one)"
        )
    if len(body) > MAX_LABELS_PER_PATCH:
        raise ApiError(400, INVALID_REQUEST, f"at most {MAX_LABELS_PER_PATCH} labels at once")
    changes: dict[str, str | None] = {}
    for key, value in body.items():
        if value is not None and not isinstance(value, str):
            raise ApiError(400, INVALID_REQUEST, f"label {key!r}: the value is a string or null")
        try:
            check_key(key)
            if value is not None:
                check_value(key, value)
        except LabelError as e:
            raise ApiError(400, INVALID_REQUEST, str(e)) from None
        changes[key] = value
    return changes


def _write_labels(db: Database, vin: str, changes: dict[str, str | None], actor: str) -> bool:
    with db.transaction() as tx:
        if not set_labels(tx, vin, changes):
            return False
        audit.append(tx, actor=actor, action="car.labels", vins=[vin], detail={"labels": changes})
    return True


async def patch_labels(request: web.Request) -> web.Response:
    car = known_car(request)
    changes = _label_changes(await json_body(request))
    svc = service(request)
    found = await asyncio.to_thread(_write_labels, svc.db, car.vin, changes, identity(request).name)
    if not found:
        raise ApiError(404, NOT_FOUND, f"no car with VIN {car.vin!r} is known")
    await svc.poll()  # the answer shows the change
    updated = svc.inventory.get(car.vin) or car
    return web.json_response(detail(updated))


_NOT_FOUND = {"404": schemas.error("no car with this VIN is known")}

ROUTES = [
    Route(
        "GET",
        "/api/v1/cars",
        list_cars,
        Role.VIEWER,
        {
            "summary": "Cars, in VIN order, optionally chosen by labels and presence",
            "parameters": [
                {
                    "name": "selector",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "Kubernetes label selector, e.g. region=eu,model in (a,b),!beta",
                },
                {
                    "name": "online",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                },
            ],
            "responses": {
                "200": {
                    "description": "the page of cars and how many match in all",
                    "content": schemas.json_content(
                        {
                            "type": "object",
                            "required": ["items", "total"],
                            "properties": {
                                "items": {"type": "array", "items": schemas.CAR},
                                "total": {"type": "integer"},
                            },
                        }
                    ),
                },
                "400": schemas.error(
                    "a selector that does not parse (the message says where), bad paging"
                ),
                **schemas.AUTH_ERRORS,
            },
        },
    ),
    Route(
        "GET",
        "/api/v1/cars/{vin}",
        get_car,
        Role.VIEWER,
        {
            "summary": "One car: presence, labels, workloads, agents, drift, last outcome",
            "parameters": [schemas.VIN_PARAMETER],
            "responses": {
                "200": {
                    "description": "the car",
                    "content": schemas.json_content(schemas.CAR_DETAIL),
                },
                **_NOT_FOUND,
                **schemas.AUTH_ERRORS,
            },
        },
    ),
    Route(
        "PATCH",
        "/api/v1/cars/{vin}/labels",
        patch_labels,
        Role.OPERATOR,
        {
            "summary": "Set labels of a car (a null value removes a label set here); audited",
            "parameters": [schemas.VIN_PARAMETER],
            "requestBody": {
                "required": True,
                "content": schemas.json_content(
                    {"type": "object", "additionalProperties": {"type": ["string", "null"]}}
                ),
            },
            "responses": {
                "200": {
                    "description": "the car as it is now",
                    "content": schemas.json_content(schemas.CAR_DETAIL),
                },
                "400": schemas.error(
                    "not a JSON object, or a key or value Kubernetes would refuse"
                ),
                **_NOT_FOUND,
                "413": schemas.error("the body is too large"),
                **schemas.AUTH_ERRORS,
            },
        },
    ),
]
