"""fleet-server fixtures: a private PostgreSQL cluster and a database URL per test.

Tests that take ``database_url`` run twice, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker, MqttProbe, free_port
from testkit.postgres import PostgresCluster
from testkit.server import Api, FakeCar, RunningServer, make_token

from fleet_connector.broker import BrokerSettings
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
