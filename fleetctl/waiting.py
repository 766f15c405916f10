"""``--wait running``: poll the cars' workload states until what an apply added runs.

The connector offers no state-change notifications, so we ask each car for exactly the
instances its apply added (``workloadStates.<agent>.<workload>.<id>``) until all run, one
fails, or the wait time is up.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from fleet_connector.topics import Operation
from fleetctl.client import Engine
from fleetctl.results import NOT_RUNNING, WAIT_TIMEOUT, Instance, Status

# Replies after which asking again may well succeed.
_TRANSIENT = frozenset({"TIMEOUT", "UNAVAILABLE", "BUSY"})
# States an instance does not leave on its own towards Running.
_FAILED_STATES = frozenset({"FAILED", "NOT_SCHEDULED", "SUCCEEDED", "STOPPING", "REMOVED"})


class Phase(enum.Enum):
    RUNNING = "running"
    FAILED = "failed"
    PENDING = "pending"


def added_instances(reply: Any) -> list[Instance]:
    """The instances an apply reply lists under ``added_workloads``."""
    added = reply.get("added_workloads", []) if isinstance(reply, dict) else []
    return [
        Instance(
            str(w.get("agent_name", "")),
            str(w.get("workload_name", "")),
            str(w.get("workload_id", "")),
        )
        for w in added
        if isinstance(w, dict)
    ]


def read_states(reply: Any, instances: list[Instance]) -> list[Instance]:
    """The instances with their execution state from a state reply (unchanged if missing)."""
    states = reply.get("workload_states", {}) if isinstance(reply, dict) else {}
    updated = []
    for instance in instances:
        state = _dig(states, instance.agent, instance.workload, instance.id)
        if not isinstance(state, dict):
            updated.append(instance)
            continue
        updated.append(
            replace(
                instance,
                state=str(state.get("state", "")),
                substate=str(state.get("substate", "")),
                additional_info=str(state.get("additional_info", "")),
            )
        )
    return updated


def _dig(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def phase_of(instance: Instance) -> Phase:
    if instance.state == "RUNNING":
        return Phase.RUNNING
    if instance.state in _FAILED_STATES or instance.substate.endswith("STARTING_FAILED"):
        return Phase.FAILED
    # Pending, agent disconnected or not reported yet: may still get there.
    return Phase.PENDING


def verdict(instances: list[Instance]) -> Phase:
    phases = [phase_of(i) for i in instances]
    if Phase.FAILED in phases:
        return Phase.FAILED
    if all(p is Phase.RUNNING for p in phases):
        return Phase.RUNNING
    return Phase.PENDING


@dataclass
class WaitOutcome:
    status: Status
    instances: list[Instance]
    code: str | None = None
    message: str = ""


def wait_running(
    engine: Engine,
    targets: Mapping[str, list[Instance]],
    *,
    wait_timeout: float,
    request_timeout: float,
    poll_interval: float,
    on_done: Callable[[str, WaitOutcome], None] | None = None,
) -> dict[str, WaitOutcome]:
    """Polls every car in ``targets`` until its instances run, fail, or time runs out."""
    deadline = time.monotonic() + wait_timeout
    waiting = {vin: list(instances) for vin, instances in targets.items()}
    problems: dict[str, str] = {}
    outcomes: dict[str, WaitOutcome] = {}
    pause = threading.Event()

    def finish(vin: str, outcome: WaitOutcome) -> None:
        outcomes[vin] = outcome
        del waiting[vin]
        if on_done is not None:
            on_done(vin, outcome)

    for vin in [v for v, instances in waiting.items() if not instances]:
        finish(vin, WaitOutcome(Status.OK, []))
    while waiting:
        requests = [
            engine.send(vin, Operation.STATE, json.dumps([i.mask for i in instances]))
            for vin, instances in waiting.items()
        ]
        engine.wait(requests, max(0.0, min(request_timeout, deadline - time.monotonic())))
        for request in requests:
            vin, reply = request.vin, request.reply
            if reply is None:
                problems[vin] = "no reply to the last state request"
                continue
            if not reply.ok:
                if reply.code in _TRANSIENT:
                    problems[vin] = f"{reply.code}: {reply.message}"
                    continue
                finish(vin, WaitOutcome(Status.FAILED, waiting[vin], reply.code, reply.message))
                continue
            problems.pop(vin, None)
            instances = read_states(reply.data, waiting[vin])
            waiting[vin] = instances
            phase = verdict(instances)
            if phase is Phase.RUNNING:
                finish(vin, WaitOutcome(Status.OK, instances))
            elif phase is Phase.FAILED:
                bad = [i for i in instances if phase_of(i) is Phase.FAILED]
                message = "; ".join(i.describe() for i in bad)
                finish(vin, WaitOutcome(Status.FAILED, instances, NOT_RUNNING, message))
        remaining = deadline - time.monotonic()
        if not waiting or remaining <= 0:
            break
        # Pacing, not synchronisation: nothing tells us when a state changes.
        pause.wait(min(poll_interval, remaining))
    for vin in list(waiting):
        not_running = [i for i in waiting[vin] if phase_of(i) is not Phase.RUNNING]
        detail = "; ".join(i.describe() for i in not_running)
        if vin in problems:
            detail = f"{detail}; last poll: {problems[vin]}" if detail else problems[vin]
        message = f"not running after {wait_timeout:g}s: {detail}"
        finish(vin, WaitOutcome(Status.TIMEOUT, waiting[vin], WAIT_TIMEOUT, message))
    return outcomes
