"""Versioned schema: numbered SQL files in db/migrations, applied once each, in order.

``NNNN_name.sql`` holds statements separated by ``;`` at line ends, written for both
databases with ``{real}``, ``{bigint}`` and ``{identity}`` where their types differ
(see dialects.py). A new migration is a new file with a higher number; applied ones are
never edited. Numbers may leave gaps: parts built side by side take ranges of their own
(the inventory 1-29, the dashboard's sessions 30-39, ...), and each runs once, in order.
``schema_migrations`` records what is applied. Two servers starting together on one
PostgreSQL take an advisory lock, so each migration runs once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from fleet_server.db.database import Database, Transaction

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
# Any number: it only has to be the same in every fleet-server.
_ADVISORY_LOCK = 0x466C656574  # "Fleet"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        return [s.strip() for s in re.split(r";\s*\n", self.sql) if s.strip()]


def available() -> list[Migration]:
    """Every migration shipped with the package, by version."""
    found = []
    for entry in resources.files("fleet_server.db").joinpath("migrations").iterdir():
        match = _FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


def applied(db: Database) -> list[int]:
    with db.transaction(write=False) as tx:
        if not _has_table(tx):
            return []
        return [int(r[0]) for r in tx.execute("SELECT version FROM schema_migrations").fetchall()]


def migrate(db: Database) -> list[Migration]:
    """Applies what is missing, each migration in its own transaction; returns those applied."""
    done: list[Migration] = []
    for migration in available():
        with db.transaction() as tx:
            if db.dialect.name == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK,))
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            row = tx.execute(
                "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
            ).fetchone()
            if row is not None:
                continue
            for statement in migration.statements():
                tx.execute(db.dialect.migration(statement))
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, datetime.now(UTC).isoformat()),
            )
            done.append(migration)
    return done


def _has_table(tx: Transaction) -> bool:
    if tx.dialect.name == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    return tx.execute(sql).fetchone() is not None
