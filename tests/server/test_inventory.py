"""The inventory is made of the cars' own topics: retained at start, then live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from testkit import Broker
from testkit.server import CuttableProxy, FakeCar, RunningServer, make_token, wait_until

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_server.inventory.ingest import MAX_WORKLOADS_PER_CAR


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


def test_agents_drift_and_gone_workloads(
    database_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    vin: str,
) -> None:
    car = make_car(vin)
    car.presence()
    car.workload("a")
    car.workload("b")
    car.publish(
        "agents/agent_A", {"connected": True, "cpu_usage": 12, "free_memory": 1024, "since": "t1"}
    )
    car.publish("drift", {"lost": ["b"]})
    token = make_token(database_url, "viewer", "viewer")
    server = make_server(database_url)
    seen = wait_until(lambda: (c := _car(server, token, vin)) and c["drift"] and c)
    assert [w["name"] for w in seen["workloads"]] == ["a", "b"]
    assert seen["agents"] == [
        {
            "name": "agent_A",
            "connected": True,
            "cpu_usage": 12.0,
            "free_memory": 1024,
            "since": "t1",
        }
    ]
    assert seen["drift"] == {"lost": ["b"]}

    car.publish("workloads/b", b"")
    car.publish("drift", b"")
    wait_until(lambda: [w["name"] for w in _car(server, token, vin)["workloads"]] == ["a"])
    wait_until(lambda: _car(server, token, vin)["drift"] is None)


def test_an_older_state_never_overwrites_a_newer_one(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    vin: str,
) -> None:
    """With several servers, messages of one workload may be written out of order."""
    car = make_car(vin)
    car.presence()
    token = make_token(sqlite_url, "viewer", "viewer")
    server = make_server(sqlite_url)
    car.workload("w", "running", since="2026-12-07T08:00:02.000+00:00")
    wait_until(lambda: (c := _car(server, token, vin)) and c["workloads"])
    car.workload("w", "pending", since="2026-12-07T08:00:01.000+00:00")
    car.workload("marker", "running")  # arrives after the stale one
    wait_until(lambda: len(_car(server, token, vin)["workloads"]) == 2)
    assert _car(server, token, vin)["workloads"][1]["state"] == "running"


def test_a_car_cannot_break_the_ingest_or_grow_without_bound(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    vin: str,
) -> None:
    token = make_token(sqlite_url, "viewer", "viewer")
    server = make_server(sqlite_url)
    bad = make_car(vin)
    for payload in (b"\xff", b"[" * 50_000, b'{"status": 1}', b"null", b"x" * 70_000):
        bad.publish("status", payload, retain=False)
        bad.publish("workloads/w", payload, retain=False)
    bad.presence()
    for i in range(MAX_WORKLOADS_PER_CAR + 20):
        bad.publish(f"workloads/w{i:04d}", {"state": "running", "since": "t"}, retain=False)
    bad.publish("workloads/zz-last", {"state": "running", "since": "t"}, retain=False)
    good = make_car(f"{vin}-OK")
    good.presence()
    wait_until(lambda: _car(server, token, good.vin))
    car = wait_until(lambda: (c := _car(server, token, vin)) and c["online"] and c)
    wait_until(lambda: len(_car(server, token, vin)["workloads"]) == MAX_WORKLOADS_PER_CAR)
    assert "zz-last" not in {w["name"] for w in car["workloads"]}


def test_after_a_reconnect_the_retained_topics_are_read_again(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    broker: Broker,
    vin: str,
) -> None:
    """What the cars published while the server was cut off from the broker is not lost.

    (mosquitto 2.0 also hands retained messages to a new shared subscription, which MQTT 5
    says it should not; the server's own read of them does not rely on that.)"""
    proxy = CuttableProxy(broker)
    try:
        token = make_token(sqlite_url, "viewer", "viewer")
        server = make_server(sqlite_url, broker=BrokerSettings(host=proxy.host, port=proxy.port))
        car = make_car(vin)
        car.presence()
        wait_until(lambda: _car(server, token, vin))

        proxy.cut()
        wait_until(lambda: server.get("/readyz").status_code == 503)
        car.workload("while-away")  # retained on the broker, no server to see it live
        proxy.restore()
        wait_until(lambda: server.get("/readyz").status_code == 200, timeout=30)
        wait_until(
            lambda: [w["name"] for w in _car(server, token, vin)["workloads"]] == ["while-away"]
        )
    finally:
        proxy.close()
