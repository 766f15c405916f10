"""The aiohttp application, assembled in one place: every route module is mounted here.

Pages (the dashboard) and further routes are added by listing their ROUTES in
:func:`routes` or, for routes outside the API document, with :func:`make_app`'s ``extra``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from fleet_server.api import audit, cars, health, openapi, requests, rollouts, tokens
from fleet_server.api.context import SERVICE_KEY
from fleet_server.api.errors import MAX_BODY_KEY, json_errors
from fleet_server.api.routing import Route, guarded
from fleet_server.service import Service


def routes(metrics: bool = True) -> list[Route]:
    found = [*health.ROUTES, *cars.ROUTES, *requests.ROUTES, *audit.ROUTES, *tokens.ROUTES]
    found += rollouts.ROUTES
    if metrics:
        found.append(health.METRICS_ROUTE)
    return found


def _version() -> str:
    try:
        return version("ankaios-fleet-connector")
    except PackageNotFoundError:
        return "0"


def make_app(
    service: Service,
    *,
    metrics: bool = True,
    extra: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    app = web.Application(client_max_size=service.config.max_body, middlewares=[json_errors])
    app[SERVICE_KEY] = service
    app[MAX_BODY_KEY] = service.config.max_body
    mounted = routes(metrics)
    for route in mounted:
        app.router.add_route(route.method, route.path, guarded(route))
    spec = openapi.document(mounted, _version())

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/openapi.json", openapi_json)
    for add in extra:
        add(app)
    return app


def make_metrics_app(service: Service) -> web.Application:
    """/metrics alone, for --metrics-listen."""
    app = web.Application(middlewares=[json_errors])
    app[SERVICE_KEY] = service
    app[MAX_BODY_KEY] = 0
    route = health.METRICS_ROUTE
    app.router.add_route(route.method, route.path, route.handler)
    return app
