"""Requests to one car, mirroring its topics, each answered with the car's own reply.

The server that got the HTTP request is the only one that publishes it (once), to
``vehicle/<VIN>/<operation>/req/<request-id>`` with a request id unique to it, and awaits
the reply on ``.../resp/<request-id>`` (subscribed first; on MQTT 5 also named as the
response topic, with the id as correlation data). The car's reply is the HTTP body as it
came: 200 for data, the car's error code mapped to a status (errors.CAR_CODE_STATUS).
No reply within ``--request-timeout``: 504 NO_REPLY (the request may still be carried out).
A car the inventory shows offline gets the request all the same (QoS 1: the broker keeps it
in the car's session) and the answer is 202 with the request id, at once.
Every request is audited before it is sent; the reply's outcome is audited after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from fleet_connector.mqtt.topics import FOLLOW_LEVEL, FOLLOWABLE, Operation, Topics
from fleet_server import audit
from fleet_server.api import schemas
from fleet_server.api.cars import known_car
from fleet_server.api.context import service
from fleet_server.api.errors import (
    CAR_CODE_STATUS,
    CAR_DEFAULT_STATUS,
    INVALID_REQUEST,
    NO_REPLY,
    UNAVAILABLE,
    ApiError,
    error_response,
)
from fleet_server.api.routing import Route, identity
from fleet_server.auth import Role
from fleet_server.broker_link import LinkError, new_request_id
from fleet_server.service import Service

REQUEST_ID_HEADER = "X-Request-Id"


async def _record(
    svc: Service, *, actor: str, action: str, vin: str, rid: str, detail: dict[str, Any]
) -> None:
    """One audit entry naming the car and the request id."""

    def write() -> None:
        with svc.db.transaction() as tx:
            audit.append(
                tx, actor=actor, action=action, vins=[vin], request_ids=[rid], detail=detail
            )

    await asyncio.to_thread(write)


def _reply_response(payload: bytes, rid: str) -> tuple[web.Response, str]:
    """The car's reply as the HTTP answer, and its outcome for metrics and audit."""
    headers = {REQUEST_ID_HEADER: rid}
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return error_response(
            502, "BAD_REPLY", "the car's reply is not JSON", request_id=rid
        ), "BAD_REPLY"
    code = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
        code = code if isinstance(code, str) and code.isupper() and len(code) <= 64 else "BAD_REPLY"
    status = 200 if code is None else CAR_CODE_STATUS.get(code, CAR_DEFAULT_STATUS)
    # A mapping is passed on byte for byte; anything else (no connector sends it) is wrapped,
    # so that every answer is a JSON object.
    body = payload if isinstance(data, dict) else json.dumps({"reply": data}).encode()
    response = web.Response(
        body=body, status=status, content_type="application/json", headers=headers
    )
    return response, code or "ok"


def follow_level(query: Mapping[str, str]) -> str | None:
    """The connector's ``follow;settle=S;deadline=D`` topic level from ``?follow=true&...``."""
    if query.get("follow", "false") not in ("true", "false"):
        raise ApiError(400, INVALID_REQUEST, "follow must be true or false")
    if query.get("follow") != "true":
        return None  # settle and deadline only mean something with follow=true
    level = FOLLOW_LEVEL
    for name, low, high in (("settle", 0.0, 600.0), ("deadline", 0.1, 3600.0)):
        text = query.get(name)
        if text is None:
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise ApiError(
                400, INVALID_REQUEST, f"{name} must be a number from {low:g} to {high:g}"
            )
        level += f";{name}={value:g}"
    return level


async def send(
    request: web.Request, operation: Operation, payload: bytes, follow: str | None = None
) -> web.Response:
    """Sends one request to the car and answers with its reply.

    ``follow``: the outcome is followed (apply and delete); the reply comes as usual, the
    outcome later on the same topic, taken into the car's ``last_outcome`` by the ingest.
    """
    car = known_car(request)
    svc = service(request)
    if not svc.link.connected:
        raise ApiError(503, UNAVAILABLE, "fleet-server is not connected to the broker")
    actor = identity(request).name
    rid = new_request_id(svc.config.instance)
    topics = Topics(car.vin)
    request_topic = topics.request(operation, rid)
    if follow is not None:
        request_topic += f"/{follow}"
    reply_topic = topics.response(operation, rid)
    action = f"car.{operation.value.replace('/', '.')}"
    detail: dict[str, Any] = {
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    if follow is not None:
        detail["follow"] = follow
    metric = svc.metrics.requests
    if not car.online:
        await _record(
            svc, actor=actor, action=action, vin=car.vin, rid=rid, detail={**detail, "queued": True}
        )
        svc.link.publish(request_topic, payload)
        metric.labels(operation.value, "QUEUED").inc()
        return web.json_response(
            {
                "request_id": rid,
                "queued": True,
                "message": "the car is offline; the broker keeps the request for it",
            },
            status=202,
            headers={REQUEST_ID_HEADER: rid},
        )
    reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    svc.link.route(reply_topic, _once(reply))
    try:
        await svc.link.subscribe([reply_topic])
        await _record(svc, actor=actor, action=action, vin=car.vin, rid=rid, detail=detail)
        svc.link.publish(
            request_topic, payload, response_topic=reply_topic, correlation=rid.encode()
        )
        try:
            answer = await asyncio.wait_for(reply, svc.config.request_timeout)
        except TimeoutError:
            outcome = NO_REPLY
            response = error_response(
                504,
                NO_REPLY,
                f"the car did not answer within {svc.config.request_timeout:g}s; "
                "the request may still be carried out",
                request_id=rid,
            )
            response.headers[REQUEST_ID_HEADER] = rid
        else:
            response, outcome = _reply_response(answer, rid)
    except LinkError as e:
        raise ApiError(503, UNAVAILABLE, str(e)) from None
    finally:
        svc.link.unroute(reply_topic)
        svc.spawn(_unsubscribe(svc, reply_topic))
    metric.labels(operation.value, outcome).inc()
    await _record(
        svc,
        actor=actor,
        action=f"{action}.reply",
        vin=car.vin,
        rid=rid,
        detail={"outcome": outcome},
    )
    return response


def _once(future: asyncio.Future[bytes]) -> Callable[[bytes], None]:
    def deliver(payload: bytes) -> None:
        if not future.done():
            future.set_result(payload)

    return deliver


async def _unsubscribe(svc: Service, topic: str) -> None:
    with contextlib.suppress(LinkError):
        await svc.link.unsubscribe([topic])


async def _json_payload(request: web.Request, kinds: tuple[type, ...], what: str) -> bytes:
    raw = await request.read()
    if not raw.strip():
        return b""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, INVALID_REQUEST, f"the body is not JSON: {what}") from None
    if not isinstance(data, kinds):
        raise ApiError(400, INVALID_REQUEST, f"the body is {what}")
    return raw


def _manifest_handler(operation: Operation) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        follow = follow_level(request.query) if operation in FOLLOWABLE else None
        body = await request.read()
        if not body.strip():
            raise ApiError(400, INVALID_REQUEST, "the body is the manifest (YAML)")
        return await send(request, operation, body, follow)

    handler.__name__ = f"manifest_{operation.name.lower()}"
    return handler


async def state(request: web.Request) -> web.Response:
    body = await _json_payload(
        request, (list,), 'a JSON list of field masks, e.g. ["workloadStates"]'
    )
    return await send(request, Operation.STATE, body or b"[]")


async def history(request: web.Request) -> web.Response:
    body = await _json_payload(request, (dict,), 'a JSON object, e.g. {"limit": 10}')
    return await send(request, Operation.HISTORY, body)


async def rollback(request: web.Request) -> web.Response:
    body = await _json_payload(
        request, (dict,), 'a JSON object: {}, {"entry": N} or {"request_id": "..."}'
    )
    return await send(request, Operation.ROLLBACK, body)


async def logs(request: web.Request) -> web.StreamResponse:
    """The car's log batches as they come, one JSON object per line (NDJSON), until its end."""
    car = known_car(request)
    body = await _json_payload(
        request, (dict,), 'a JSON object, e.g. {"workloads": ["w"], "tail": 20}'
    )
    svc = service(request)
    if not svc.link.connected:
        raise ApiError(503, UNAVAILABLE, "fleet-server is not connected to the broker")
    if not car.online:
        raise ApiError(409, "OFFLINE", "the car is offline: logs need it online")
    rid = new_request_id(svc.config.instance)
    topics = Topics(car.vin)
    reply_topic = topics.response(Operation.LOGS, rid)
    batches: asyncio.Queue[bytes] = asyncio.Queue()
    svc.link.route(reply_topic, batches.put_nowait)
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-ndjson", REQUEST_ID_HEADER: rid}
    )
    ended = False
    try:
        await svc.link.subscribe([reply_topic])
        await _record(
            svc,
            actor=identity(request).name,
            action="car.logs",
            vin=car.vin,
            rid=rid,
            detail={"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        )
        svc.link.publish(
            topics.request(Operation.LOGS, rid), body or b"{}", response_topic=reply_topic
        )
        await response.prepare(request)
        while True:
            try:
                payload = await asyncio.wait_for(batches.get(), svc.config.request_timeout)
            except TimeoutError:
                line = {"error": {"code": NO_REPLY, "message": "the car sent nothing in time"}}
                await response.write(json.dumps(line).encode() + b"\n")
                break
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            await response.write(json.dumps(data, separators=(",", ":")).encode() + b"\n")
            if not isinstance(data, dict) or "end" in data or "error" in data:
                ended = True
                break
        await response.write_eof()
    except LinkError as e:
        raise ApiError(503, UNAVAILABLE, str(e)) from None
    finally:
        if not ended:
            # The client went away (or we gave up): the car stops streaming.
            with contextlib.suppress(LinkError):
                svc.link.publish(topics.logs_cancel(rid), b"")
        svc.link.unroute(reply_topic)
        svc.spawn(_unsubscribe(svc, reply_topic))
    return response


_REPLY = {"type": "object"}
_QUEUED = {
    "type": "object",
    "required": ["request_id", "queued"],
    "properties": {
        "request_id": {"type": "string"},
        "queued": {"type": "boolean"},
        "message": {"type": "string"},
    },
}


def _doc(summary: str, body: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [schemas.VIN_PARAMETER],
        "requestBody": {"required": required, "content": body},
        "responses": {
            "200": {"description": "the car's reply", "content": schemas.json_content(_REPLY)},
            "202": {
                "description": "the car is offline; sent, kept by the broker",
                "content": schemas.json_content(_QUEUED),
            },
            "400": schemas.error("a bad body (or the car's INVALID_REQUEST)"),
            **schemas.AUTH_ERRORS,
            "404": schemas.error("no car with this VIN is known"),
            "409": schemas.error("the car's REJECTED or NO_JOURNAL"),
            "413": schemas.error("the body is too large"),
            "429": schemas.error("the car's BUSY"),
            "502": schemas.error("the car's INTERNAL, or a reply that is not JSON"),
            "503": schemas.error("not connected to the broker (or the car's UNAVAILABLE)"),
            "504": schemas.error("NO_REPLY within the timeout (or the car's TIMEOUT, EXPIRED)"),
        },
    }


_MANIFEST_TEXT = {"type": "string", "pattern": r"\S"}
_YAML = {
    "application/yaml": {"schema": _MANIFEST_TEXT},
    "text/plain": {"schema": _MANIFEST_TEXT},
}
_OBJECT = schemas.json_content({"type": "object"})
_FOLLOW_PARAMETERS = [
    {
        "name": "follow",
        "in": "query",
        "schema": {"type": "string", "enum": ["true", "false"]},
        "description": "follow the outcome: it becomes the car's last_outcome (with the "
        "request id); settle and deadline (seconds) apply only with follow=true",
    },
    {"name": "settle", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 600}},
    {
        "name": "deadline",
        "in": "query",
        "schema": {"type": "number", "minimum": 0.1, "maximum": 3600},
    },
]


def _manifest_doc(operation: Operation) -> dict[str, Any]:
    doc = _doc(
        f"{operation.value} on the car; the body is the manifest (YAML)", _YAML, required=True
    )
    if operation in FOLLOWABLE:
        doc["parameters"] = [*doc["parameters"], *_FOLLOW_PARAMETERS]
    return doc


ROUTES = [
    *(
        Route(
            "POST",
            f"/api/v1/cars/{{vin}}/{operation.value}",
            _manifest_handler(operation),
            Role.OPERATOR,
            _manifest_doc(operation),
        )
        for operation in (Operation.APPLY, Operation.DELETE, Operation.PLAN)
    ),
    Route(
        "POST",
        "/api/v1/cars/{vin}/state",
        state,
        Role.OPERATOR,
        _doc(
            "The car's state; the body is a JSON list of field masks",
            schemas.json_content({"type": "array", "items": {"type": "string"}}),
            required=False,
        ),
    ),
    Route(
        "POST",
        "/api/v1/cars/{vin}/history",
        history,
        Role.OPERATOR,
        _doc("The car's journal", _OBJECT, required=False),
    ),
    Route(
        "POST",
        "/api/v1/cars/{vin}/manifest/rollback",
        rollback,
        Role.OPERATOR,
        _doc("Roll back a change on the car", _OBJECT, required=False),
    ),
    Route(
        "POST",
        "/api/v1/cars/{vin}/logs",
        logs,
        Role.OPERATOR,
        {
            **_doc(
                "Workload logs, streamed as NDJSON (one batch per line)", _OBJECT, required=False
            ),
            "responses": {
                "200": {
                    "description": "the batches",
                    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                },
                "400": schemas.error("a bad body"),
                **schemas.AUTH_ERRORS,
                "404": schemas.error("no car with this VIN is known"),
                "409": schemas.error("the car is offline"),
                "413": schemas.error("the body is too large"),
                "503": schemas.error("not connected to the broker"),
            },
        },
    ),
]
