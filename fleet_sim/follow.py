"""Followed outcomes, judged as the connector judges them (fleet_connector/observe/outcomes.py).

A followed apply or delete gets its reply, then exactly one outcome message on the same
reply topic. Here the instances' states come from the simulated car instead of Ankaios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet_sim.protocol import DELETE, INVALID_REQUEST, Request, SimError

if TYPE_CHECKING:
    from fleet_sim.car import Answer, Car, Instance

DEFAULT_SETTLE = 2.0
DEFAULT_DEADLINE = 60.0
MAX_SETTLE = 600.0
MAX_DEADLINE = 3600.0
LOG_LINES = 20
_PRECEDENCE = ("interrupted", "failed", "timeout", "not_scheduled", "removed", "running")


@dataclass(frozen=True, slots=True)
class Spec:
    settle: float = DEFAULT_SETTLE
    deadline: float = DEFAULT_DEADLINE


def _seconds(name: str, text: str, limit: float, minimum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not minimum <= value <= limit:
        raise SimError(
            INVALID_REQUEST,
            f"follow {name} must be a number of seconds from {minimum:g} to {limit:g}, "
            f"not {text!r}",
        )
    return value


def spec_of(request: Request) -> Spec | None:
    """What the request asks to be followed with; SimError for bad settings."""
    settings: dict[str, str] = {}
    if request.follow is not None:
        for part in request.follow.split(";")[1:]:
            key, sep, value = part.partition("=")
            if not sep or key not in ("settle", "deadline"):
                raise SimError(
                    INVALID_REQUEST,
                    f"the follow level is follow[;settle=S][;deadline=D], not {request.follow!r}",
                )
            settings[key] = value
    else:
        properties = dict(request.user_properties)
        wanted = properties.get("follow")
        if wanted is None or wanted.strip().lower() in ("", "0", "false", "no", "off"):
            return None
        settings = {k: v for k, v in properties.items() if k in ("settle", "deadline")}
    if request.operation not in ("manifest/apply", "manifest/delete"):
        raise SimError(INVALID_REQUEST, "only apply and delete can be followed")
    return Spec(
        _seconds("settle", settings.get("settle", str(DEFAULT_SETTLE)), MAX_SETTLE, 0.0),
        _seconds("deadline", settings.get("deadline", str(DEFAULT_DEADLINE)), MAX_DEADLINE, 0.1),
    )


@dataclass(slots=True)
class Target:
    workload: str
    instance_id: str | None
    """The instance followed; None: whichever the workload has (one the apply left alone)."""
    agent: str
    deleting: bool
    outcome: str | None = None
    last: dict[str, Any] | None = None
    seen: bool = False
    logs: list[str] | None = None

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"outcome": self.outcome}
        if self.last is not None:
            report |= self.last
        elif self.instance_id is not None:
            report |= {"agent": self.agent, "instance_id": self.instance_id, "state": None}
        else:
            report["state"] = None
        if self.logs is not None:
            report["logs"] = self.logs
        return report


@dataclass(slots=True)
class Follow:
    request: Request
    spec: Spec
    targets: list[Target]
    started: float
    entry: Any = None
    timer: Any = field(default=None)

    @property
    def deadline(self) -> float:
        return self.started + self.spec.deadline


def start(request: Request, spec: Spec, answer: Answer, now: float) -> Follow:
    deleting = request.operation == DELETE
    changed = answer.removed if deleting else answer.added
    targets = [Target(i.name, i.id, i.agent, deleting) for i in changed]
    followed = {t.workload for t in targets}
    targets += [Target(n, None, "", deleting) for n in answer.named if n not in followed]
    return Follow(request, spec, targets, now, answer.entry)


def _instance(car: Car, target: Target) -> Instance | None:
    current = car.instances.get(target.workload)
    if target.instance_id is None:
        return current
    if current is not None and current.id == target.instance_id:
        return current
    if car.leaving:
        return car.leaving.get((target.workload, target.instance_id))
    return None


def evaluate(car: Car, follow: Follow, now: float) -> float | None:
    """Judges what can be judged; returns when to look again (None: done)."""
    wake: float | None = None
    pending = False
    for target in follow.targets:
        if target.outcome is not None:
            continue
        due = _evaluate_target(car, target, follow.spec.settle, now)
        if target.outcome is None:
            pending = True
            if due is not None:
                wake = due if wake is None else min(wake, due)
    if pending and now >= follow.deadline:
        for target in follow.targets:
            target.outcome = target.outcome or "timeout"
        pending = False
    if not pending:
        return None
    return follow.deadline if wake is None else min(wake, follow.deadline)


def _evaluate_target(car: Car, target: Target, settle: float, now: float) -> float | None:
    instance = _instance(car, target)
    if instance is not None:
        target.last = instance.live()
        target.seen = True
    if target.deleting:
        if instance is None:
            target.outcome = "removed"
        return None
    if instance is None:
        if target.seen:
            target.outcome = "removed"
        return None
    if instance.state == "running":
        settled = instance.since + settle
        if now >= settled:
            target.outcome = "running"
            return None
        return settled
    if instance.state in ("failed", "succeeded", "not_scheduled"):
        target.outcome = instance.state
        if instance.state == "failed":
            target.logs = instance.log_lines()[-LOG_LINES:]
    return None


def outcome(follow: Follow) -> dict[str, Any]:
    outcomes = {t.outcome for t in follow.targets}
    overall = next((o for o in _PRECEDENCE if o in outcomes), None)
    if overall is None:
        overall = "succeeded" if outcomes else "running"
    if not follow.targets:
        overall = "removed" if follow.request.operation == DELETE else "running"
    return {"outcome": overall, "workloads": {t.workload: t.report() for t in follow.targets}}


def interrupt(follow: Follow) -> dict[str, Any]:
    for target in follow.targets:
        target.outcome = target.outcome or "interrupted"
    return outcome(follow)
