"""fleet-server fixtures: a private PostgreSQL cluster and a database URL per test.

Tests that take ``database_url`` run twice, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker, MqttProbe, free_port
from testkit.live import ALL_LOGS, retained
from testkit.postgres import PostgresCluster
from testkit.server import Api, FakeCar, RunningServer, make_token

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_server.auth import ROLES
from fleet_server.config import ServerConfig
from fleet_server.db import Database, connect, migrate


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'fleet.db'}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database of the test's own."""
    database = connect(database_url)
    migrate(database)
    yield database
    database.close()


@pytest.fixture
def make_server(broker: Broker) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(database: str, **overrides: Any) -> RunningServer:
        fields: dict[str, Any] = {
            "database": database,
            "broker": BrokerSettings(host=broker.host, port=broker.port),
            "listen": ("127.0.0.1", free_port()),
            "flush_interval": 0.05,
            "poll_interval": 0.1,
            "request_timeout": 5.0,
        }
        fields.update(overrides)
        server = RunningServer(ServerConfig(**fields))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def make_car(probe: MqttProbe) -> Iterator[Callable[[str], FakeCar]]:
    made: list[FakeCar] = []

    def make(vin: str) -> FakeCar:
        car = FakeCar(probe, vin)
        made.append(car)
        return car

    yield make
    for car in made:
        car.clear()


@pytest.fixture
def api(database_url: str, make_server: Callable[..., RunningServer]) -> Api:
    tokens = {role: make_token(database_url, f"{role}-token", role) for role in ROLES}
    return Api(make_server(database_url), database_url, tokens)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For tests about the cars' side, where the database makes no difference."""
    return f"sqlite://{tmp_path / 'fleet.db'}"


# Workloads the emulated cars run as local processes (image -> command).
IMAGES = {
    "sim:1": ["sh", "-c", "exec sleep 120"],
    "talker:1": ["sh", "-c", "for i in $(seq 1 5); do echo line $i; done; exec sleep 120"],
}


@pytest.fixture
def real_car(tmp_path: Path, broker: Broker, vin: str) -> Iterator[Connector]:
    """A car: an emulated Ankaios running workloads as processes, and a real connector."""
    emulator = Emulator(
        control_interface=tmp_path / "ci",
        runtime="process",
        image_map=IMAGES,
        access=ALL_LOGS,
        pace_frames=False,
    ).start()
    connector = Connector(
        Config(
            vin=vin,
            broker=BrokerSettings(host=broker.host, port=broker.port),
            control_interface=emulator.control_interface,
            client_id=f"fleet-connector-{vin}",
        )
    )
    connector.start()
    try:
        assert connector.control_interface.wait_connected(10), "control interface not connected"
        assert connector.mqtt.wait_subscribed(10), "MQTT not subscribed"
        yield connector
    finally:
        connector.stop()
        emulator.stop()
        # its retained topics stay for the session otherwise
        probe = MqttProbe(broker)
        for topic in retained(probe, f"vehicle/{vin}/#"):
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        probe.client.publish(f"vehicle/{vin}/status", b"", qos=1, retain=True).wait_for_publish(5)
        probe.close()
