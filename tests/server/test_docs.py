"""docs/fleet-server.md documents every option, route and metric, so it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleet_connector.options import Option
from fleet_server.api.app import routes
from fleet_server.api.errors import CAR_CODE_STATUS
from fleet_server.api.routing import Route
from fleet_server.config import DATABASE_OPTION, SERVE_OPTIONS

DOC = (Path(__file__).parents[2] / "docs" / "fleet-server.md").read_text()


@pytest.mark.parametrize("option", [DATABASE_OPTION, *SERVE_OPTIONS], ids=lambda o: o.flag)
def test_every_option_is_documented(option: Option) -> None:
    assert f"`{option.flag}`" in DOC
    assert f"`{option.env}`" in DOC


@pytest.mark.parametrize("route", routes(), ids=lambda r: f"{r.method} {r.path}")
def test_every_route_is_documented(route: Route) -> None:
    path, method = route.path, route.method
    rows = [line for line in DOC.splitlines() if line.startswith("| `") and path in line]
    assert any(re.search(rf"\b{method}\b", row) for row in rows), f"{method} {path}"


def test_every_metric_is_documented() -> None:
    from fleet_server.metrics import Metrics

    class _Service:
        class inventory:
            cars: dict[str, object] = {}

        class ingest:
            @staticmethod
            def pending() -> int:
                return 0

    metrics = Metrics(_Service())  # type: ignore[arg-type]
    names = {m.name for m in metrics.registry.collect()}
    assert names
    for name in names:
        assert f"`{name}" in DOC, name


@pytest.mark.parametrize("code", sorted(CAR_CODE_STATUS))
def test_every_car_code_mapping_is_documented(code: str) -> None:
    assert f"`{code}`" in DOC
