"""JSON errors: ``{"error": {"code": ..., "message": ...}}``, with the connector's codes
(INVALID_REQUEST, UNAVAILABLE, ...) where they mean the same, and a few of the API's own."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from fleet_server.db import DatabaseError

log = logging.getLogger(__name__)

MAX_BODY_KEY = web.AppKey("max_body", int)

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
INVALID_REQUEST = "INVALID_REQUEST"
TOO_LARGE = "PAYLOAD_TOO_LARGE"
NO_REPLY = "NO_REPLY"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"

# A car's error reply keeps its code; this is the HTTP status it is answered with.
CAR_CODE_STATUS = {
    "INVALID_REQUEST": 400,
    "POLICY_DENIED": 403,
    "ACCESS_DENIED": 403,
    "SIGNATURE_INVALID": 403,
    "REJECTED": 409,
    "NO_JOURNAL": 409,
    "BUSY": 429,
    "UNAVAILABLE": 503,
    "TIMEOUT": 504,
    "EXPIRED": 504,
}
CAR_DEFAULT_STATUS = 502  # INTERNAL, BAD_REPLY, codes of a newer connector


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    body = {"error": {"code": code, "message": message}, **extra}
    return web.json_response(body, status=status)


_HTTP_CODES = {
    400: INVALID_REQUEST,
    401: UNAUTHENTICATED,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: TOO_LARGE,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _HTTP_CODES.get(e.status, INVALID_REQUEST if e.status < 500 else INTERNAL)
        message = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 413:
            message = f"the body is larger than {request.app[MAX_BODY_KEY]} bytes"
        response = error_response(e.status, code, message)
        if e.status == 405:
            allow = e.headers.get("Allow")
            if allow:
                response.headers["Allow"] = allow
        return response
    except DatabaseError as e:
        log.warning("%s %s: %s", request.method, request.path, e)
        return error_response(503, UNAVAILABLE, "the database is not reachable; try again")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, INTERNAL, "a defect in fleet-server; see its log")


async def json_body(request: web.Request) -> object:
    """The request's JSON body; ApiError 400 when it is not JSON."""
    raw = await request.read()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, INVALID_REQUEST, "the body is not valid JSON") from None
