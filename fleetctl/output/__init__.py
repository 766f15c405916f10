"""Results as a table for people or as JSON / YAML for scripts (same content, same keys).

What else fleetctl shows is next to this: plans' lines in :mod:`fleetctl.output.plans`, the
progress bar in :mod:`fleetctl.output.progress`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import yaml

from fleetctl.client.results import CarResult, RunResult, Status
from fleetctl.output import plans, rollbacks

# Re-exported: tables and every command escape car-supplied text the same way.
from fleetctl.output.escape import log_line as log_line
from fleetctl.output.escape import terminal_safe as terminal_safe
from fleetctl.output.escape import terminal_text as terminal_text

if TYPE_CHECKING:
    # Only a type here: importing it would make fleetctl.output (and with it the escaping
    # helpers, which the client modules use) depend on the broker connection.
    from fleetctl.client.presence import Presence

FORMATS = ("table", "json", "yaml")


def render_run(result: RunResult, fmt: str) -> str:
    """A table (``wide``: with each car's request id and seconds), or JSON / YAML."""
    if fmt not in ("table", "wide"):
        return dump(result.to_dict(), fmt)
    wide = fmt == "wide"
    rows: list[Sequence[str]] = [
        ("VIN", "RESULT", "SECONDS", "REQUEST", "DETAIL") if wide else ("VIN", "RESULT", "DETAIL")
    ]
    failed = [False]
    for car in result.cars:
        extra = (
            ("-" if car.seconds is None else f"{car.seconds:.3f}", car.request_id or "-")
            if wide
            else ()
        )
        for detail in _details(result.command, car):
            rows.append((car.vin, str(car.status), *extra, detail))
            failed.append(not car.ok)
    return table(rows, highlight=failed) + "\n" + _summary_line(result)


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


def inventory_status(car: dict[str, Any]) -> str:
    online = car.get("online")
    return "unknown" if online is None else "online" if online else "offline"


def inventory_ready(car: dict[str, Any]) -> bool:
    """Online, with Ankaios connected where the server knows it (a car's detail)."""
    presence = car.get("presence")
    ankaios = presence.get("ankaios") if isinstance(presence, dict) else "connected"
    return car.get("online") is True and ankaios == "connected"


def render_inventory(cars: Sequence[dict[str, Any]], fmt: str) -> str:
    """``status`` through fleet-server: presence, workloads and labels from its inventory."""
    counts: dict[str, int] = {"total": len(cars)}
    for car in cars:
        status = inventory_status(car)
        counts[status] = counts.get(status, 0) + 1
    if fmt != "table":
        return dump({"summary": counts, "cars": list(cars)}, fmt)
    if not cars:
        return "no cars found on fleet-server"
    rows: list[Sequence[str]] = [("VIN", "STATUS", "SINCE", "CONNECTOR", "WORKLOADS", "LABELS")]
    for car in cars:
        states: dict[str, int] = {}
        for w in car.get("workloads") or []:
            states[str(w.get("state"))] = states.get(str(w.get("state")), 0) + 1
        labels = car.get("labels") or {}
        rows.append(
            (
                str(car.get("vin")),
                inventory_status(car),
                str(car.get("online_since") or "-"),
                str(car.get("connector_version") or "-"),
                ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "-",
                ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-",
            )
        )
    parts = [f"{n} {status}" for status, n in counts.items() if status != "total"]
    return table(rows) + f"\n{len(cars)} car(s): " + terminal_safe(", ".join(parts))


def dump(data: Any, fmt: str) -> str:
    """JSON or YAML of ``data``, which holds what cars sent; either is terminal-safe."""
    if fmt == "json":
        # ensure_ascii: every control and invisible character is written as \\uXXXX.
        return json.dumps(data, indent=2)
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    if terminal_text(text) != text:
        # YAML writes bidirectional overrides and zero-width characters as they are (and
        # tabs in block scalars); in ASCII it escapes them. Same data, read back the same.
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False).rstrip("\n")
    return text


def table(rows: Sequence[Sequence[str]], *, highlight: Sequence[bool] = ()) -> str:
    """Columns padded to their widest cell; the last column is left ragged. Cells are
    made terminal-safe: they hold what cars sent. Rows marked in ``highlight`` (failures)
    are red where colour is wanted (see :func:`colour_wanted`)."""
    rows = [[terminal_safe(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    red = colour_wanted()
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        line = "  ".join([*cells, row[-1]]).rstrip()
        if red and index < len(highlight) and highlight[index]:
            line = f"{RED}{line}{RESET}"
        lines.append(line)
    return "\n".join(lines)


RED, RESET = "\x1b[31m", "\x1b[0m"


def colour_wanted() -> bool:
    """Colour only for a terminal, and never with NO_COLOR set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _summary_line(result: RunResult) -> str:
    counts = [f"{result.count(s)} {_label(s)}" for s in Status if result.count(s)]
    line = f"{len(result.cars)} car(s): " + ", ".join(counts)
    if result.stopped_after_wave is not None:
        line += (
            f"\nstopped after wave {result.stopped_after_wave} of {result.waves}; "
            f"not attempted: {terminal_safe(', '.join(result.not_attempted))}"
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
    if command == "rollback-plan":
        return rollbacks.details(car)
    if command == "get-configs" and car.code is None:
        return _config_details(car.reply)
    if car.code is not None and car.status is not Status.OK:
        lines = [f"{car.code}: {car.message}"]
        if car.workloads:
            lines.extend(f"  {w.describe()}" for w in car.workloads)
        # An apply that ran but did not come up (--wait): what the car said of the manifest.
        return lines + warning_lines(car.reply)
    if command == "state":
        return _state_details(car.reply)
    if command == "history":
        return _history_details(car.reply)
    return [_update_detail(car), *warning_lines(car.reply)]


def warning_lines(reply: Any) -> list[str]:
    """The reply's ``warnings`` (keys Ankaios ignores, e.g. a misspelt restartPolicy), a
    line each: what the car said must not be hidden by a short table."""
    warnings = reply.get("warnings") if isinstance(reply, dict) else None
    if not isinstance(warnings, list):
        return []
    return [f"warning: {w}" for w in warnings]


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
    agents = reply.get("agents")
    if isinstance(agents, dict):
        lines.extend(_agent_line(name, agent) for name, agent in sorted(agents.items()))
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


def _agent_line(name: str, agent: Any) -> str:
    """``agent agent_A: cpu 12%, free memory 1.5 GiB, tags a=b`` from an ``agents`` entry."""
    agent = agent if isinstance(agent, dict) else {}
    status = agent.get("status") if isinstance(agent.get("status"), dict) else {}
    parts = []
    cpu = status.get("cpu_usage")
    if isinstance(cpu, int | float):
        parts.append(f"cpu {cpu}%")
    memory = status.get("free_memory")
    if isinstance(memory, int | float):
        parts.append(f"free memory {_size(memory)}")
    tags = agent.get("tags")
    if isinstance(tags, dict) and tags:
        parts.append("tags " + ", ".join(f"{k}={v}" for k, v in sorted(tags.items())))
    return f"agent {name}" + (f": {'; '.join(parts)}" if parts else "")


def _size(octets: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if octets < 1024 or unit == "GiB":
            return f"{octets:.0f} {unit}" if unit == "B" else f"{octets:.1f} {unit}"
        octets /= 1024
    return f"{octets:.1f} GiB"


def _config_details(reply: Any) -> list[str]:
    """``get configs``: a line per config, its value as one line of JSON (cut at 200)."""
    desired = reply.get("desired_state") if isinstance(reply, dict) else None
    configs = desired.get("configs") if isinstance(desired, dict) else None
    if not isinstance(configs, dict) or not configs:
        return ["no configs"]
    lines = []
    for name, value in sorted(configs.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"config {name}: {text if len(text) <= 200 else text[:199] + '…'}")
    return lines
