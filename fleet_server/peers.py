"""The other servers on the same database, and noticing when one of them stops.

Each server writes a heartbeat row every ``interval``. A server that dies (SIGKILL, a
crash, a lost host) takes with it the live messages it had received but not yet written,
and its share of the live traffic in flight; everything the inventory is made of is
retained on the broker, so a peer that notices the silence reads the retained topics again.

A peer counts as gone when its heartbeat value has not changed for ``STALE_BEATS``
intervals of *our* clock, so clocks of different hosts need not agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fleet_server.db import Database

STALE_BEATS = 3
FORGET_AFTER = 3600.0
"""Rows of servers silent this long (by their own clock) are deleted."""


@dataclass
class Peers:
    db: Database
    instance: str
    interval: float
    started_at: float = field(default_factory=time.time)
    _seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Other instance -> (its last heartbeat value, our monotonic time it changed)."""
    _gone: set[str] = field(default_factory=set)

    def beat(self) -> list[str]:
        """Writes our heartbeat; returns the peers that went silent since the last call."""
        now = time.time()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO server_instances (instance, started_at, heartbeat) VALUES (?, ?, ?) "
                "ON CONFLICT (instance) DO UPDATE SET heartbeat = excluded.heartbeat",
                (self.instance, self.started_at, now),
            )
            tx.execute("DELETE FROM server_instances WHERE heartbeat < ?", (now - FORGET_AFTER,))
            rows = tx.execute("SELECT instance, heartbeat FROM server_instances").fetchall()
        tick = time.monotonic()
        silent: list[str] = []
        for instance, heartbeat in rows:
            if instance == self.instance:
                continue
            previous = self._seen.get(instance)
            if previous is None or previous[0] != heartbeat:
                self._seen[instance] = (heartbeat, tick)
                self._gone.discard(instance)
            elif tick - previous[1] > STALE_BEATS * self.interval and instance not in self._gone:
                self._gone.add(instance)
                silent.append(instance)
        return silent

    def alive(self) -> list[str]:
        """The peers heard from lately (not counting this server)."""
        return sorted(set(self._seen) - self._gone)

    def leave(self) -> None:
        """A clean stop: nothing is lost, so no peer needs to read the retained topics."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM server_instances WHERE instance = ?", (self.instance,))
