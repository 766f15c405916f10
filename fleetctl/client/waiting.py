"""``--wait running``: the apply is followed to its outcome by the connector itself.

The request goes out with the ``follow;settle=S;deadline=D`` topic level (MQTT 3.1.1 and 5
alike); after its usual reply the connector sends one outcome message, judged on Ankaios's
state events: ``running`` once every workload has run for the settle time, ``failed`` (with
Ankaios's info and the last log lines), ``timeout`` with where each workload is stuck. Nothing
is polled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetctl.client.engine import Engine, Pending
from fleetctl.client.results import NOT_RUNNING, WAIT_TIMEOUT, Instance, Status

# Log lines of a failed workload shown in the message (the JSON output has them all).
SHOWN_LOG_LINES = 3


def follow_level(settle: float, deadline: float) -> str:
    return f"follow;settle={settle:g};deadline={deadline:g}"


@dataclass
class WaitOutcome:
    status: Status
    instances: list[Instance]
    code: str | None = None
    message: str = ""
    logs: dict[str, list[str]] | None = None


def instances_of(outcome: Any) -> list[Instance]:
    workloads = outcome.get("workloads") if isinstance(outcome, dict) else None
    if not isinstance(workloads, dict):
        return []
    found = []
    for name, report in workloads.items():
        if not isinstance(report, dict):
            continue

        def text(key: str, report: dict[str, Any] = report) -> str:
            value = report.get(key)
            return "" if value is None else str(value)

        found.append(
            Instance(
                text("agent"),
                str(name),
                text("instance_id"),
                state=text("state"),
                substate=text("substate"),
                additional_info=text("info"),
            )
        )
    return found


def judge(outcome: Any, settle: float) -> WaitOutcome:
    """What an outcome message means for ``--wait running``."""
    instances = instances_of(outcome)
    overall = outcome.get("outcome") if isinstance(outcome, dict) else None
    reports = outcome.get("workloads", {}) if isinstance(outcome, dict) else {}
    logs = {
        name: [str(line) for line in report.get("logs") or []]
        for name, report in reports.items()
        if isinstance(report, dict) and report.get("logs")
    }
    if overall == "running":
        return WaitOutcome(Status.OK, instances, logs=logs or None)
    bad = []
    for instance in instances:
        report = reports.get(instance.workload, {})
        if not isinstance(report, dict) or report.get("outcome") == "running":
            continue
        detail = f"{instance.describe()} [{report.get('outcome')}]"
        lines = logs.get(instance.workload)
        if lines:
            detail += " last lines: " + " | ".join(lines[-SHOWN_LOG_LINES:])
        elif report.get("logs_error"):
            detail += f" (no logs: {report['logs_error']})"
        bad.append(detail)
    message = "; ".join(bad) or f"outcome {overall}"
    if overall == "timeout":
        return WaitOutcome(Status.TIMEOUT, instances, WAIT_TIMEOUT, message, logs or None)
    if overall in ("failed", "succeeded", "not_scheduled", "removed") and settle:
        message = f"{message} (within the settle time of {settle:g}s or before)"
    return WaitOutcome(Status.FAILED, instances, NOT_RUNNING, message, logs or None)


def wait_outcomes(
    engine: Engine,
    outcomes: Mapping[str, Pending],
    *,
    settle: float,
    wait_timeout: float,
    request_timeout: float,
    on_done: Callable[[str, WaitOutcome], None] | None = None,
) -> dict[str, WaitOutcome]:
    """Waits for each car's outcome message; the connector sends it by the deadline."""
    results: dict[str, WaitOutcome] = {}
    by_pending = {id(p): vin for vin, p in outcomes.items()}

    def arrived(pending: Pending) -> None:
        vin = by_pending[id(pending)]
        reply = pending.reply
        if reply is None:
            return
        if reply.ok:
            result = judge(reply.data, settle)
        else:
            result = WaitOutcome(Status.FAILED, [], reply.code, reply.message)
        results[vin] = result
        if on_done is not None:
            on_done(vin, result)

    engine.wait(list(outcomes.values()), wait_timeout + request_timeout, on_reply=arrived)
    for vin in outcomes:
        if vin not in results:
            result = WaitOutcome(
                Status.TIMEOUT,
                [],
                WAIT_TIMEOUT,
                f"no outcome within {wait_timeout + request_timeout:g}s (a connector that "
                "cannot follow requests, or one that stopped)",
            )
            results[vin] = result
            if on_done is not None:
                on_done(vin, result)
    return results
