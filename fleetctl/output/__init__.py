"""Results as a table for people or as JSON / YAML for scripts (same content, same keys).

What else fleetctl shows is next to this: plans' lines in :mod:`fleetctl.output.plans`, the
progress bar in :mod:`fleetctl.output.progress`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import yaml

from fleetctl.client.presence import Presence
from fleetctl.client.results import CarResult, RunResult, Status
from fleetctl.output import plans

FORMATS = ("table", "json", "yaml")


def render_run(result: RunResult, fmt: str) -> str:
    if fmt != "table":
        return dump(result.to_dict(), fmt)
    rows: list[Sequence[str]] = [("VIN", "RESULT", "DETAIL")]
    for car in result.cars:
        rows.extend((car.vin, str(car.status), detail) for detail in _details(result.command, car))
    return table(rows) + "\n" + _summary_line(result)


def render_presence(cars: Sequence[Presence], fmt: str) -> str:
    counts: dict[str, int] = {"total": len(cars)}
    for car in cars:
        counts[car.status] = counts.get(car.status, 0) + 1
    if fmt != "table":
        return dump({"summary": counts, "cars": [car.to_dict() for car in cars]}, fmt)
    if not cars:
        return "no cars found on the broker"
    rows: list[Sequence[str]] = [
        ("VIN", "STATUS", "ANKAIOS", "SINCE", "CONNECTOR", "SDK", "STARTED")
    ]
    rows.extend(
        (
            c.vin,
            c.status,
            c.ankaios or "-",
            c.since or "-",
            c.connector_version or "-",
            c.sdk_version or "-",
            c.started_at or "-",
        )
        for c in cars
    )
    parts = [f"{n} {status}" for status, n in counts.items() if status != "total"]
    return table(rows) + f"\n{len(cars)} car(s): " + terminal_safe(", ".join(parts))


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")


# Control characters (ANSI escapes, newlines, carriage returns), bidirectional overrides
# and other invisible characters a car could send to rewrite or fake rows on a terminal.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff]"
)


def terminal_safe(text: str) -> str:
    """``text`` with every character that could act on a terminal shown escaped (\\x1b)."""
    return _UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is left ragged. Cells are
    made terminal-safe: they hold what cars sent."""
    rows = [[terminal_safe(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def _summary_line(result: RunResult) -> str:
    counts = [f"{result.count(s)} {_label(s)}" for s in Status if result.count(s)]
    line = f"{len(result.cars)} car(s): " + ", ".join(counts)
    if result.stopped_after_wave is not None:
        line += (
            f"\nstopped after wave {result.stopped_after_wave} of {result.waves}; "
            f"not attempted: {', '.join(result.not_attempted)}"
        )
    return line


def _label(status: Status) -> str:
    return {Status.TIMEOUT: "timed out", Status.NOT_ATTEMPTED: "not attempted"}.get(
        status, str(status)
    )


def _details(command: str, car: CarResult) -> list[str]:
    if car.status is Status.NOT_ATTEMPTED:
        return [car.message]
    if command == "plan" and car.reply is not None:
        return plans.details(car)
    if car.code is not None and car.status is not Status.OK:
        lines = [f"{car.code}: {car.message}"]
        if car.workloads:
            lines.extend(f"  {w.describe()}" for w in car.workloads)
        return lines
    if command == "state":
        return _state_details(car.reply)
    if command == "history":
        return _history_details(car.reply)
    return [_update_detail(car)]


def _history_details(reply: Any) -> list[str]:
    entries = reply.get("entries") if isinstance(reply, dict) else None
    if not isinstance(entries, list) or not entries:
        return ["no changes journaled"]
    lines = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        names = [*entry.get("workloads", []), *entry.get("configs", [])]
        undone = entry.get("rolled_back_by")
        lines.append(
            f"#{entry.get('entry')} {entry.get('received_at', '')} {entry.get('operation')} "
            f"{entry.get('outcome')} id={entry.get('request_id')} {', '.join(names) or '-'}"
            + (f" (rolled back by #{undone})" if undone else "")
        )
    return lines


def _update_detail(car: CarResult) -> str:
    reply = car.reply if isinstance(car.reply, dict) else {}

    def names(key: str) -> str:
        items = reply.get(key) or []
        return (
            ", ".join(str(w.get("workload_name", "?")) for w in items if isinstance(w, dict)) or "-"
        )

    text = f"added: {names('added_workloads')}; deleted: {names('deleted_workloads')}"
    if car.workloads is not None:
        text += "; running" if car.workloads else "; nothing to wait for"
    return text


def _state_details(reply: Any) -> list[str]:
    if not isinstance(reply, dict):
        return [json.dumps(reply)[:200]]
    lines = []
    states = reply.get("workload_states")
    if isinstance(states, dict):
        for agent, workloads in sorted(states.items()):
            for name, instances in sorted((workloads or {}).items()):
                for iid, state in sorted((instances or {}).items()):
                    info = state.get("additional_info") or ""
                    lines.append(
                        f"{name} on {agent} ({iid[:12]}): {state.get('state')} "
                        f"({state.get('substate')})" + (f": {info}" if info else "")
                    )
    desired = reply.get("desired_state")
    # The SDK fills in an empty desired state when the masks asked for none of it.
    if isinstance(desired, dict) and (desired.get("api_version") or len(lines) == 0):
        workloads = sorted(desired.get("workloads") or {})
        configs = sorted(desired.get("configs") or {})
        lines.append(
            f"desired: {len(workloads)} workload(s) {', '.join(workloads)}".rstrip()
            + f"; {len(configs)} config(s) {', '.join(configs)}".rstrip()
        )
    return lines or ["no workloads"]
