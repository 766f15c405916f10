"""Plan replies for people: one line per workload and config that would change, per car.

A plan whose apply (or delete) would be refused, by the car's policy or by Ankaios, counts
as a failed car: the exit code then tells a script that the real request would fail.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml

from fleetctl.client.results import CarResult, RunResult, Status

# Lines of context around each change in a field's diff, as `diff -U1`.
DIFF_CONTEXT = 1

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
        *(
            line
            for name, entry in sorted(_items(reply, "workloads"))
            for line in [_workload(name, entry), *_field_diffs(entry)]
        ),
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


def _field_diffs(entry: dict[str, Any]) -> list[str]:
    """A unified diff per rendered field that differs, as kubectl diff shows one."""
    fields = entry.get("fields")
    if not isinstance(fields, dict):
        return []
    lines: list[str] = []
    for name, change in sorted(fields.items()):
        if not isinstance(change, dict):
            continue
        diff = difflib.unified_diff(
            _lines(change.get("from")),
            _lines(change.get("to")),
            fromfile=f"{name} (now)",
            tofile=f"{name} (planned)",
            n=DIFF_CONTEXT,
            lineterm="",
        )
        lines.extend(f"  {line}" for line in diff)
    return lines


def _lines(value: Any) -> list[str]:
    """A field's value as lines: text as it is, anything else as YAML."""
    if value is None:
        return []
    if not isinstance(value, str):
        value = yaml.safe_dump(value, sort_keys=True, allow_unicode=True)
    return str(value).splitlines()
