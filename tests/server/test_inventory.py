"""The inventory is made of the cars' own topics: retained at start, then live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testkit.server import FakeCar, RunningServer, make_token, wait_until


def _car(server: RunningServer, token: str, vin: str) -> Any:
    response = server.get(f"/api/v1/cars/{vin}", token)
    return response.json() if response.status_code == 200 else None


def test_retained_topics_at_start_then_live_changes(
    database_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    vin: str,
) -> None:
    car = make_car(vin)
    car.presence(labels={"region": "eu"})
    car.workload("sender", "pending")
    token = make_token(database_url, "viewer", "viewer")
    server = make_server(database_url)

    seen = wait_until(lambda: _car(server, token, vin))
    assert seen["online"] is True
    assert seen["connector_version"] == "0.1.0"
    assert seen["labels"] == {"region": "eu"}
    assert [(w["name"], w["state"]) for w in seen["workloads"]] == [("sender", "pending")]

    car.workload("sender", "running", since="2026-12-07T08:00:01.000+00:00")
    wait_until(lambda: (c := _car(server, token, vin)) and c["workloads"][0]["state"] == "running")

    car.presence("offline")
    offline = wait_until(lambda: (c := _car(server, token, vin)) and not c["online"] and c)
    (workload,) = offline["workloads"]
    assert workload["state"] == "unknown"
    assert workload["last_known"]["state"] == "running"
    assert workload["last_known_at"] == offline["online_since"]
