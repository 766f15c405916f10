"""Plan replies for people: one line per workload and config that would change, per car.

A plan whose apply (or delete) would be refused, by the car's policy or by Ankaios, counts
as a failed car: the exit code then tells a script that the real request would fail.
"""

from __future__ import annotations

from typing import Any

from fleetctl.client.results import CarResult, RunResult, Status

WOULD_BE_DENIED = "WOULD_BE_DENIED"
WOULD_BE_REJECTED = "WOULD_BE_REJECTED"


def judge(result: RunResult) -> None:
    """Marks cars whose planned request would be refused as failed, saying by whom."""
    for car in result.cars:
        if not car.ok or not isinstance(car.reply, dict):
            continue
        policy = car.reply.get("policy") or {}
        ankaios = car.reply.get("ankaios") or {}
        if policy.get("verdict") == "denied":
            car.status = Status.FAILED
            car.code = WOULD_BE_DENIED
            car.message = f"{policy.get('code')}: {policy.get('message')}"
        elif ankaios.get("verdict") == "rejected":
            car.status = Status.FAILED
            car.code = WOULD_BE_REJECTED
            car.message = str(ankaios.get("message"))


def details(car: CarResult) -> list[str]:
    """Table lines for one car's plan."""
    lines = [f"{car.code}: {car.message}"] if car.code is not None else []
    reply = car.reply if isinstance(car.reply, dict) else None
    if reply is None:
        return lines or ["-"]
    changes = [
        *(_workload(name, entry) for name, entry in sorted(_items(reply, "workloads"))),
        *(
            f"config {name}: {entry.get('action')}"
            for name, entry in sorted(_items(reply, "configs"))
        ),
    ]
    lines.extend(changes or ["nothing to do"])
    lines.extend(f"warning: {w}" for w in reply.get("warnings") or [])
    return lines


def _items(reply: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    value = reply.get(key)
    if not isinstance(value, dict):
        return []
    return [(str(k), v) for k, v in value.items() if isinstance(v, dict)]


def _workload(name: str, entry: dict[str, Any]) -> str:
    text = f"workload {name}: {entry.get('action')}"
    if entry.get("agent"):
        text += f" on {entry['agent']}"
    fields = entry.get("fields")
    if isinstance(fields, dict) and fields:
        text += f" ({', '.join(sorted(fields))} differ"
        configs = entry.get("configs")
        if configs:
            text += f"; re-rendered from config {', '.join(map(str, configs))}"
        text += ")"
    return text
