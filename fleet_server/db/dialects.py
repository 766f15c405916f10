"""What differs between the two databases, and nothing more.

Both speak ``INSERT ... ON CONFLICT (...) DO UPDATE SET x = excluded.x`` and ``RETURNING``,
so queries are written once with ``?`` placeholders; the dialect turns them into psycopg's
``%s``, fills the few type names the migrations differ in, and says how to lock a row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    for_update: str
    """Appended to a SELECT that must lock its row until the transaction ends."""
    types: dict[str, str]
    """Placeholders in migrations, e.g. ``{real}``, and what they are in this dialect."""

    def sql(self, text: str) -> str:
        """A query written with ``?`` placeholders, in this dialect's paramstyle."""
        if self.name == "sqlite":
            return text
        # psycopg's paramstyle is %s, so a literal % must be doubled first.
        return text.replace("%", "%%").replace("?", "%s")

    def migration(self, text: str) -> str:
        return text.format_map(self.types)


SQLITE = Dialect(
    name="sqlite",
    for_update="",  # BEGIN IMMEDIATE already holds the whole database
    types={"real": "REAL", "bigint": "INTEGER", "identity": "INTEGER PRIMARY KEY AUTOINCREMENT"},
)

POSTGRESQL = Dialect(
    name="postgresql",
    for_update=" FOR UPDATE",
    types={
        "real": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "identity": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
)
