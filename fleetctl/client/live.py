"""Live workload states as the connectors publish them, retained, on
``vehicle/<VIN>/workloads/<workload>``: for ``watch`` and ``get workloads``."""

from __future__ import annotations

import dataclasses
import queue
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Topics
from fleetctl import output
from fleetctl.client.car_data import json_object, plain_text
from fleetctl.client.connection import Connection
from fleetctl.client.presence import Presence, vin_of_status_topic

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
    car_status: str = "online"
    """The car's presence: only an ``online`` car's states are live; the others are what
    its connector published last (``offline``, or ``unknown``: no presence at all)."""
    car_since: str = ""
    """Since when the car has had that presence."""

    @property
    def last_known(self) -> bool:
        return self.car_status != "online"

    @property
    def shown_state(self) -> str:
        return f"{self.state} (last known)" if self.last_known else self.state

    @property
    def shown_info(self) -> str:
        if not self.last_known:
            return self.info
        if self.car_status == "unknown":
            car = "car has no presence"
        else:
            car = f"car {self.car_status} since {self.car_since or 'an unknown time'}"
        return f"{car}; {self.info}" if self.info else car

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "vin": self.vin,
            "workload": self.workload,
            "state": self.state,
            "substate": self.substate,
            "agent": self.agent,
            "instance_id": self.instance_id,
            "info": self.info,
            "since": self.since,
            "last_known": self.last_known,
            "car": {"status": self.car_status, "since": self.car_since},
        }


@dataclass(frozen=True)
class AgentRow:
    """An agent as the car's connector last published it (``vehicle/<VIN>/agents/<name>``)."""

    vin: str
    agent: str
    connected: str
    cpu_usage: str = ""
    free_memory: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    since: str = ""

    @classmethod
    def parse(cls, vin: str, agent: str, payload: bytes) -> AgentRow | None:
        if not payload:
            return None
        data = json_object(payload)
        if data is None:
            return cls(vin, agent, "invalid")
        tags = data.get("tags")
        return cls(
            vin,
            agent,
            "yes" if data.get("connected") is True else "no",
            plain_text(data.get("cpu_usage")) if data.get("cpu_usage") is not None else "",
            plain_text(data.get("free_memory")) if data.get("free_memory") is not None else "",
            {plain_text(k): plain_text(v) for k, v in tags.items()}
            if isinstance(tags, dict)
            else {},
            plain_text(data.get("since")),
        )

    @property
    def load(self) -> str:
        parts = []
        if self.cpu_usage:
            parts.append(f"cpu {self.cpu_usage}%")
        if self.free_memory.isdigit():
            parts.append(f"free {int(self.free_memory) / 2**30:.1f} GiB")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Retained:
    """What the connectors keep on the broker for the cars: presence, workloads, agents."""

    presences: dict[str, Presence] = dataclasses.field(default_factory=dict)
    workloads: list[WorkloadRow] = dataclasses.field(default_factory=list)
    agents: list[AgentRow] = dataclasses.field(default_factory=list)


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
    """The retained workload states of the cars named (or all), without asking any car,
    each with its car's presence: a car that is not online has last known states."""
    return collect_retained(settings, vins=vins, listen=listen, timeout=timeout).workloads


def collect_retained(
    settings: BrokerSettings, *, vins: Sequence[str], listen: float, timeout: float
) -> Retained:
    """Presence, workload states and agents of the cars named (or all), as retained.

    Like ``status``: retained messages come right after the SUBACK; the set is complete
    after ``listen`` seconds without a new one, or after ``timeout`` in any case.
    """
    arrived: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    connection = Connection(
        settings, lambda topic, payload, retained: arrived.put((topic, payload))
    )
    cars = [Topics(vin) for vin in vins] if vins else [_ANY_CAR]
    found: dict[tuple[str, str], WorkloadRow] = {}
    agents: dict[tuple[str, str], AgentRow] = {}
    presences: dict[str, Presence] = {}
    connection.open(timeout)
    try:
        connection.subscribe(
            [f for car in cars for f in (car.workloads_filter, car.agents_filter, car.status)],
            timeout,
        )
        deadline = time.monotonic() + timeout
        while True:
            wait = min(listen, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                topic, payload = arrived.get(timeout=wait)
            except queue.Empty:
                break
            status_of = vin_of_status_topic(topic)
            if status_of is not None:
                presence = Presence.parse(status_of, payload)
                if presence is None:
                    presences.pop(status_of, None)
                else:
                    presences[status_of] = presence
                continue
            parsed = live_topic(topic)
            if parsed is None:
                continue
            vin, kind, name = parsed
            if kind == "agents":
                agent = AgentRow.parse(vin, name, payload)
                if agent is None:
                    agents.pop((vin, name), None)
                else:
                    agents[(vin, name)] = agent
                continue
            row = WorkloadRow.parse(vin, name, payload)
            if row is None:
                found.pop((vin, name), None)
            else:
                found[(vin, name)] = row
    finally:
        connection.close()
    return Retained(
        presences,
        [_with_presence(found[key], presences.get(key[0])) for key in sorted(found)],
        [agents[key] for key in sorted(agents)],
    )


def _with_presence(row: WorkloadRow, presence: Presence | None) -> WorkloadRow:
    if presence is None:
        return dataclasses.replace(row, car_status="unknown")
    return dataclasses.replace(row, car_status=presence.status, car_since=presence.since)


def summary(rows: Sequence[WorkloadRow]) -> dict[str, int]:
    """Workloads by state on online cars; those of other cars apart, as last known."""
    counts: Counter[str] = Counter(row.state for row in rows if not row.last_known)
    return {
        "total": len(rows),
        **dict(sorted(counts.items())),
        "last_known": sum(1 for row in rows if row.last_known),
    }


def render(rows: Sequence[WorkloadRow], fmt: str) -> str:
    """A table (``wide``: with each instance's id), or JSON / YAML."""
    if fmt not in ("table", "wide"):
        return output.dump(
            {"summary": summary(rows), "workloads": [row.to_dict() for row in rows]}, fmt
        )
    if not rows:
        return "no workload states found"
    wide = fmt == "wide"
    header = ["VIN", "WORKLOAD", "STATE", "SUBSTATE", "AGENT", "SINCE", "INFO"]
    if wide:
        header.insert(5, "INSTANCE")
    body = []
    for r in rows:
        cells = [r.vin, r.workload, r.shown_state, r.substate, r.agent, r.since, r.shown_info]
        if wide:
            cells.insert(5, r.instance_id)
        body.append(cells)
    counts = summary(rows)
    parts = [f"{n} {state}" for state, n in counts.items() if state not in ("total", "last_known")]
    away = {row.vin for row in rows if row.last_known}
    if away:
        parts.append(f"{counts['last_known']} last known on {len(away)} car(s) not online")
    cars = len({row.vin for row in rows})
    line = f"{len(rows)} workload(s) on {cars} car(s): {', '.join(parts)}"
    failed = [False, *(r.state == "failed" and not r.last_known for r in rows)]
    return output.table([header, *body], highlight=failed) + "\n" + output.terminal_safe(line)


def render_agents(agents: Sequence[AgentRow], presences: dict[str, Presence], fmt: str) -> str:
    if fmt not in ("table", "wide"):
        return output.dump({"agents": [agent.to_dict() for agent in agents]}, fmt)
    if not agents:
        return "no agents found"
    rows = [["VIN", "AGENT", "CONNECTED", "LOAD", "TAGS", "SINCE"]]
    for agent in agents:
        presence = presences.get(agent.vin)
        online = presence is not None and presence.status == "online"
        rows.append(
            [
                agent.vin,
                agent.agent,
                agent.connected if online else f"{agent.connected} (last known)",
                agent.load,
                ", ".join(f"{k}={v}" for k, v in sorted(agent.tags.items())),
                agent.since,
            ]
        )
    return output.table(rows)


def render_car(vin: str, retained: Retained, fmt: str) -> str:
    """``describe car``: presence, then agents, then workloads."""
    presence = retained.presences.get(vin)
    if fmt not in ("table", "wide"):
        return output.dump(
            {
                "vin": vin,
                "presence": None if presence is None else presence.to_dict(),
                "agents": [agent.to_dict() for agent in retained.agents],
                "workloads": [row.to_dict() for row in retained.workloads],
            },
            fmt,
        )
    if presence is None:
        facts = [("Car", vin), ("Status", "no presence on the broker")]
    else:
        facts = [
            ("Car", vin),
            ("Status", f"{presence.status} since {presence.since or '-'}"),
            ("Ankaios", presence.ankaios or "-"),
            (
                "Connector",
                f"{presence.connector_version or '-'} (ankaios-sdk {presence.sdk_version or '-'})"
                f", started {presence.started_at or '-'}",
            ),
        ]
    width = max(len(name) for name, _ in facts) + 2
    lines = [output.terminal_safe(f"{name + ':':<{width}}{value}") for name, value in facts]
    lines.append("Agents:")
    agents = render_agents(retained.agents, retained.presences, "table")
    lines.extend(f"  {line}" for line in agents.splitlines())
    lines.append("Workloads:")
    workloads = render(retained.workloads, "table")
    lines.extend(f"  {line}" for line in workloads.splitlines())
    return "\n".join(lines)
