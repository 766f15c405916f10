"""Who carries out a rollout: a lease row per rollout (owner, expiry) in the shared database.

The owner renews it well before it expires (every third of the lease time); any instance
takes a lease that is free or expired. Both are one conditional UPDATE, so two instances
racing for a lease cannot both win. A takeover (the previous owner's lease ran out: it died
or lost the database) is audited. Times are wall-clock seconds: the instances share a
database, and the lease time (default 15 s) dwarfs the clock skew of synchronised hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet_server import audit
from fleet_server.db import Database


@dataclass(frozen=True)
class Taken:
    previous: str | None
    """The owner whose lease had expired (a takeover), or None for a free lease."""


def acquire(db: Database, rollout_id: str, owner: str, *, now: float, ttl: float) -> Taken | None:
    """Takes the lease if it is free or expired; None when another instance holds it."""
    with db.transaction() as tx:
        row = tx.execute(
            "SELECT owner, expires_at FROM rollout_leases WHERE rollout_id = ?"  # noqa: S608
            + tx.dialect.for_update,
            (rollout_id,),
        ).fetchone()
        if row is None:
            return None
        previous, expires = row[0], float(row[1])
        if previous is not None and previous != owner and expires > now:
            return None
        tx.execute(
            "UPDATE rollout_leases SET owner = ?, expires_at = ?, "
            "takeovers = takeovers + ? WHERE rollout_id = ? "
            "AND (owner IS NULL OR owner = ? OR expires_at <= ?)",
            (owner, now + ttl, int(previous not in (None, owner)), rollout_id, owner, now),
        )
        if tx.rowcount != 1:
            return None
        taken = Taken(previous if previous != owner else None)
        if taken.previous is not None:
            audit.append(
                tx,
                actor=f"fleet-server/{owner}",
                action="rollout.takeover",
                detail={"rollout": rollout_id, "from": taken.previous, "to": owner},
            )
    return taken


def renew(db: Database, rollout_id: str, owner: str, *, now: float, ttl: float) -> bool:
    """Extends our lease; False when it is no longer ours (it expired and was taken)."""
    with db.transaction() as tx:
        tx.execute(
            "UPDATE rollout_leases SET expires_at = ? WHERE rollout_id = ? AND owner = ? "
            "AND expires_at > ?",
            (now + ttl, rollout_id, owner, now),
        )
        return tx.rowcount == 1


def release(db: Database, rollout_id: str, owner: str) -> None:
    """Gives the lease up (a clean stop), so another instance need not wait for expiry."""
    with db.transaction() as tx:
        tx.execute(
            "UPDATE rollout_leases SET owner = NULL, expires_at = 0 "
            "WHERE rollout_id = ? AND owner = ?",
            (rollout_id, owner),
        )


def owner_of(db: Database, rollout_id: str) -> tuple[str | None, float] | None:
    with db.transaction(write=False) as tx:
        row = tx.execute(
            "SELECT owner, expires_at FROM rollout_leases WHERE rollout_id = ?", (rollout_id,)
        ).fetchone()
    return None if row is None else (row[0], float(row[1]))
