"""The schema migrates on both databases, once, and the dialect layer speaks both."""

from __future__ import annotations

import threading

import pytest

from fleet_connector.options import ConfigError
from fleet_server.db import Database, DatabaseError, connect, describe_url, migrate
from fleet_server.db.migrations import applied, available


def test_migrations_apply_once_and_are_recorded(database_url: str) -> None:
    db = connect(database_url)
    try:
        first = migrate(db)
        assert [m.version for m in first] == [m.version for m in available()]
        assert migrate(db) == []
        assert applied(db) == [m.version for m in available()]
    finally:
        db.close()


def test_two_servers_migrating_at_once_migrate_once(database_url: str) -> None:
    dbs = [connect(database_url) for _ in range(2)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda d=d: results.append(len(migrate(d)))) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # each migration once, by whichever got there first
    assert sum(results) == len(available())
    assert applied(dbs[0]) == [m.version for m in available()]
    for d in dbs:
        d.close()


def test_upsert_and_returning_work_alike(db: Database) -> None:
    with db.transaction() as tx:
        seq = tx.execute(
            "UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq"
        ).fetchone()
        assert seq == (1,)
        for value in ("a", "b"):
            tx.execute(
                "INSERT INTO car_labels (vin, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (vin, key) DO UPDATE SET value = excluded.value",
                ("V1", "region", value),
            )
    with db.transaction(write=False) as tx:
        assert tx.execute("SELECT value FROM car_labels WHERE vin = ?", ("V1",)).fetchall() == [
            ("b",)
        ]


def test_a_failed_transaction_leaves_nothing(db: Database) -> None:
    try:
        with db.transaction() as tx:
            tx.execute("INSERT INTO car_labels (vin, key, value) VALUES (?, ?, ?)", ("V", "k", "v"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with db.transaction(write=False) as tx:
        assert tx.execute("SELECT count(*) FROM car_labels").fetchone() == (0,)


def test_unknown_scheme_and_unreachable_server_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL 'mysql://u:\\*\\*\\*@x/y'"):
        connect("mysql://u:secret@x/y")
    with pytest.raises(DatabaseError) as e:
        connect("postgresql://u:secret@127.0.0.1:1/db")
    assert str(e.value).startswith("cannot connect to postgresql://u:***@127.0.0.1:1/db: ")
    assert "secret" not in str(e.value) and "\n" not in str(e.value)
    assert describe_url("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
