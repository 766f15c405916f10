"""The OpenAPI 3.1 document, built from the same route list the application mounts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleet_server.api.routing import Route


def document(routes: Sequence[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = dict(route.doc)
        operation.setdefault("operationId", route.handler.__name__)
        if route.role is not None:
            operation["security"] = [{"bearer": []}]
            operation["description"] = (
                operation.get("description", "") + f" Needs role {route.role.label} or above."
            ).strip()
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "fleet-server", "version": version},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": paths,
    }
