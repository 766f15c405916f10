"""One connection to SQLite or PostgreSQL, used from worker threads one transaction at a time.

The server's reads are served from memory (inventory/cache.py), so the database sees batched
writes, a change poll and the odd token or audit query: one connection per process, guarded
by a lock, is enough and keeps the footprint small. Callers on the event loop run these
methods with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fleet_connector.options import ConfigError
from fleet_server.db.dialects import POSTGRESQL, SQLITE, Dialect

Row = tuple[Any, ...]


class DatabaseError(Exception):
    """The database cannot be reached or refused us; the message is one line."""


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (three slashes: an absolute path); else None."""
    if not url.startswith("sqlite:"):
        return None
    rest = url[len("sqlite:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest:
        raise ConfigError("a sqlite URL names a file: sqlite:///path/to/fleet.db")
    return Path(rest)


class Transaction:
    """A cursor inside one transaction; queries use ``?`` placeholders in both dialects."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self._cursor = cursor
        self.dialect = dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Transaction:
        self._cursor.execute(self.dialect.sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(self.dialect.sql(sql), [tuple(r) for r in rows])

    def fetchone(self) -> Row | None:
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self) -> list[Row]:
        return [tuple(r) for r in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class Database:
    """A connection to either database; :meth:`transaction` is the only way in."""

    def __init__(self, url: str) -> None:
        """Connects; ConfigError for a URL of neither database, DatabaseError when the
        database cannot be reached."""
        self.url = url
        self._lock = threading.RLock()
        self._path = sqlite_path(url)
        if self._path is not None:
            self.dialect = SQLITE
        elif urllib.parse.urlsplit(url).scheme in ("postgresql", "postgres"):
            self.dialect = POSTGRESQL
        else:
            raise ConfigError(
                f"unsupported database URL {describe_url(url)!r}: "
                "use sqlite:///path/to/fleet.db or postgresql://user@host:port/db"
            )
        self._conn: Any = None
        with self._lock:
            self._conn = self._open()

    def describe(self) -> str:
        return describe_url(self.url)

    def _open(self) -> Any:
        if self._path is not None:
            return self._open_sqlite(self._path)
        import psycopg  # noqa: PLC0415 - only for PostgreSQL: SQLite needs nothing more

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise DatabaseError(f"cannot connect to {self.describe()}: {_first_line(e)}") from None

    def _open_sqlite(self, path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # It holds the token hashes and the audit trail: only its owner reads it.
                path.touch(mode=0o600)
            # isolation_level=None: we say BEGIN ourselves (IMMEDIATE for writes).
            conn = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False, timeout=10
            )
            # WAL lets readers (another process, `audit verify`) in while the server writes.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as e:
            raise DatabaseError(f"cannot open {path}: {e}") from None
        return conn

    @contextlib.contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back on an exception.

        Raises DatabaseError when the database cannot be reached (after one reconnect).
        """
        with self._lock:
            if self.dialect is SQLITE:
                with self._sqlite_transaction(write) as tx:
                    yield tx
            else:
                with self._postgresql_transaction() as tx:
                    yield tx

    @contextlib.contextmanager
    def _sqlite_transaction(self, write: bool) -> Iterator[Transaction]:
        conn: sqlite3.Connection = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as e:
            raise DatabaseError(f"{self.describe()}: {e}") from None
        try:
            yield Transaction(conn.cursor(), SQLITE)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as e:
            conn.execute("ROLLBACK")
            raise DatabaseError(f"{self.describe()}: {e}") from None

    @contextlib.contextmanager
    def _postgresql_transaction(self) -> Iterator[Transaction]:
        import psycopg  # noqa: PLC0415 - see _open

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = None
            self._conn = self._open()  # the server restarted, or a failover
        conn: psycopg.Connection[Any] = self._conn
        try:
            with conn.transaction(), conn.cursor() as cursor:
                yield Transaction(cursor, POSTGRESQL)
        except psycopg.OperationalError as e:
            raise DatabaseError(f"{self.describe()}: {_first_line(e)}") from None

    def ping(self) -> None:
        """Raises DatabaseError unless the database answers."""
        with self.transaction(write=False) as tx:
            tx.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def connect(url: str) -> Database:
    return Database(url)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
