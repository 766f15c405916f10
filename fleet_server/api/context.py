"""How handlers reach the running service (one per aiohttp application)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from fleet_server.service import Service

SERVICE_KEY: web.AppKey[Any] = web.AppKey("service", object)


def service(request: web.Request) -> Service:
    found: Service = request.app[SERVICE_KEY]
    return found
