"""/api/v1/rollouts: rollouts carried out by the service (fleet_server/rollouts/).

POST creates one from today's rollout file as JSON (201 ``{"id": ...}``); GET shows it
with its cars; pause, resume, abort and approve act on it from any instance (the instance
holding its lease sees the change at its next step). A finished or aborted rollout is
final: every action answers 409, and GET offers ``remaining``, the same spec for the cars
that did not succeed, to start a new rollout with.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fleet_server.api import schemas
from fleet_server.api.cars import _int
from fleet_server.api.context import service
from fleet_server.api.errors import INVALID_REQUEST, NOT_FOUND, ApiError, json_body
from fleet_server.api.routing import Route, identity
from fleet_server.auth import Role
from fleet_server.rollouts import lease, store
from fleet_server.rollouts.engine import stage_name
from fleet_server.rollouts.spec import SpecError, parse
from fleet_server.rollouts.store import FINAL, PENDING, SUCCEEDED, Conflict, RolloutRow

CONFLICT = "CONFLICT"
_ID = re.compile(r"ro-[0-9a-f]{12}")
MAX_LIST = 500


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _rollout_id(request: web.Request) -> str:
    rollout_id = request.match_info["id"]
    if not _ID.fullmatch(rollout_id):
        # Not one of ours: never reaches the database, and is not echoed back.
        raise ApiError(404, NOT_FOUND, "no such rollout")
    return rollout_id


async def _load(request: web.Request, rollout_id: str) -> RolloutRow:
    found = await asyncio.to_thread(store.load, service(request).db, rollout_id)
    if found is None:
        raise ApiError(404, NOT_FOUND, f"no rollout {rollout_id}")
    return found


def _counts(rollout: RolloutRow) -> dict[str, int]:
    counts: dict[str, int] = {}
    for car in rollout.cars:
        counts[car.state] = counts.get(car.state, 0) + 1
    waiting = sum(1 for c in rollout.cars if c.state == PENDING and c.waiting)
    if waiting:
        counts["waiting"] = waiting
    return counts


def _remaining(rollout: RolloutRow) -> dict[str, Any] | None:
    """The same spec for the cars that did not succeed: a new rollout's body."""
    vins = [c.vin for c in rollout.cars if c.state != SUCCEEDED]
    if rollout.state not in FINAL or not vins:
        return None
    spec = {k: v for k, v in rollout.spec.items() if k not in ("cars", "canary")}
    spec["cars"] = {"vins": vins}
    if "pauseAfter" in spec:
        spec["pauseAfter"] = [p for p in spec["pauseAfter"] if p != "canary"]
    if rollout.name:
        spec["name"] = f"{rollout.name} (remaining)"[:200]
    return spec


def view(rollout: RolloutRow, *, cars: bool = True, owner: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": rollout.id,
        "name": rollout.name,
        "state": rollout.state,
        "reason": rollout.reason,
        "stage": stage_name(rollout.stage),
        "waiting": rollout.waiting,
        "approvals": [
            {"stage": stage_name(int(a["stage"])), "by": a["by"], "at": _iso(a["at"])}
            for a in rollout.approvals
        ],
        "created_by": rollout.created_by,
        "created_at": _iso(rollout.created_at),
        "updated_at": _iso(rollout.updated_at),
        "finished_at": _iso(rollout.finished_at),
    }
    if cars:
        found["counts"] = _counts(rollout)
        found["cars"] = [car.to_json() for car in rollout.cars]
        found["owner"] = owner
        found["spec"] = rollout.spec
        remaining = _remaining(rollout)
        if remaining is not None:
            found["remaining"] = remaining
    else:
        found["counts"] = rollout.spec.get("counts", {})
        chosen = rollout.spec.get("cars")
        if isinstance(chosen, dict) and "selector" in chosen:
            found["selector"] = chosen["selector"] or "(every car)"
    return found


async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    try:
        spec = parse(body)
    except SpecError as e:
        raise ApiError(400, INVALID_REQUEST, str(e)) from None
    svc = service(request)
    if spec.cars.selector is not None:
        vins = [car.vin for car in svc.inventory.select(spec.cars.selector)]
    else:
        vins = spec.cars.vins
    rollout_id = f"ro-{secrets.token_hex(6)}"
    assert isinstance(body, dict)
    await asyncio.to_thread(
        store.create,
        svc.db,
        rollout_id=rollout_id,
        name=spec.name,
        spec=body,
        waves=spec.waves(vins),
        actor=identity(request).name,
        now=time.time(),
    )
    svc.metrics.rollout_transition(store.RUNNING)
    return web.json_response(
        {"id": rollout_id, "cars": len(vins)},
        status=201,
        headers={"Location": f"/api/v1/rollouts/{rollout_id}"},
    )


async def list_rollouts(request: web.Request) -> web.Response:
    limit = _int(request.query, "limit", 100, 0, MAX_LIST)
    offset = _int(request.query, "offset", 0, 0, 2**31)
    rows, total = await asyncio.to_thread(
        store.listing, service(request).db, limit=limit, offset=offset
    )
    return web.json_response({"items": [view(r, cars=False) for r in rows], "total": total})


async def get_rollout(request: web.Request) -> web.Response:
    rollout_id = _rollout_id(request)
    rollout = await _load(request, rollout_id)
    held = await asyncio.to_thread(lease.owner_of, service(request).db, rollout_id)
    owner = held[0] if held is not None and held[1] > time.time() else None
    return web.json_response(view(rollout, owner=owner))


def _action(action: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        rollout_id = _rollout_id(request)
        svc = service(request)
        stage = None
        if action == "approve":
            rollout = await _load(request, rollout_id)
            stage = await _stage(request, rollout)
        try:
            await asyncio.to_thread(
                store.operator_action,
                svc.db,
                rollout_id,
                action,
                actor=identity(request).name,
                now=time.time(),
                stage=stage,
            )
        except KeyError:
            raise ApiError(404, NOT_FOUND, f"no rollout {rollout_id}") from None
        except Conflict as e:
            raise ApiError(409, CONFLICT, str(e)) from None
        rollout = await _load(request, rollout_id)
        svc.metrics.rollout_transition(rollout.state)
        return web.json_response(view(rollout))

    handler.__name__ = action
    return handler


async def _stage(request: web.Request, rollout: RolloutRow) -> int:
    """The stage an approve is for: the body's ``{"stage": "canary" | N}``, else the current."""
    raw = await request.read()
    if not raw.strip():
        return rollout.stage
    body = await json_body(request)
    if isinstance(body, dict) and "stage" not in body:
        return rollout.stage  # {} as the dashboard sends it
    value = body.get("stage") if isinstance(body, dict) else None
    if value == "canary":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100_000:
        return value
    raise ApiError(400, INVALID_REQUEST, 'the body is {"stage": "canary"} or {"stage": N}')


_ID_PARAMETER = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_ROLLOUT = {
    "type": "object",
    "required": ["id", "state", "stage"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "state": {
            "type": "string",
            "enum": list(store.ROLLOUT_STATES),
        },
        "reason": schemas.NULLABLE_STRING,
        "stage": {"type": "string"},
        "waiting": schemas.NULLABLE_STRING,
        "approvals": {"type": "array", "items": {"type": "object"}},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "cars": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["vin", "state"],
                "properties": {
                    "vin": {"type": "string"},
                    "state": {"type": "string", "enum": list(store.CAR_STATES)},
                    "wave": {"type": "integer"},
                    "request_id": {"type": "string"},
                    "waiting": {"type": "string"},
                },
            },
        },
        "remaining": {"type": "object"},
    },
}
_FOUND = {
    "200": {"description": "the rollout", "content": schemas.json_content(_ROLLOUT)},
    "404": schemas.error("no such rollout"),
    **schemas.AUTH_ERRORS,
}


def _action_route(action: str, summary: str) -> Route:
    doc: dict[str, Any] = {
        "summary": summary,
        "parameters": [_ID_PARAMETER],
        "responses": {
            **_FOUND,
            "409": schemas.error("the rollout's state does not allow it (a final one: nothing)"),
        },
    }
    if action == "approve":
        doc["requestBody"] = {
            "required": False,
            "content": schemas.json_content(
                {"type": "object", "properties": {"stage": {"type": ["string", "integer"]}}}
            ),
        }
        doc["responses"]["400"] = schemas.error("a stage that is not canary or a number")
    return Route("POST", f"/api/v1/rollouts/{{id}}/{action}", _action(action), Role.OPERATOR, doc)


ROUTES = [
    Route(
        "POST",
        "/api/v1/rollouts",
        create,
        Role.OPERATOR,
        {
            "summary": "Start a rollout (today's rollout file as JSON, the manifest inline)",
            "requestBody": {"required": True, "content": schemas.json_content({"type": "object"})},
            "responses": {
                "201": {
                    "description": "created; the service carries it out",
                    "content": schemas.json_content(
                        {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}, "cars": {"type": "integer"}},
                        }
                    ),
                },
                "400": schemas.error("what is wrong with the rollout"),
                "413": schemas.error("the body is too large"),
                **schemas.AUTH_ERRORS,
            },
        },
    ),
    Route(
        "GET",
        "/api/v1/rollouts",
        list_rollouts,
        Role.VIEWER,
        {
            "summary": "Rollouts, newest first, with their cars counted by state",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIST},
                },
                {
                    "name": "offset",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 2**31},
                },
            ],
            "responses": {
                "200": {
                    "description": "the page of rollouts",
                    "content": schemas.json_content(
                        {
                            "type": "object",
                            "required": ["items", "total"],
                            "properties": {
                                "items": {"type": "array", "items": _ROLLOUT},
                                "total": {"type": "integer"},
                            },
                        }
                    ),
                },
                "400": schemas.error("bad paging"),
                **schemas.AUTH_ERRORS,
            },
        },
    ),
    Route(
        "GET",
        "/api/v1/rollouts/{id}",
        get_rollout,
        Role.VIEWER,
        {
            "summary": "One rollout: state, stage, waiting reasons, approvals, every car",
            "parameters": [_ID_PARAMETER],
            "responses": _FOUND,
        },
    ),
    _action_route("pause", "Pause: no car is sent until resume (cars in flight finish)"),
    _action_route("resume", "Resume a paused rollout"),
    _action_route("abort", "Abort, for good: pending cars are skipped, cars in flight finish"),
    _action_route("approve", "Approve the stage a pause point waits for (audited)"),
]
