"""fleet-server with many cars (#23): 10,000 simulated cars, kept short for the normal suite.

The large runs (100,000 cars, ingest rates, API percentiles) are in bench/fleet_server.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from testkit import Broker, MqttProbe, free_port
from testkit.server import FakeCar, RunningServer, make_token, wait_until
from testkit.sim import Sim

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_server.config import ServerConfig

EU_CARS = 6_000
US_CARS = 4_000


def _server(database: str, broker: Broker) -> RunningServer:
    return RunningServer(
        ServerConfig(
            database=database,
            broker=BrokerSettings(host=broker.host, port=broker.port),
            listen=("127.0.0.1", free_port()),
            flush_interval=0.05,
            poll_interval=0.1,
        )
    )


def _total(server: RunningServer, token: str, **params: Any) -> int:
    answer = server.get("/api/v1/cars", token, params={"limit": 0, **params})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["total"])


def test_ten_thousand_simulated_cars_are_listed_selected_and_seen_going_offline(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = make_broker()
    # Two simulators, so each selector's right answer is known without asking the server.
    eu = Sim(broker, "EU", ["--count", str(EU_CARS), "--labels", "region=eu"])
    us = Sim(broker, "US", ["--count", str(US_CARS), "--labels", "region=us;model=x"])
    server: RunningServer | None = None
    try:
        eu.expect("ready", 60)
        us.expect("ready", 60)
        database = f"sqlite://{tmp_path / 'fleet.db'}"
        token = make_token(database, "viewer", "viewer")
        server = _server(database, broker)

        # Every car was already on the broker: all of them from its retained topics.
        wait_until(lambda: _total(server, token, online="true") == EU_CARS + US_CARS, 30)
        assert _total(server, token) == EU_CARS + US_CARS
        assert _total(server, token, selector="region=eu") == EU_CARS
        assert _total(server, token, selector="region=us,model=x") == US_CARS
        assert _total(server, token, selector="!model") == EU_CARS
        assert _total(server, token, selector="region in (eu,us),model notin (x)") == EU_CARS

        page = server.get(
            "/api/v1/cars", token, params={"selector": "model=x", "limit": 100, "offset": 3950}
        ).json()
        assert page["total"] == US_CARS
        assert [car["vin"] for car in page["items"]] == [us.vin(n) for n in range(3950, 4000)]
        assert all(car["online"] for car in page["items"])
        assert page["items"][0]["workloads"][0]["name"] == "fleetconnector"
        assert page["items"][0]["workloads"][0]["state"] == "running"

        # Live: the US simulator stops, each of its cars says offline.
        us.stop()
        wait_until(lambda: _total(server, token, online="false") == US_CARS, 30)
        assert _total(server, token, online="true", selector="region=eu") == EU_CARS
        car = server.get(f"/api/v1/cars/{us.vin(0)}", token).json()
        assert car["online"] is False
        assert car["workloads"][0]["state"] == "unknown"
        assert car["workloads"][0]["last_known"]["state"] == "running"
    finally:
        if server is not None:
            server.stop()
        for sim in (eu, us):
            if sim.process.poll() is None:
                sim.stop()


def _metric(server: RunningServer, name: str) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_each_retained_message_is_read_once_at_start(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    """The live (shared) subscription asks for no retained messages: mosquitto 2.0 would
    send them to it as well as to the read of the retained topics, twice the work at start
    (at 100,000 cars, the difference between meeting #23's minute and not)."""
    broker = make_broker()
    probe = MqttProbe(broker)
    server: RunningServer | None = None
    try:
        for n in range(5):
            car = FakeCar(probe.client, f"ONCE{n}")
            car.presence()
            car.workload("sender")
            car.workload("logger")
        database = f"sqlite://{tmp_path / 'fleet.db'}"
        server = _server(database, broker)  # returns once /readyz says the read is done

        assert _metric(server, "fleet_server_ingest_messages_total") == 15
        token = make_token(database, "viewer", "viewer")
        assert _total(server, token, online="true") == 5
    finally:
        if server is not None:
            server.stop()
        probe.close()


def test_cars_with_equal_labels_are_told_apart_when_one_changes(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    """Cars with equal labels share one mapping in memory (a selector is judged once per
    distinct set): a change to one car's labels must leave the others' alone."""
    broker = make_broker()
    probe = MqttProbe(broker)
    server: RunningServer | None = None
    try:
        cars = [FakeCar(probe.client, f"SAME{n}") for n in range(3)]
        for car in cars:
            car.presence(labels={"region": "eu", "model": "x"})
        database = f"sqlite://{tmp_path / 'fleet.db'}"
        viewer = make_token(database, "viewer", "viewer")
        operator = make_token(database, "operator", "operator")
        server = _server(database, broker)
        wait_until(lambda: _total(server, viewer, selector="region=eu") == 3)

        patched = server.request(
            "PATCH", "/api/v1/cars/SAME0/labels", operator, json={"ring": "canary"}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["labels"] == {"region": "eu", "model": "x", "ring": "canary"}
        cars[1].presence(labels={"region": "us", "model": "x"})
        wait_until(lambda: _total(server, viewer, selector="region=us") == 1)

        assert _total(server, viewer, selector="ring=canary") == 1
        assert _total(server, viewer, selector="region=eu") == 2
        assert _total(server, viewer, selector="model=x") == 3
        labels = {
            car["vin"]: car["labels"] for car in server.get("/api/v1/cars", viewer).json()["items"]
        }
        assert labels == {
            "SAME0": {"region": "eu", "model": "x", "ring": "canary"},
            "SAME1": {"region": "us", "model": "x"},
            "SAME2": {"region": "eu", "model": "x"},
        }
    finally:
        if server is not None:
            server.stop()
        probe.close()


def test_the_retained_read_fits_a_broker_queue_smaller_than_the_whole_fleet(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    """A broker hands a subscription's retained messages over at once and drops what does
    not fit its queue for the client. The server reads one kind of topic at a time, so the
    fleet's presences must fit, not presences and workloads together: here 70 messages fit
    (20 in flight, 50 queued), the fleet has 100 (50 cars, presence and a workload each)."""
    broker = make_broker("max_inflight_messages 20\nmax_queued_messages 50\n")
    probe = MqttProbe(broker)
    server: RunningServer | None = None
    try:
        for n in range(50):
            car = FakeCar(probe.client, f"QUEUE{n:02d}")
            car.presence()
            car.workload("sender")
        database = f"sqlite://{tmp_path / 'fleet.db'}"
        token = make_token(database, "viewer", "viewer")
        # MQTT 3.1.1: mosquitto's in-flight window applies to it (an MQTT 5 client's own
        # receive maximum, 65,535, would hide the queue).
        server = RunningServer(
            ServerConfig(
                database=database,
                broker=BrokerSettings(host=broker.host, port=broker.port, protocol="3.1.1"),
                listen=("127.0.0.1", free_port()),
                flush_interval=0.05,
                poll_interval=0.1,
            )
        )  # returns once /readyz says the read is done

        items = server.get("/api/v1/cars", token, params={"limit": 100}).json()["items"]
        assert len(items) == 50
        assert all(car["online"] for car in items)
        assert all([w["name"] for w in car["workloads"]] == ["sender"] for car in items)
    finally:
        if server is not None:
            server.stop()
        probe.close()
