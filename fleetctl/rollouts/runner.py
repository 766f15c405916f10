"""Carrying out a recorded rollout, wave by wave, from wherever it stands.

``start`` and ``resume`` run the same loop over the database: cars already finished are
skipped, cars sent but not finished are sent the same request again (same id, so a
connector that has it answers without carrying it out twice), pending ones are sent. After
each wave: the canary wave must have succeeded entirely; then every abort threshold is
checked against the cars finished so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fleet_connector.mqtt.topics import Operation
from fleetctl.client.engine import Engine
from fleetctl.client.results import NO_REPLY, CarResult, Status
from fleetctl.client.waiting import follow_level
from fleetctl.client.waves import Plan, result_of, wait_until_running
from fleetctl.output.progress import Progress
from fleetctl.rollouts.records import (
    ABORTED,
    DONE,
    DONE_WITH_FAILURES,
    FAILED,
    INCOMPLETE,
    OFFLINE,
    OK,
    PENDING,
    UNFINISHED,
    Records,
)
from fleetctl.rollouts.spec import FAILURE_KINDS, Spec

# Error codes by failure kind (the rest of the connector's codes and fleetctl's own).
_REJECTED = frozenset(
    {
        "INVALID_REQUEST",
        "POLICY_DENIED",
        "ACCESS_DENIED",
        "REJECTED",
        "EXPIRED",
        "BROKER_REFUSED",
        "NOT_DELIVERED",
        "BAD_REPLY",
    }
)
_TIMEOUT = frozenset({"TIMEOUT", "WAIT_TIMEOUT"})


def failure_kind(car: CarResult) -> str:
    """rejected, failed, timeout or noReply: what the abort thresholds count."""
    if car.code == NO_REPLY:
        return "noReply"
    if car.code in _TIMEOUT or car.status is Status.TIMEOUT:
        return "timeout"
    if car.code in _REJECTED:
        return "rejected"
    return "failed"


@dataclass
class Outcome:
    status: str
    reason: str | None = None


class Runner:
    """Runs one rollout of the database with one broker connection."""

    def __init__(
        self,
        records: Records,
        engine: Engine,
        rollout_id: str,
        spec: Spec,
        *,
        progress: Progress,
        on_car: Callable[[str, str], None] | None = None,
        on_phase: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._records = records
        self._engine = engine
        self._id = rollout_id
        self._spec = spec
        self._progress = progress
        self._on_car = on_car or (lambda vin, state: None)
        self._on_phase = on_phase or (lambda text: None)
        self._clock = clock
        self._sent = 0
        self._first_sent: float | None = None
        operation = Operation.APPLY if spec.operation == "apply" else Operation.DELETE
        # The soak time is the connector's settle time: a followed apply is judged running
        # only once its workloads have run that long.
        self._plan = Plan(
            operation=operation,
            payload=spec.payload,
            timeout=spec.progress_deadline,
            wait_running=spec.wait_running,
            wait_timeout=spec.progress_deadline,
            settle=spec.soak_time or Plan.settle,
        )
        self._follow = (
            follow_level(self._plan.settle, self._plan.wait_timeout) if spec.wait_running else None
        )

    def run(self) -> Outcome:
        cars = self._records.cars(self._id)
        waves = max((car.wave for car in cars), default=-1) + 1
        operations = [self._plan.operation]
        if self._spec.wait_running:
            operations.append(Operation.STATE)
        self._engine.subscribe([car.vin for car in cars], operations, self._plan.timeout)
        for number in range(waves):
            if self._aborted():
                return Outcome(ABORTED, self._reason())
            todo = [c for c in self._records.cars(self._id) if c.wave == number]
            unfinished = [c.vin for c in todo if c.state in UNFINISHED]
            if unfinished:
                self._on_phase(self._wave_name(number, waves))
                self._run_wave(unfinished)
            verdict = self._verdict(number)
            if verdict is not None:
                self._records.set_status(self._id, ABORTED, verdict)
                return Outcome(ABORTED, verdict)
        return self._finish()

    # -- one wave -----------------------------------------------------------------------

    def _wave_name(self, number: int, waves: int) -> str:
        if number == 0 and self._spec.canary:
            return f"canary ({len(self._spec.canary)} cars)"
        return f"wave {number + 1}/{waves}"

    def _run_wave(self, vins: list[str]) -> None:
        pendings = []
        for vin in vins:
            if self._aborted():
                break
            self._pace()
            request_id = self._records.mark_sent(self._id, vin)
            pendings.append(
                self._engine.send(
                    vin, self._plan.operation, self._plan.payload, request_id, follow=self._follow
                )
            )
            self._on_car(vin, "running")
        self._engine.wait(pendings, self._plan.timeout)
        results = [result_of(self._engine, pending, self._plan.timeout) for pending in pendings]
        if self._spec.wait_running:
            wait_until_running(self._engine, results, pendings, self._plan, self._progress)
        else:
            for car in results:
                self._progress.advance(car.ok)
        for car in results:
            self._record(car)

    def _record(self, car: CarResult) -> None:
        if car.ok:
            self._records.record(self._id, car.vin, OK)
            self._on_car(car.vin, OK)
            return
        presence = self._engine.presence(car.vin)
        if car.code == NO_REPLY and presence is not None and presence.status == "offline":
            # The broker keeps the request for the car; resume asks again.
            self._records.record(self._id, car.vin, OFFLINE, code=car.code, message=car.message)
            self._on_car(car.vin, OFFLINE)
            return
        self._records.record(
            self._id, car.vin, FAILED, kind=failure_kind(car), code=car.code, message=car.message
        )
        self._on_car(car.vin, FAILED)

    def _pace(self) -> None:
        """Waits until the rate limit (with its ramp-up) allows one more car."""
        rate = self._spec.rate
        now = self._clock()
        if self._first_sent is None:
            self._first_sent = now
        if rate is not None:
            while rate.allowed(self._clock() - self._first_sent) < self._sent + 1:
                if self._aborted():
                    return
                time.sleep(0.05)
        self._sent += 1

    # -- decisions ----------------------------------------------------------------------

    def _aborted(self) -> bool:
        rollout = self._records.get(self._id)
        return rollout is None or rollout.status == ABORTED

    def _reason(self) -> str | None:
        rollout = self._records.get(self._id)
        return None if rollout is None else rollout.reason

    def _verdict(self, wave: int) -> str | None:
        """Why the rollout must stop after ``wave``; None to go on."""
        cars = self._records.cars(self._id)
        if wave == 0 and self._spec.canary:
            unhappy = [c for c in cars if c.wave == 0 and c.state != OK]
            if unhappy:
                first = unhappy[0]
                detail = first.code or first.state
                return (
                    f"the canary group did not succeed: {len(unhappy)} of "
                    f"{len(self._spec.canary)} cars ({first.vin}: {detail})"
                )
        finished = [c for c in cars if c.state in (OK, FAILED)]
        if len(finished) < max(1, self._spec.min_cars):
            return None
        for kind in FAILURE_KINDS:
            threshold = self._spec.thresholds.get(kind)
            if threshold is None:
                continue
            failed = sum(1 for c in finished if c.state == FAILED and c.kind == kind)
            limit = threshold.of(len(finished))
            if failed >= limit:
                return (
                    f"abort threshold {kind} {threshold.describe()} reached: {failed} of "
                    f"{len(finished)} cars finished"
                )
        return None

    def _finish(self) -> Outcome:
        if self._aborted():
            return Outcome(ABORTED, self._reason())
        states = [car.state for car in self._records.cars(self._id)]
        if any(state in (PENDING, *UNFINISHED) for state in states):
            offline = states.count(OFFLINE)
            reason = f"{offline} car(s) offline; resume picks them up" if offline else None
            self._records.set_status(self._id, INCOMPLETE, reason)
            return Outcome(INCOMPLETE, reason)
        if FAILED in states:
            reason = f"{states.count(FAILED)} car(s) failed; retry-failed sends to them again"
            self._records.set_status(self._id, DONE_WITH_FAILURES, reason)
            return Outcome(DONE_WITH_FAILURES, reason)
        self._records.set_status(self._id, DONE)
        return Outcome(DONE)
