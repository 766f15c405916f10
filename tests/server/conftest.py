"""fleet-server fixtures: a private PostgreSQL cluster and a database URL per test.

Tests that take ``database_url`` run twice, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit.postgres import PostgresCluster

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
