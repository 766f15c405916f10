"""Tokens through the API, for admins: list, create (the value shown once), revoke."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from fleet_server import audit
from fleet_server.api import schemas
from fleet_server.api.context import service
from fleet_server.api.errors import INVALID_REQUEST, NOT_FOUND, ApiError, json_body
from fleet_server.api.routing import Route, identity
from fleet_server.auth import (
    ROLES,
    Role,
    TokenError,
    TokenInfo,
    create_token,
    list_tokens,
    revoke_token,
)
from fleet_server.db import Database

CONFLICT = "CONFLICT"


def _info(t: TokenInfo) -> dict[str, Any]:
    return {
        "name": t.name,
        "role": t.role.label,
        "created_at": t.created_at,
        "revoked_at": t.revoked_at,
    }


async def get_tokens(request: web.Request) -> web.Response:
    found = await asyncio.to_thread(list_tokens, service(request).db)
    return web.json_response({"items": [_info(t) for t in found]})


def _create(db: Database, name: str, role: Role, actor: str) -> str:
    with db.transaction() as tx:
        token = create_token(tx, name, role)
        audit.append(
            tx, actor=actor, action="token.create", detail={"name": name, "role": role.label}
        )
    return token


async def post_token(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"name", "role"}:
        raise ApiError(400, INVALID_REQUEST, 'the body is {"name": ..., "role": ...}')
    name, role_text = body["name"], body["role"]
    if not isinstance(name, str) or role_text not in ROLES:
        raise ApiError(400, INVALID_REQUEST, f"name is text and role one of {', '.join(ROLES)}")
    role = Role.parse(role_text)
    try:
        token = await asyncio.to_thread(
            _create, service(request).db, name, role, identity(request).name
        )
    except TokenError as e:
        status = 409 if "exists" in str(e) else 400
        raise ApiError(status, CONFLICT if status == 409 else INVALID_REQUEST, str(e)) from None
    return web.json_response({"name": name, "role": role.label, "token": token}, status=201)


def _revoke(db: Database, name: str, actor: str) -> None:
    with db.transaction() as tx:
        revoke_token(tx, name)
        audit.append(tx, actor=actor, action="token.revoke", detail={"name": name})


async def delete_token(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        await asyncio.to_thread(_revoke, service(request).db, name, identity(request).name)
    except TokenError as e:
        raise ApiError(404, NOT_FOUND, str(e)) from None
    return web.json_response({"name": name, "revoked": True})


_TOKEN = {
    "type": "object",
    "required": ["name", "role", "created_at"],
    "properties": {
        "name": {"type": "string"},
        "role": {"type": "string", "enum": list(ROLES)},
        "created_at": {"type": "string"},
        "revoked_at": {"type": ["string", "null"]},
    },
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

ROUTES = [
    Route(
        "GET",
        "/api/v1/tokens",
        get_tokens,
        Role.ADMIN,
        {
            "summary": "Every token (never its value)",
            "responses": {
                "200": {
                    "description": "tokens",
                    "content": schemas.json_content(
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": _TOKEN}},
                        }
                    ),
                },
                **schemas.AUTH_ERRORS,
            },
        },
    ),
    Route(
        "POST",
        "/api/v1/tokens",
        post_token,
        Role.ADMIN,
        {
            "summary": "Create a token; its value is in this answer only. Audited",
            "requestBody": {
                "required": True,
                "content": schemas.json_content(
                    {
                        "type": "object",
                        "required": ["name", "role"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {
                                "type": "string",
                                "pattern": r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                            },
                            "role": {"type": "string", "enum": list(ROLES)},
                        },
                    }
                ),
            },
            "responses": {
                "201": {
                    "description": "the token",
                    "content": schemas.json_content(
                        {
                            "type": "object",
                            "required": ["name", "role", "token"],
                            "properties": {
                                "name": {"type": "string"},
                                "role": {"type": "string"},
                                "token": {"type": "string"},
                            },
                        }
                    ),
                },
                "400": schemas.error("not a name and a role"),
                **schemas.AUTH_ERRORS,
                "409": schemas.error("a token of that name exists (revoke it first)"),
                "413": schemas.error("the body is too large"),
            },
        },
    ),
    Route(
        "DELETE",
        "/api/v1/tokens/{name}",
        delete_token,
        Role.ADMIN,
        {
            "summary": "Revoke a token: refused from now on, by every server. Audited",
            "parameters": [_NAME],
            "responses": {
                "200": {
                    "description": "revoked",
                    "content": schemas.json_content(
                        {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "revoked": {"type": "boolean"},
                            },
                        }
                    ),
                },
                **schemas.AUTH_ERRORS,
                "404": schemas.error("no such token, or revoked already"),
            },
        },
    ),
]
