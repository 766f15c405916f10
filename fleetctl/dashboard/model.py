"""What the dashboard knows about the fleet, kept from the messages the cars publish.

Every message is turned into changes (plain JSON-able dicts) that the page applies to its own
copy; a page that connects gets the whole model once, then only changes. Values from the
broker are reduced to short strings here so that nothing a car publishes can grow the model
or the page without bound; the page shows them as text only.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet_connector.mqtt.topics import Operation
from fleetctl.client.car_data import json_object

# A value from the broker is cut to this many characters (an info string, a tag, ...).
MAX_TEXT = 500
# Workloads and agents kept per car: a car publishing more is cut off, not the dashboard.
MAX_PER_CAR = 200
OUTCOMES_KEPT = 100
# Cars kept when no cars are named: anyone who may publish under vehicle/ could otherwise
# grow the dashboard (and every page) without bound with made-up VINs.
MAX_CARS = 20_000

WORKLOAD_FIELDS = ("agent", "instance_id", "state", "substate", "info", "since")
PRESENCE_FIELDS = ("status", "ankaios", "connector_version", "sdk_version", "started_at", "since")
WORKLOAD_STATES = (
    "pending",
    "running",
    "stopping",
    "succeeded",
    "failed",
    "not_scheduled",
    "removed",
)

Change = dict[str, Any]


def text(value: Any) -> str:
    """A broker value as bounded text; structures become compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        result = value
    elif isinstance(value, bool | int | float):
        result = json.dumps(value)
    else:
        try:
            result = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            result = str(value)
    return result if len(result) <= MAX_TEXT else result[: MAX_TEXT - 1] + "\u2026"


def _fields(data: dict[str, Any] | None, names: Iterable[str]) -> dict[str, str]:
    data = data or {}
    return {name: text(data.get(name)) for name in names}


def _flat(data: dict[str, Any] | None) -> dict[str, str]:
    """Any object as name -> text, for messages whose fields we only show."""
    if data is None:
        return {"invalid": "not a JSON object"}
    return {text(k)[:100]: text(v) for k, v in list(data.items())[:50]}


@dataclass
class Car:
    vin: str
    presence: dict[str, str] | None = None
    workloads: dict[str, dict[str, str]] = field(default_factory=dict)
    agents: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vin": self.vin,
            "presence": self.presence,
            "workloads": self.workloads,
            "agents": self.agents,
        }


@dataclass(frozen=True)
class Topic:
    """A topic under ``vehicle/<VIN>/`` the dashboard reads, taken apart."""

    vin: str
    kind: str  # status, workload, agent, outcome, logs
    name: str = ""  # workload or agent name; the operation of an outcome
    request_id: str = ""


_OUTCOME_OPERATIONS = {
    Operation.APPLY.value.split("/")[1]: "apply",
    Operation.DELETE.value.split("/")[1]: "delete",
}


def parse_topic(topic: str, prefix: str = "vehicle") -> Topic | None:
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != prefix or not parts[1]:
        return None
    vin, rest = parts[1], parts[2:]
    if rest == ["status"]:
        return Topic(vin, "status")
    if len(rest) == 2 and rest[0] == "workloads" and rest[1]:
        return Topic(vin, "workload", rest[1])
    if len(rest) == 2 and rest[0] == "agents" and rest[1]:
        return Topic(vin, "agent", rest[1])
    if len(rest) >= 3 and rest[0] == "manifest" and rest[2] == "resp":
        operation = _OUTCOME_OPERATIONS.get(rest[1])
        if operation is not None:
            return Topic(vin, "outcome", operation, "/".join(rest[3:]))
    if len(rest) == 3 and rest[:2] == ["logs", "resp"]:
        return Topic(vin, "logs", request_id=rest[2])
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def summarize_outcome(data: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether a reply says success, and one line saying what it says."""
    if data is None:
        return False, "not a JSON object"
    error = data.get("error")
    if isinstance(error, dict):
        return False, text(f"{text(error.get('code'))}: {text(error.get('message'))}")
    followed = data.get("outcome")
    if isinstance(followed, str) and isinstance(data.get("workloads"), dict):
        return _summarize_followed(followed, data["workloads"])
    parts = []
    for key, verb in (("added_workloads", "added"), ("deleted_workloads", "deleted")):
        items = data.get(key)
        if isinstance(items, list):
            names = [
                text(i.get("workload_name")) if isinstance(i, dict) else text(i) for i in items
            ]
            parts.append(f"{verb} {', '.join(names) if names else 'nothing'}")
    if parts:
        return True, "; ".join(parts)
    return True, text(data)


# Followed outcomes (``.../req/<id>/follow``) that mean the request did what it asked.
FOLLOWED_OK = frozenset({"running", "succeeded", "removed"})


def _summarize_followed(overall: str, workloads: dict[str, Any]) -> tuple[bool, str]:
    parts = []
    for name, report in list(workloads.items())[:20]:
        if isinstance(report, dict):
            state = "/".join(text(report.get(k)) for k in ("state", "substate") if report.get(k))
            parts.append(
                f"{text(name)} {text(report.get('outcome'))}" + (f" ({state})" if state else "")
            )
    summary = f"followed: {text(overall)}" + (f"; {', '.join(parts)}" if parts else "")
    return overall in FOLLOWED_OK, text(summary)


class FleetModel:
    """The fleet as seen on the broker. Not thread-safe: one event loop owns it."""

    def __init__(self, vins: Iterable[str] = (), prefix: str = "vehicle") -> None:
        self.prefix = prefix
        self.cars: dict[str, Car] = {vin: Car(vin) for vin in vins}
        # With cars named, the fleet is exactly those; cars never seen are shown as such.
        self.fixed = bool(self.cars)
        self.outcomes: deque[dict[str, str]] = deque(maxlen=OUTCOMES_KEPT)
        self._outcome_seq = 0

    def snapshot(self) -> Change:
        return {
            "t": "snapshot",
            "cars": [car.to_dict() for car in self.cars.values()],
            "outcomes": list(self.outcomes),
        }

    def _car(self, vin: str) -> Car | None:
        car = self.cars.get(vin)
        if car is None and not self.fixed and len(self.cars) < MAX_CARS:
            car = self.cars[vin] = Car(vin)
        return car

    def update(self, topic: Topic, payload: bytes) -> list[Change]:
        """Applies one message; returns what changed (nothing for a repeat)."""
        car = self._car(topic.vin)
        if car is None:
            return []
        if topic.kind == "status":
            presence = None if not payload else _fields(json_object(payload), PRESENCE_FIELDS)
            if presence is not None and not presence["status"]:
                presence["status"] = "invalid"
            if presence == car.presence:
                return []
            car.presence = presence
            return [{"t": "car", "vin": car.vin, "presence": presence}]
        if topic.kind == "workload":
            return self._set(car, car.workloads, "wl", topic.name, payload, names=WORKLOAD_FIELDS)
        if topic.kind == "agent":
            return self._set(car, car.agents, "agent", topic.name, payload, names=None)
        if topic.kind == "outcome":
            if not payload:
                return []
            ok, summary = summarize_outcome(json_object(payload))
            self._outcome_seq += 1
            outcome = {
                "seq": str(self._outcome_seq),
                "at": _now(),
                "vin": car.vin,
                "operation": topic.name,
                "request_id": text(topic.request_id),
                "ok": "yes" if ok else "no",
                "summary": summary,
            }
            self.outcomes.appendleft(outcome)
            return [{"t": "outcome", "outcome": outcome}]
        return []

    def _set(
        self,
        car: Car,
        table: dict[str, dict[str, str]],
        kind: str,
        name: str,
        payload: bytes,
        *,
        names: Iterable[str] | None,
    ) -> list[Change]:
        name = text(name)
        if not payload:
            if table.pop(name, None) is None:
                return []
            return [{"t": kind, "vin": car.vin, "name": name, "value": None}]
        data = json_object(payload)
        value = _flat(data) if names is None else _fields(data, names)
        if names is not None and data is None:
            value["state"] = "invalid"
        if table.get(name) == value:
            return []
        if name not in table and len(table) >= MAX_PER_CAR:
            return []
        table[name] = value
        return [{"t": kind, "vin": car.vin, "name": name, "value": value}]
