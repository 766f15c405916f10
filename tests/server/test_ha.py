"""Two servers on one PostgreSQL and one broker: each takes part of the live traffic, both
show the whole fleet, and when one is killed the other goes on, with the inventory current."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testkit import Broker, MqttProbe
from testkit.live import manifest
from testkit.postgres import PostgresCluster
from testkit.server import FakeCar, ServerProcess, make_token, wait_until

from fleet_connector import Connector

CARS = 12


@pytest.fixture
def two_servers(
    pg_cluster: PostgresCluster, broker: Broker, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    database = pg_cluster.create_database()
    token = make_token(database, "ops", "operator")
    servers = [
        ServerProcess(database, broker, tmp_path, FLEET_SERVER_HEARTBEAT_INTERVAL="0.3")
        for _ in range(2)
    ]
    yield servers[0], servers[1], token
    for server in servers:
        server.stop()


def _ingested(server: ServerProcess) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("fleet_server_ingest_messages_total "):
            return float(line.split()[1])
    raise AssertionError("no fleet_server_ingest_messages_total")


def _states(server: ServerProcess, token: str, fleet: str) -> dict[str, str]:
    body = server.get(f"/api/v1/cars?selector=fleet%3D{fleet}&limit=1000", token).json()
    return {
        car["vin"]: (car["workloads"][0]["state"] if car["workloads"] else "-")
        for car in body["items"]
    }


def test_two_servers_split_the_traffic_and_one_survives_a_sigkill(
    two_servers: tuple[ServerProcess, ServerProcess, str],
    make_car: Callable[[str], FakeCar],
    real_car: Connector,
    probe: MqttProbe,
    vin: str,
) -> None:
    a, b, token = two_servers
    fleet = f"ha{vin.lower()}"
    before_a, before_b = _ingested(a), _ingested(b)
    cars = [make_car(f"{vin}-{i:02d}") for i in range(CARS)]
    for car in cars:
        car.presence(labels={"fleet": fleet})
        car.workload("w", "pending", since="2026-12-07T08:00:00.000+00:00")
    expected = {car.vin: "pending" for car in cars}
    for server in (a, b):
        wait_until(lambda s=server: _states(s, token, fleet) == expected)
    # the shared subscription split the live messages between the two
    assert _ingested(a) > before_a and _ingested(b) > before_b

    # a request to a car goes out once, from the server asked, with both up
    probe.subscribe(f"vehicle/{vin}/manifest/apply/req/#")
    wait_until(lambda: a.get(f"/api/v1/cars/{vin}", token).status_code == 200)
    response = a.post(f"/api/v1/cars/{vin}/manifest/apply", token, manifest("both-up"))
    assert response.status_code == 200, response.text
    sent = probe.expect(timeout=5)
    assert sent.topic.endswith(response.headers["X-Request-Id"])
    probe.expect_nothing(0.5)

    # A stops taking part (its share of what follows is stuck in it), then dies.
    a.pause()
    for car in cars:
        car.workload("w", "running", since="2026-12-07T08:00:01.000+00:00")
    a.kill()
    expected = {car.vin: "running" for car in cars}
    # B noticed A's silence and read the retained topics again: A's share is not lost
    wait_until(lambda: _states(b, token, fleet) == expected, timeout=20)
    assert "fleet_server_resyncs_total 1.0" in b.get("/metrics").text

    # B keeps answering, with live changes, and requests to a car are sent by B alone.
    cars[0].presence("offline", labels={"fleet": fleet})
    wait_until(lambda: b.get(f"/api/v1/cars/{cars[0].vin}", token).json()["online"] is False)
    wait_until(lambda: b.get(f"/api/v1/cars/{vin}", token).status_code == 200)
    response = b.post(f"/api/v1/cars/{vin}/manifest/apply", token, manifest("after-kill"))
    assert response.status_code == 200, response.text
    assert [w["workload_name"] for w in response.json()["added_workloads"]] == ["after-kill"]
