"""Live workload states as the connectors publish them, retained, on
``vehicle/<VIN>/workloads/<workload>``: for ``watch`` and ``get workloads``."""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Topics
from fleetctl import output
from fleetctl.client.car_data import json_object, plain_text
from fleetctl.client.connection import Connection

_ANY_CAR = Topics("+")


@dataclass(frozen=True)
class WorkloadRow:
    vin: str
    workload: str
    state: str
    substate: str = ""
    agent: str = ""
    instance_id: str = ""
    info: str = ""
    since: str = ""

    @classmethod
    def parse(cls, vin: str, workload: str, payload: bytes) -> WorkloadRow | None:
        """None for an empty payload: the workload is gone."""
        if not payload:
            return None
        data = json_object(payload)
        if data is None:
            return cls(vin, workload, "invalid")

        def text(key: str) -> str:
            return plain_text(data.get(key))

        return cls(
            vin,
            workload,
            text("state") or "unknown",
            text("substate"),
            text("agent"),
            text("instance_id"),
            text("info"),
            text("since"),
        )

    def describe(self) -> str:
        info = f": {self.info}" if self.info else ""
        return f"{self.state} ({self.substate}) on {self.agent or '-'}{info}"

    def to_dict(self) -> dict[str, str]:
        return {
            "vin": self.vin,
            "workload": self.workload,
            "state": self.state,
            "substate": self.substate,
            "agent": self.agent,
            "instance_id": self.instance_id,
            "info": self.info,
            "since": self.since,
        }


def live_topic(topic: str) -> tuple[str, str, str] | None:
    """(VIN, "workloads" or "agents", name) of a live-state topic, else None."""
    parts = topic.split("/")
    prefix = _ANY_CAR.base.split("/")[0]
    if len(parts) == 4 and parts[0] == prefix and parts[2] in ("workloads", "agents"):
        return parts[1], parts[2], parts[3]
    return None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def watch_line(topic: str, payload: bytes, *, raw: bool, at: str) -> str:
    """One line of ``fleetctl watch``; live states in words, anything else as text."""
    text = payload.decode("utf-8", "replace")
    if raw:
        return f"{topic} {text}"
    parsed = live_topic(topic)
    if parsed is not None and parsed[1] == "workloads":
        row = WorkloadRow.parse(parsed[0], parsed[2], payload)
        text = "removed" if row is None else row.describe()
    elif parsed is not None and not payload:
        text = "removed"
    return f"{at} {topic} {text}"


def watch_filters(vins: Sequence[str], *, states_only: bool) -> list[str]:
    cars = [Topics(vin) for vin in vins] if vins else [_ANY_CAR]
    if states_only:
        return [f for car in cars for f in (car.workloads_filter, car.agents_filter)]
    return [f"{car.base}/#" for car in cars]


def collect(
    settings: BrokerSettings, *, vins: Sequence[str], listen: float, timeout: float
) -> list[WorkloadRow]:
    """The retained workload states of the cars named (or all), without asking any car.

    Like ``status``: retained messages come right after the SUBACK; the set is complete
    after ``listen`` seconds without a new one, or after ``timeout`` in any case.
    """
    arrived: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    connection = Connection(
        settings, lambda topic, payload, retained: arrived.put((topic, payload))
    )
    cars = [Topics(vin) for vin in vins] if vins else [_ANY_CAR]
    found: dict[tuple[str, str], WorkloadRow] = {}
    connection.open(timeout)
    try:
        connection.subscribe([car.workloads_filter for car in cars], timeout)
        deadline = time.monotonic() + timeout
        while True:
            wait = min(listen, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                topic, payload = arrived.get(timeout=wait)
            except queue.Empty:
                break
            parsed = live_topic(topic)
            if parsed is None or parsed[1] != "workloads":
                continue
            row = WorkloadRow.parse(parsed[0], parsed[2], payload)
            if row is None:
                found.pop((parsed[0], parsed[2]), None)
            else:
                found[(parsed[0], parsed[2])] = row
    finally:
        connection.close()
    return [found[key] for key in sorted(found)]


def render(rows: Sequence[WorkloadRow], fmt: str) -> str:
    if fmt != "table":
        return output.dump({"workloads": [row.to_dict() for row in rows]}, fmt)
    if not rows:
        return "no workload states found"
    header = ["VIN", "WORKLOAD", "STATE", "SUBSTATE", "AGENT", "SINCE", "INFO"]
    body = [[r.vin, r.workload, r.state, r.substate, r.agent, r.since, r.info] for r in rows]
    return output.table([header, *body])
