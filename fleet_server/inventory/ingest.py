"""What the cars publish, batched and written behind (one transaction per flush).

:meth:`Ingest.receive` runs on paho's network thread: it parses the message and keeps only
the newest value per car and topic in the pending batch. :meth:`Ingest.flush` (every
``flush_interval``, on a worker thread) writes the batch in one transaction.

With several servers each gets part of the live traffic (shared subscription), so two may
hold messages of one car at once. Writes therefore change only what they carry (one
workload's row, the presence columns), and two guards keep an older message from
overwriting a newer one written by another server: a workload state is written only if its
``since`` is not older than the stored one, and presence read from the retained topics at
start is written only if no live presence arrived since that read began.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet_server.db import Database
from fleet_server.inventory import messages
from fleet_server.inventory.messages import AgentState, Presence, WorkloadState
from fleet_server.inventory.store import next_seq

MAX_WORKLOADS_PER_CAR = 512
MAX_AGENTS_PER_CAR = 64
MAX_CARS_PER_BATCH = 20000
"""A batch never holds more cars; beyond, messages wait (back pressure on paho's thread)."""


@dataclass
class Batch:
    seen: dict[str, float] = field(default_factory=dict)
    presence: dict[str, tuple[Presence, float, bool]] = field(default_factory=dict)
    workloads: dict[tuple[str, str], WorkloadState | None] = field(default_factory=dict)
    agents: dict[tuple[str, str], AgentState | None] = field(default_factory=dict)
    drift: dict[str, str | None] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    """Arrival time of each message, for the ingest lag."""
    added: dict[str, list[int]] = field(default_factory=dict)
    """Per car, workloads and agents this batch adds (names not in it before)."""

    def __len__(self) -> int:
        return len(self.arrivals)


class Ingest:
    def __init__(
        self,
        db: Database,
        *,
        counts: Callable[[str], tuple[int, int]] = lambda vin: (0, 0),
        on_lag: Callable[[list[float]], None] = lambda lags: None,
    ) -> None:
        self._db = db
        self._lock = threading.Condition()
        self._batch = Batch()
        self._counts = counts
        """(workloads, agents) the cache knows of a car: bounds what one car can add."""
        self._on_lag = on_lag
        self._writing: Batch | None = None
        self.sync_started = 0.0
        """When the current read of retained topics began (the presence guard)."""
        self.received = 0
        self.ignored = 0

    def receive(self, topic: str, payload: bytes, retained: bool) -> None:
        message = messages.parse(topic, payload)
        arrival = time.time()
        with self._lock:
            self.received += 1
            if message is None:
                self.ignored += 1
                return
            self._lock.wait_for(lambda: len(self._batch.seen) < MAX_CARS_PER_BATCH, 5)
            batch = self._batch
            vin = message.vin
            kind = message.kind
            if kind == "status":
                batch.presence[vin] = (message.value, arrival, retained)
            elif kind == "workload":
                key = (vin, message.name)
                if message.value is not None and key not in batch.workloads:
                    if self._count(vin, 0) >= MAX_WORKLOADS_PER_CAR:
                        self.ignored += 1
                        return
                    batch.added.setdefault(vin, [0, 0])[0] += 1
                batch.workloads[key] = message.value
            elif kind == "agent":
                key = (vin, message.name)
                if message.value is not None and key not in batch.agents:
                    if self._count(vin, 1) >= MAX_AGENTS_PER_CAR:
                        self.ignored += 1
                        return
                    batch.added.setdefault(vin, [0, 0])[1] += 1
                batch.agents[key] = message.value
            elif kind == "drift":
                batch.drift[vin] = message.value
            elif kind == "outcome":
                batch.outcomes[vin] = message.value
            batch.seen[vin] = arrival
            batch.arrivals.append(arrival)

    def _count(self, vin: str, kind: int) -> int:
        """At most how many workloads (0) or agents (1) the car has, pending ones included:
        the cache's count, plus what the batch being written and this one add."""
        count = self._counts(vin)[kind]
        for batch in (self._writing, self._batch):
            if batch is not None:
                count += batch.added.get(vin, (0, 0))[kind]
        return count

    def settled(self) -> None:
        """The batch last written is in the cache now (called after the poll)."""
        with self._lock:
            self._writing = None

    def pending(self) -> int:
        with self._lock:
            return len(self._batch)

    def flush(self) -> int:
        """Writes what is pending in one transaction; returns how many messages it held."""
        with self._lock:
            batch, self._batch = self._batch, Batch()
            self._writing = batch
            self._lock.notify_all()
        if not batch.arrivals:
            return 0
        try:
            self._write(batch)
        except BaseException:
            self._requeue(batch)
            raise
        done = time.time()
        self._on_lag([done - a for a in batch.arrivals])
        return len(batch)

    def _requeue(self, batch: Batch) -> None:
        """Puts a batch that could not be written back in front of newer messages."""
        with self._lock:
            self._writing = None
            newer, self._batch = self._batch, batch
            for name in ("seen", "presence", "workloads", "agents", "drift", "outcomes"):
                getattr(batch, name).update(getattr(newer, name))
            for vin, (workloads, agents) in newer.added.items():
                added = batch.added.setdefault(vin, [0, 0])
                added[0] += workloads
                added[1] += agents
            batch.arrivals.extend(newer.arrivals)

    def _write(self, batch: Batch) -> None:
        with self._db.transaction() as tx:
            seq = next_seq(tx)
            tx.executemany(
                "INSERT INTO cars (vin, seq, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT (vin) DO UPDATE SET seq = excluded.seq, "
                "last_seen = excluded.last_seen",
                [(vin, seq, seen) for vin, seen in sorted(batch.seen.items())],
            )
            live = [
                (p, at, vin) for vin, (p, at, retained) in batch.presence.items() if not retained
            ]
            kept = [(p, at, vin) for vin, (p, at, retained) in batch.presence.items() if retained]
            presence_sql = (
                "UPDATE cars SET online = ?, online_since = CASE WHEN online = ? AND "
                "online_since IS NOT NULL THEN online_since ELSE ? END, connector_version = ?, "
                "presence = ?, reported_labels = ?, presence_at = ? WHERE vin = ?"
            )
            rows = [
                (
                    int(p.online),
                    int(p.online),
                    at,
                    p.connector_version,
                    p.detail,
                    json.dumps(p.labels, sort_keys=True),
                    at,
                    vin,
                )
                for p, at, vin in live
            ]
            tx.executemany(presence_sql, rows)
            tx.executemany(
                presence_sql + " AND (presence_at IS NULL OR presence_at < ?)",
                [
                    (
                        int(p.online),
                        int(p.online),
                        at,
                        p.connector_version,
                        p.detail,
                        json.dumps(p.labels, sort_keys=True),
                        at,
                        vin,
                        self.sync_started,
                    )
                    for p, at, vin in kept
                ],
            )
            tx.executemany(
                "INSERT INTO car_workloads (vin, name, agent, state, substate, info, "
                "instance_id, since) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vin, name) "
                "DO UPDATE SET agent = excluded.agent, state = excluded.state, "
                "substate = excluded.substate, info = excluded.info, "
                "instance_id = excluded.instance_id, since = excluded.since "
                "WHERE car_workloads.since <= excluded.since",
                [
                    (vin, name, w.agent, w.state, w.substate, w.info, w.instance_id, w.since)
                    for (vin, name), w in batch.workloads.items()
                    if w is not None
                ],
            )
            tx.executemany(
                "DELETE FROM car_workloads WHERE vin = ? AND name = ?",
                [key for key, w in batch.workloads.items() if w is None],
            )
            tx.executemany(
                "INSERT INTO car_agents (vin, name, connected, cpu_usage, free_memory, since) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vin, name) DO UPDATE SET "
                "connected = excluded.connected, cpu_usage = excluded.cpu_usage, "
                "free_memory = excluded.free_memory, since = excluded.since "
                "WHERE car_agents.since <= excluded.since",
                [
                    (vin, name, int(a.connected), a.cpu_usage, a.free_memory, a.since)
                    for (vin, name), a in batch.agents.items()
                    if a is not None
                ],
            )
            tx.executemany(
                "DELETE FROM car_agents WHERE vin = ? AND name = ?",
                [key for key, a in batch.agents.items() if a is None],
            )
            tx.executemany(
                "UPDATE cars SET drift = ? WHERE vin = ?",
                [(d, vin) for vin, d in batch.drift.items()],
            )
            tx.executemany(
                "UPDATE cars SET last_outcome = ? WHERE vin = ?",
                [(o, vin) for vin, o in batch.outcomes.items()],
            )
