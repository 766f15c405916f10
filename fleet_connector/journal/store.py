"""The connector's persistent state in ``STATE_DIR``: one SQLite database, crash-safe.

Every room that must remember something across restarts (the journal, signature counters,
...) keeps its own tables here, so there is one file to mount, back up and inspect. SQLite
in WAL mode with ``synchronous=FULL`` makes each committed transaction survive a SIGKILL or
a power loss. A database that cannot be read is reported, set aside next to the new one
and never stops the connector: losing history is better than a car that cannot be reached.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger(__name__)

DATABASE = "connector.sqlite3"


class Store:
    """One SQLite database in the state directory; safe to use from several threads."""

    def __init__(self, directory: Path, name: str = DATABASE) -> None:
        self.directory = directory
        self.path = directory / name
        self.set_aside: Path | None = None
        """Where an unreadable database found at start was moved, if one was."""
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Imported here: a connector without STATE_DIR never pays for SQLite (about 1 MiB).
        import sqlite3  # noqa: PLC0415

        try:
            self._db = self._open()
        except sqlite3.DatabaseError as e:
            self.set_aside = self._set_aside(e)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        import sqlite3  # noqa: PLC0415

        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            (result,) = db.execute("PRAGMA quick_check").fetchone()
            if result != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {result}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _set_aside(self, error: Exception) -> Path:
        target = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.replace(Path(f"{target}{suffix}"))
        log.error("state database %s is unreadable (%s); set aside as %s", self.path, error, target)
        return target

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed (durably) when the block ends, rolled back on error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
