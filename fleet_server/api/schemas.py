"""OpenAPI schema fragments shared by the route descriptions."""

from __future__ import annotations

from typing import Any

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}

LABELS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}

WORKLOAD: dict[str, Any] = {
    "type": "object",
    "required": ["name", "agent", "state"],
    "properties": {
        "name": {"type": "string"},
        "agent": {"type": "string"},
        "state": {"type": "string"},
        "substate": {"type": "string"},
        "info": {"type": "string"},
        "instance_id": {"type": "string"},
        "since": {"type": "string"},
        "last_known": {"type": "object"},
        "last_known_at": NULLABLE_STRING,
    },
}

CAR: dict[str, Any] = {
    "type": "object",
    "required": ["vin", "online", "labels", "workloads"],
    "properties": {
        "vin": {"type": "string"},
        "online": {"type": "boolean"},
        "online_since": NULLABLE_STRING,
        "connector_version": NULLABLE_STRING,
        "labels": LABELS,
        "workloads": {"type": "array", "items": WORKLOAD},
        "last_outcome": {"type": ["object", "null"]},
        "last_seen": NULLABLE_STRING,
    },
}

CAR_DETAIL: dict[str, Any] = {
    "type": "object",
    "required": [*CAR["required"], "labels_reported", "labels_set", "agents"],
    "properties": {
        **CAR["properties"],
        "labels_reported": LABELS,
        "labels_set": LABELS,
        "presence": {"type": "object"},
        "agents": {"type": "array", "items": {"type": "object"}},
        "drift": {"type": ["object", "null"]},
    },
}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ERROR)}


AUTH_ERRORS: dict[str, Any] = {
    "401": error("no token, or an unknown or revoked one"),
    "403": error("the token's role is not enough"),
}

VIN_PARAMETER: dict[str, Any] = {
    "name": "vin",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
