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

from fleet_connector.errors import StorageError

if TYPE_CHECKING:
    import sqlite3

log = logging.getLogger(__name__)

DATABASE = "connector.sqlite3"


class Store:
    """One SQLite database in the state directory; safe to use from several threads."""

    def __init__(self, directory: Path, name: str = DATABASE) -> None:
        """Raises :class:`StorageError` for a directory that cannot be made, opened or
        written (read-only, full): the connector then runs without it."""
        self.directory = directory
        self.path = directory / name
        self.set_aside: Path | None = None
        """Where an unreadable database found at start was moved, if one was."""
        self._lock = threading.RLock()
        # Imported here: a connector without STATE_DIR never pays for SQLite (about 1 MiB).
        import sqlite3  # noqa: PLC0415

        try:
            directory.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open()
            except sqlite3.OperationalError:
                raise  # cannot open or write it (read-only, full): nothing to set aside
            except sqlite3.DatabaseError as e:
                self.set_aside = self._set_aside(e)
                self._db = self._open()
        except (OSError, sqlite3.Error) as e:
            raise StorageError(f"state directory {directory} cannot be used: {e}") from e

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
        """A write transaction: committed (durably) when the block ends, rolled back on error.

        A write the disk refuses (full, read-only, I/O error) raises :class:`StorageError`,
        with nothing written.
        """
        import sqlite3  # noqa: PLC0415

        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise self._unwritable(e) from e
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(e, sqlite3.OperationalError):
                    raise self._unwritable(e) from e
                raise

    def _unwritable(self, error: Exception) -> StorageError:
        log.error("state database %s cannot be written: %s", self.path, error)
        return StorageError(f"the state directory {self.directory} cannot be written: {error}")

    def query(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            return self._db.execute(sql, parameters).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
