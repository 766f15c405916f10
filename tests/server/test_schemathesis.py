"""schemathesis fuzzes the API from its own /openapi.json: no server errors, every answer's
status, content type and body as documented, authentication enforced.

One test per documented operation (from the same route list the server mounts); the
operations are driven through schemathesis's hypothesis strategies directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from testkit.server import FakeCar, RunningServer, make_token

from fleet_server.api.app import routes

CAR = "FUZZCAR0000000001"
EXAMPLES = 40
# Inputs with a grammar the OpenAPI document cannot spell out (selectors, label keys and
# values, a rollout's manifest, cron and thresholds): a schema-valid string may still be
# refused with 400, so "schema-valid data must be accepted" does not apply to them. Every
# other check does.
GRAMMAR = {
    ("GET", "/api/v1/cars"),
    ("PATCH", "/api/v1/cars/{vin}/labels"),
    ("POST", "/api/v1/rollouts"),
}


@pytest.fixture
def fuzz_server(
    sqlite_url: str, make_server: Callable[..., RunningServer], make_car: Callable[[str], FakeCar]
) -> RunningServer:
    # An offline car: requests to it are answered at once (202), and no car acts on them.
    car = make_car(CAR)
    car.presence("offline", labels={"region": "eu"})
    car.workload("w")
    return make_server(sqlite_url)


@pytest.mark.parametrize(("method", "path"), [(r.method, r.path) for r in routes()], ids=str)
def test_api_conforms_to_its_openapi_document(
    fuzz_server: RunningServer, sqlite_url: str, method: str, path: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {make_token(sqlite_url, 'fuzzer', 'admin')}"}

    excluded = [positive_data_acceptance] if (method, path) in GRAMMAR else []

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=excluded, timeout=30)

    fuzz()
