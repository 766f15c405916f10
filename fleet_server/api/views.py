"""Cars as the API shows them. An offline car's workloads are its last known states, never
"running": ``state`` is ``unknown`` and ``last_known`` holds what was reported, as of when
the car went offline."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fleet_server.inventory.cache import Car, Workload


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _workload(w: Workload, online: bool, offline_since: str | None) -> dict[str, Any]:
    state = {
        "state": w.state,
        "substate": w.substate,
        "info": w.info,
        "instance_id": w.instance_id,
        "since": w.since,
    }
    if online:
        return {"name": w.name, "agent": w.agent, **state}
    return {
        "name": w.name,
        "agent": w.agent,
        "state": "unknown",
        "last_known": state,
        "last_known_at": offline_since,
    }


def _document(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def summary(car: Car) -> dict[str, Any]:
    since = iso(car.online_since)
    return {
        "vin": car.vin,
        "online": car.online,
        "online_since": since,
        "connector_version": car.connector_version,
        "labels": dict(car.labels),
        "workloads": [_workload(w, car.online, since) for w in car.workloads],
        "last_outcome": _document(car.last_outcome),
        "last_seen": iso(car.last_seen),
    }


def detail(car: Car) -> dict[str, Any]:
    return {
        **summary(car),
        "labels_reported": dict(car.reported_labels),
        "labels_set": dict(car.api_labels),
        "presence": _document(car.presence) or {},
        "agents": [
            {
                "name": a.name,
                "connected": a.connected if car.online else None,
                "cpu_usage": a.cpu_usage,
                "free_memory": a.free_memory,
                "since": a.since,
            }
            for a in car.agents
        ],
        "drift": _document(car.drift),
    }
