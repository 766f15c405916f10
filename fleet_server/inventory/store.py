"""Writes to the inventory tables; every write takes the next change sequence number.

``next_seq`` increments the one counter row first thing in a transaction. On PostgreSQL
that row stays locked until commit, so writers commit in the order of their numbers and a
reader that polls ``seq > last`` never passes over a change committed late (SQLite writers
are serial anyway). Every car row a transaction touches gets its number.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fleet_server.db.database import Transaction


def next_seq(tx: Transaction) -> int:
    row = tx.execute(
        "UPDATE change_counter SET seq = seq + 1 WHERE id = 1 RETURNING seq"
    ).fetchone()
    assert row is not None, "change_counter is created by the first migration"
    return int(row[0])


def touch_car(tx: Transaction, vin: str, seq: int) -> bool:
    """Marks a known car changed; False when there is no such car."""
    tx.execute("UPDATE cars SET seq = ? WHERE vin = ?", (seq, vin))
    return tx.rowcount > 0


def set_labels(tx: Transaction, vin: str, changes: Mapping[str, str | None]) -> bool:
    """Sets (value) or removes (None) labels set through the API; False for an unknown car."""
    if not touch_car(tx, vin, next_seq(tx)):
        return False
    tx.executemany(
        "INSERT INTO car_labels (vin, key, value) VALUES (?, ?, ?) "
        "ON CONFLICT (vin, key) DO UPDATE SET value = excluded.value",
        [(vin, k, v) for k, v in changes.items() if v is not None],
    )
    tx.executemany(
        "DELETE FROM car_labels WHERE vin = ? AND key = ?",
        [(vin, k) for k, v in changes.items() if v is None],
    )
    return True


def now() -> float:
    return time.time()
