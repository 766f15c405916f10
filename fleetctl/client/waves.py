"""A request to many cars in waves: each wave is sent, answered (and, with --wait, running)
before the next starts; the rollout stops once --max-failures cars have failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet_connector.mqtt.topics import Operation
from fleetctl.client.engine import Engine, Pending
from fleetctl.client.results import BROKER_REFUSED, NO_REPLY, STOPPED, CarResult, RunResult, Status
from fleetctl.client.waiting import WaitOutcome, follow_level, wait_outcomes
from fleetctl.output.progress import Progress


@dataclass(frozen=True)
class Plan:
    operation: Operation
    payload: bytes
    timeout: float
    """Seconds to wait for the replies of one wave."""
    batch_size: int | None = None
    max_failures: int | None = None
    wait_running: bool = False
    wait_timeout: float = 120.0
    settle: float = 2.0
    payload_for: Callable[[str], bytes] | None = None
    """Each car's own payload (a request signed for it) instead of ``payload``."""


def waves(vins: Sequence[str], batch_size: int | None) -> list[list[str]]:
    size = batch_size or len(vins) or 1
    return [list(vins[i : i + size]) for i in range(0, len(vins), size)]


def run(
    engine: Engine, command: str, vins: Sequence[str], plan: Plan, progress: Progress
) -> RunResult:
    refused = engine.subscribe(vins, [plan.operation], plan.timeout)
    planned = waves(vins, plan.batch_size)
    results: dict[str, CarResult] = {}
    failures = 0
    stopped_after: int | None = None
    for number, wave in enumerate(planned, start=1):
        if len(planned) > 1:
            progress.phase(f"wave {number}/{len(planned)}")
        for vin in wave:
            if vin in refused:
                message = f"the broker refused subscriptions {', '.join(refused[vin])}"
                results[vin] = CarResult(vin, Status.FAILED, code=BROKER_REFUSED, message=message)
                progress.advance(False)
        for car in _run_wave(engine, [v for v in wave if v not in refused], plan, progress):
            results[car.vin] = car
        failures += sum(1 for vin in wave if not results[vin].ok)
        if (
            plan.max_failures is not None
            and failures >= plan.max_failures
            and number < len(planned)
        ):
            stopped_after = number
            message = (
                f"the rollout stopped after wave {number} of {len(planned)}: "
                f"{failures} car(s) failed, --max-failures is {plan.max_failures}"
            )
            for later in planned[number:]:
                for vin in later:
                    results[vin] = CarResult(
                        vin, Status.NOT_ATTEMPTED, code=STOPPED, message=message
                    )
            break
    return RunResult(
        command=command,
        cars=[results[vin] for vin in vins],
        waves=len(planned),
        stopped_after_wave=stopped_after,
    )


def _run_wave(engine: Engine, wave: list[str], plan: Plan, progress: Progress) -> list[CarResult]:
    def replied(pending: Pending) -> None:
        # With --wait a successful apply is not finished until its workloads run.
        ok = pending.reply is not None and pending.reply.ok
        if not (ok and plan.wait_running):
            progress.advance(ok)

    follow = follow_level(plan.settle, plan.wait_timeout) if plan.wait_running else None
    if plan.payload_for is None:
        pendings = engine.send_many(wave, plan.operation, plan.payload, follow=follow)
    else:
        pendings = [
            engine.send(vin, plan.operation, plan.payload_for(vin), follow=follow) for vin in wave
        ]
    engine.wait(pendings, plan.timeout, on_reply=replied)
    cars = [result_of(engine, pending, plan.timeout) for pending in pendings]
    for car in cars:
        if car.status is Status.TIMEOUT:
            progress.advance(False)
    if plan.wait_running:
        wait_until_running(engine, cars, pendings, plan, progress)
    return cars


def result_of(engine: Engine, pending: Pending, timeout: float) -> CarResult:
    reply = pending.reply
    seconds = None if pending.answered_at is None else pending.answered_at - pending.sent_at
    if reply is None:
        return CarResult(
            pending.vin,
            Status.TIMEOUT,
            code=NO_REPLY,
            message=_no_reply(engine, pending.vin, timeout),
            request_id=pending.request_id,
        )
    if not reply.ok:
        return CarResult(
            pending.vin,
            Status.FAILED,
            code=reply.code,
            message=reply.message,
            request_id=pending.request_id,
            seconds=seconds,
        )
    return CarResult(
        pending.vin, Status.OK, reply=reply.data, request_id=pending.request_id, seconds=seconds
    )


def _no_reply(engine: Engine, vin: str, timeout: float) -> str:
    message = f"no reply within {timeout:g}s"
    presence = engine.presence(vin)
    if presence is None:
        # Without a session on the broker nothing keeps the request for the car.
        return (
            f"{message}; the car has no presence on this broker (unknown VIN, or its connector "
            "never connected), so the request is lost"
        )
    if presence.status == "offline":
        within = "" if engine.expiry is None else f" within {engine.expiry} s (--expiry)"
        return (
            f"{message}; {presence.describe()}: the broker keeps the request and the car "
            f"carries it out when it reconnects{within}"
        )
    return f"{message}; {presence.describe()}; it may still carry out the request"


def wait_until_running(
    engine: Engine,
    cars: list[CarResult],
    pendings: list[Pending],
    plan: Plan,
    progress: Progress,
) -> None:
    by_vin = {car.vin: car for car in cars}
    outcomes = {
        pending.vin: pending.outcome
        for pending, car in zip(pendings, cars, strict=True)
        if car.ok and pending.outcome is not None
    }

    def done(vin: str, outcome: WaitOutcome) -> None:
        car = by_vin[vin]
        car.workloads = outcome.instances
        car.logs = outcome.logs
        car.status = outcome.status
        car.code, car.message = outcome.code, outcome.message
        progress.advance(outcome.status is Status.OK)

    wait_outcomes(
        engine,
        outcomes,
        settle=plan.settle,
        wait_timeout=plan.wait_timeout,
        request_timeout=plan.timeout,
        on_done=done,
    )
