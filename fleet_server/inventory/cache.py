"""Every car in memory, current within a poll interval across all servers.

The database is the shared truth; each server reads what changed since its last look
(``cars.seq > last``, see store.py) and keeps one compact :class:`Car` per VIN, so listings
and selectors never touch the database. Compact because the goal is 100,000 cars at under
2 KiB each: __slots__, tuples instead of dicts for workloads and agents, interned strings
for the values that repeat across the fleet (states, agent and workload names, labels).
"""

from __future__ import annotations

import bisect
import gc
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fleet_server.db import Database
from fleet_server.db.database import Row, Transaction
from fleet_server.selectors import Selector

_intern = sys.intern


class Workload:
    __slots__ = ("agent", "info", "instance_id", "name", "since", "state", "substate")

    def __init__(self, row: Row) -> None:
        self.name: str = _intern(row[0])
        self.agent: str = _intern(row[1] or "")
        self.state: str = _intern(row[2] or "")
        self.substate: str = _intern(row[3] or "")
        self.info: str = row[4] or ""
        self.instance_id: str = row[5] or ""
        self.since: str = row[6] or ""


class Agent:
    __slots__ = ("connected", "cpu_usage", "free_memory", "name", "since")

    def __init__(self, row: Row) -> None:
        self.name: str = _intern(row[0])
        self.connected = bool(row[1])
        self.cpu_usage: float | None = row[2]
        self.free_memory: int | None = row[3]
        self.since: str = row[4] or ""


class Car:
    __slots__ = (
        "agents",
        "api_labels",
        "connector_version",
        "drift",
        "labels",
        "last_outcome",
        "last_seen",
        "online",
        "online_since",
        "presence",
        "reported_labels",
        "vin",
        "workloads",
    )

    def __init__(self, vin: str) -> None:
        self.vin = vin
        self.online = False
        self.online_since: float | None = None
        self.connector_version: str | None = None
        self.presence: str | None = None
        self.reported_labels: dict[str, str] = _NO_LABELS
        self.api_labels: dict[str, str] = _NO_LABELS
        self.labels: dict[str, str] = _NO_LABELS
        """The car's own labels, overridden by those set through the API."""
        self.drift: str | None = None
        self.last_outcome: str | None = None
        self.last_seen: float | None = None
        self.workloads: tuple[Workload, ...] = ()
        self.agents: tuple[Agent, ...] = ()


FREEZE_AFTER = 10_000
"""New cars since the last gc.freeze() that make the next one worth it."""

# Shared by every car without labels of a kind; never changed (cars are replaced, not edited).
_NO_LABELS: dict[str, str] = {}


def _labels(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {_intern(k): _intern(v) for k, v in items} or _NO_LABELS


def merged(reported: dict[str, str], api: dict[str, str]) -> dict[str, str]:
    """The car's labels: its own, overridden by those set through the API (one dict
    fewer per car when only one kind exists)."""
    if not api:
        return reported
    if not reported:
        return api
    return {**reported, **api}


@dataclass
class Poll:
    """What one poll read: the changed cars, complete, and the sequence number reached."""

    seq: int
    cars: list[Car]


def read_changes(db: Database, last: int) -> Poll:
    """The cars changed after ``last`` (every car for 0), read in one transaction."""
    with db.transaction(write=False) as tx:
        rows = tx.execute(
            "SELECT vin, seq, online, online_since, connector_version, presence, "
            "reported_labels, drift, last_outcome, last_seen FROM cars WHERE seq > ? "
            "ORDER BY seq",
            (last,),
        ).fetchall()
        if not rows:
            return Poll(last, [])
        cars: dict[str, Car] = {}
        seq = last
        for row in rows:
            car = Car(_intern(row[0]))
            seq = max(seq, int(row[1]))
            car.online = bool(row[2])
            car.online_since = row[3]
            car.connector_version = row[4]
            car.presence = row[5]
            car.reported_labels = _labels(_json_dict(row[6]).items())
            car.drift = row[7]
            car.last_outcome = row[8]
            car.last_seen = row[9]
            cars[car.vin] = car
        workloads: dict[str, list[Workload]] = {}
        for row in _rows_for(
            tx,
            cars,
            "name, agent, state, substate, info, instance_id, since",
            "car_workloads",
            last,
        ):
            workloads.setdefault(row[-1], []).append(Workload(row))
        agents: dict[str, list[Agent]] = {}
        for row in _rows_for(
            tx, cars, "name, connected, cpu_usage, free_memory, since", "car_agents", last
        ):
            agents.setdefault(row[-1], []).append(Agent(row))
        api_labels: dict[str, list[tuple[str, str]]] = {}
        for row in _rows_for(tx, cars, "key, value", "car_labels", last):
            api_labels.setdefault(row[-1], []).append((row[0], row[1]))
    for vin, car in cars.items():
        car.workloads = tuple(sorted(workloads.get(vin, ()), key=lambda w: w.name))
        car.agents = tuple(sorted(agents.get(vin, ()), key=lambda a: a.name))
        car.api_labels = _labels(api_labels.get(vin, ()))
        car.labels = merged(car.reported_labels, car.api_labels)
    return Poll(seq, list(cars.values()))


def _rows_for(
    tx: Transaction, cars: dict[str, Car], columns: str, table: str, last: int
) -> Iterator[Row]:
    """Rows of ``table`` for the cars changed after ``last`` (VIN last).

    A first load scans the table. Later polls join on the change sequence (the ``cars_seq``
    index, then the table's key), so they read only the changed cars' rows however many
    changed: a full scan per poll made a restart on a filled database, which rewrites every
    car, quadratic (100,000 cars: 2 minutes until ready). Rows of a car committed after the
    ``cars`` read (PostgreSQL reads each statement's own snapshot) wait for the next poll.
    """
    if last == 0:
        query = f"SELECT {columns}, vin FROM {table}"  # noqa: S608 - names are ours
        params: tuple[int, ...] = ()
    else:
        query = (
            f"SELECT {columns}, t.vin FROM {table} t JOIN cars c ON c.vin = t.vin "  # noqa: S608
            "WHERE c.seq > ?"
        )
        params = (last,)
    for row in tx.execute(query, params).fetchall():
        if row[-1] in cars:
            yield row


def _json_dict(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class LabelSets:
    """One shared mapping per distinct set of labels.

    A fleet has few distinct label sets (region x model x ring: tens, not 100,000), so cars
    with equal labels share one dict: less memory per car, and a selector is judged once
    per set, not once per car (:meth:`Inventory.select`). Safe because a car's labels are
    never changed in place: a change makes a new Car. At most ``limit`` sets are kept;
    beyond, a car keeps its own dict (correct, only not shared).
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._sets: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._limit = limit

    def shared(self, labels: dict[str, str]) -> dict[str, str]:
        if not labels:
            return _NO_LABELS
        key = tuple(sorted(labels.items()))
        found = self._sets.get(key)
        if found is not None:
            return found
        if len(self._sets) < self._limit:
            self._sets[key] = labels
        return labels


class Inventory:
    """The cars by VIN, and the VINs in order for listings. Used on the event loop only."""

    def __init__(self) -> None:
        self.cars: dict[str, Car] = {}
        self._order: list[str] = []
        self._label_sets = LabelSets()
        self.seq = 0
        self.loaded = False
        """Whether one poll has completed (the whole inventory is in memory)."""
        self.listeners: list[Callable[[list[Car]], None]] = []
        """Called (on the event loop) with the cars each poll brought, e.g. to push them to
        a dashboard's pages; a listener must not block."""
        self._unfrozen = 0

    def apply(self, poll: Poll) -> None:
        new = [car.vin for car in poll.cars if car.vin not in self.cars]
        shared = self._label_sets.shared
        for car in poll.cars:
            car.reported_labels = shared(car.reported_labels)
            car.api_labels = shared(car.api_labels)
            car.labels = shared(car.labels)
            self.cars[car.vin] = car
        if len(new) > 64:
            self._order.extend(new)
            self._order.sort()  # one sort for a first load, not 100,000 insertions
        else:
            for vin in new:
                bisect.insort(self._order, vin)
        self.seq = max(self.seq, poll.seq)
        self.loaded = True
        if poll.cars:
            for listener in list(self.listeners):
                listener(poll.cars)
        self._unfrozen += len(new)
        if self._unfrozen >= FREEZE_AFTER:
            # Cars are long-lived: out of the cyclic collector's way, or a full collection
            # walks every one of them and stalls whatever request triggered it (100,000
            # cars: the selector's p99). They hold no cycles, so a replaced car is still
            # freed by its reference count. Only when the fleet grew by that many: what is
            # alive at a freeze and dies in a cycle later is never collected, so freezes
            # stay few (at most one per FREEZE_AFTER cars ever added).
            gc.freeze()
            self._unfrozen = 0

    def get(self, vin: str) -> Car | None:
        return self.cars.get(vin)

    def counts(self, vin: str) -> tuple[int, int]:
        car = self.cars.get(vin)
        return (0, 0) if car is None else (len(car.workloads), len(car.agents))

    def select(self, selector: Selector, online: bool | None = None) -> list[Car]:
        """The cars matching, in VIN order."""
        cars = self.cars
        if selector.empty:
            if online is None:
                return [cars[vin] for vin in self._order]
            return [car for vin in self._order if (car := cars[vin]).online == online]
        # Judged once per distinct label set (cars with equal labels share one dict, see
        # LabelSets): 100,000 cars, a handful of sets. ids stay valid: the cars hold them.
        verdicts: dict[int, bool] = {}
        found = []
        for vin in self._order:
            car = cars[vin]
            if online is not None and car.online != online:
                continue
            labels = car.labels
            verdict = verdicts.get(id(labels))
            if verdict is None:
                verdict = verdicts[id(labels)] = selector.matches(labels)
            if verdict:
                found.append(car)
        return found
