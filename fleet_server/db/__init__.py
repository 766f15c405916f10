"""The database: plain DB-API on SQLite (standard library) or PostgreSQL (psycopg 3)."""

from fleet_server.db.database import Database, DatabaseError, connect, describe_url
from fleet_server.db.migrations import migrate

__all__ = ["Database", "DatabaseError", "connect", "describe_url", "migrate"]
