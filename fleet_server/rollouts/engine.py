"""One rollout carried out by the instance holding its lease: a step every tick.

Each step reads the rollout from the database (the shared truth: an operator's pause,
abort or approve may have come through another instance) and decides:

1. late joiners: with a selector, cars of the inventory that match now and are not in the
   rollout join it (pending, in the current wave) until ``cars.until`` or the rollout's end;
2. cars ``sent`` that no task here follows (this instance took the rollout over, or the car
   came back online) are asked again with the same request id;
3. abort: a failed canary car, or an abort threshold reached; final;
4. the stage: the wave in progress moves on once each of its cars finished (an offline car
   of a wave after the canary does not hold it up: it is served when it is back), unless the
   wave is a pause point that no operator approved yet;
5. sending: while the rollout runs and its window is open, pending cars of the waves up to
   the stage are sent when online, their gate holds, the disruption budget and the rate
   allow; the others wait, each with the reason recorded;
6. the end: once no car is pending or in flight (and ``until`` has passed, if set), done or
   done-with-failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleet_connector.mqtt.topics import Operation
from fleet_server.broker_link import LinkError
from fleet_server.db import DatabaseError
from fleet_server.rollouts import attempts, store
from fleet_server.rollouts.budget import BudgetCheck
from fleet_server.rollouts.gates import GateWatch
from fleet_server.rollouts.signing import Signer, not_after
from fleet_server.rollouts.spec import RolloutSpec, parse
from fleet_server.rollouts.store import (
    ABORTED,
    CAR_FINAL,
    DONE,
    DONE_WITH_FAILURES,
    FAILED,
    FAILURES,
    FINAL,
    PAUSED,
    PENDING,
    ROLLED_BACK,
    RUNNING,
    SENT,
    SUCCEEDED,
    WAITING,
    CarRow,
    RolloutRow,
)

if TYPE_CHECKING:
    from fleet_server.service import Service

log = logging.getLogger(__name__)

OFFLINE = "offline"
JOINER_SCAN = 1.0
"""Seconds between matches of the inventory against a rollout's selector."""


@dataclass
class Context:
    """What a driver needs of the service, passed down."""

    service: Service
    owner: str
    """This instance's name in leases."""
    on_transition: Callable[[str], None]
    """Counts a car's or rollout's new state (metrics)."""
    signer: Signer | None = None
    """Signs each attempt (--sign-key), or None."""

    @property
    def actor(self) -> str:
        return f"fleet-server/{self.owner}"


def stage_name(stage: int) -> str:
    return "canary" if stage == 0 else f"wave {stage}"


class Driver:
    def __init__(self, ctx: Context, rollout_id: str) -> None:
        self.ctx = ctx
        self.id = rollout_id
        self.spec: RolloutSpec | None = None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.gates: GateWatch | None = None
        self._gate_topics: dict[str, str] = {}
        self._waiting: dict[str, str | None] = {}
        self._asked_again: dict[str, float] = {}
        """VIN -> when a repeat ended undecided: asked again once the car reconnected."""
        self._scanned = 0.0

    @property
    def _db(self) -> Any:
        return self.ctx.service.db

    async def _db_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- the step ---------------------------------------------------------------------------

    async def step(self) -> bool:
        """One decision round; False once the rollout is final and nothing is in flight."""
        rollout = await self._db_call(store.load, self._db, self.id)
        if rollout is None:
            return False
        if self.spec is None:
            self.spec = parse(rollout.spec)
            if self.spec.gate is not None:
                self.gates = GateWatch(self.spec.gate)
        spec = self.spec
        if rollout.state in FINAL:
            return bool(self.tasks)
        now = time.time()
        if await self._late_joiners(rollout, spec, now):
            rollout = await self._db_call(store.load, self._db, self.id)
            if rollout is None:
                return False
        cars = rollout.cars
        again = self._ask_again(spec, cars)
        reason = self._verdict(spec, cars)
        if reason is not None:
            await self._set(state=ABORTED, reason=reason, skip=f"not sent: {reason}")
            self.ctx.on_transition(ABORTED)
            return bool(self.tasks)
        if rollout.state == PAUSED:
            await self._record_waiting({c.vin: "paused" for c in cars if c.state == PENDING})
            return True
        stage, approval = await self._advance(rollout, spec, cars)
        waiting: str | None = None
        if spec.window is not None and not spec.window.is_open(now):
            waiting = spec.window.describe(now)
        reasons: dict[str, str | None] = {}
        if waiting is None:
            reasons = await self._send(rollout, spec, cars, stage, now)
        else:
            reasons = {c.vin: "window" for c in cars if c.state == PENDING}
        await self._record_waiting({**again, **reasons})
        if await self._finish(rollout, spec, cars, now):
            return bool(self.tasks)
        if waiting is None and approval is not None and not self._busy(cars):
            waiting = approval
        state = WAITING if waiting is not None else RUNNING
        changed = rollout.state != state or rollout.waiting != waiting
        if changed and await self._set(state=state, waiting=waiting) and state != rollout.state:
            self.ctx.on_transition(state)
        return True

    def _busy(self, cars: list[CarRow]) -> bool:
        return bool(self.tasks) or any(c.state == SENT for c in cars)

    async def _set(self, **changes: Any) -> bool:
        skip = changes.pop("skip", None)
        done: bool = await self._db_call(
            store.set_rollout,
            self._db,
            self.id,
            owner=self.ctx.owner,
            actor=self.ctx.actor,
            now=time.time(),
            skip_pending=skip,
            **changes,
        )
        return done

    # -- 1. late joiners ----------------------------------------------------------------------

    async def _late_joiners(self, rollout: RolloutRow, spec: RolloutSpec, now: float) -> bool:
        selector = spec.cars.selector
        if selector is None or (spec.cars.until is not None and now >= spec.cars.until):
            return False
        if now - self._scanned < JOINER_SCAN:
            return False
        self._scanned = now  # the whole inventory is matched: once a second is enough
        known = {c.vin for c in rollout.cars}
        new = [
            car.vin for car in self.ctx.service.inventory.select(selector) if car.vin not in known
        ]
        if not new:
            return False
        wave = max(rollout.stage, 1)
        added = await self._db_call(
            store.add_cars,
            self._db,
            self.id,
            new,
            wave,
            owner=self.ctx.owner,
            actor=self.ctx.actor,
            now=now,
        )
        for _ in added:
            self.ctx.on_transition(PENDING)
        return bool(added)

    # -- 2. cars sent before ------------------------------------------------------------------

    def _ask_again(self, spec: RolloutSpec, cars: list[CarRow]) -> dict[str, str | None]:
        """Starts the repeat of each car sent before that nothing here follows; returns why
        the others wait."""
        inventory = self.ctx.service.inventory
        reasons: dict[str, str | None] = {}
        for car in cars:
            if car.state != SENT or car.vin in self.tasks or car.request_id is None:
                continue
            known = inventory.get(car.vin)
            if known is None or not known.online:
                reasons[car.vin] = f"{OFFLINE}: asked again when back"
                continue
            undecided = self._asked_again.get(car.vin)
            if (
                undecided is not None
                and (known.online_since or 0) <= undecided
                and time.time() - undecided < 2 * self.ctx.service.config.request_timeout
            ):
                continue  # asked since it came online: wait for it to come back again
            reasons[car.vin] = None
            signed = car.payload.encode() if car.payload is not None else None
            self._start(spec, car.vin, car.request_id, again=True, signed=signed)
        return reasons

    # -- 3. abort -----------------------------------------------------------------------------

    def _verdict(self, spec: RolloutSpec, cars: list[CarRow]) -> str | None:
        canary = [c for c in cars if c.wave == 0]
        unhappy = [c for c in canary if c.state in FAILURES]
        if unhappy:
            first = unhappy[0]
            return f"the canary group did not succeed: {first.vin} {first.state}" + (
                f" ({first.code})" if first.code else ""
            )
        finished = [c for c in cars if c.state in (SUCCEEDED, *FAILURES)]
        if len(finished) < max(1, spec.min_cars):
            return None
        for kind, threshold in spec.thresholds.items():
            failed = sum(1 for c in finished if c.state in FAILURES and c.kind == kind)
            if failed >= threshold.of(len(finished)):
                return (
                    f"abort threshold {kind} {threshold.describe()} reached: {failed} of "
                    f"{len(finished)} cars finished"
                )
        return None

    # -- 4. the stage -------------------------------------------------------------------------

    async def _advance(
        self, rollout: RolloutRow, spec: RolloutSpec, cars: list[CarRow]
    ) -> tuple[int, str | None]:
        """The stage now, and what it waits for when an approval is needed."""
        inventory = self.ctx.service.inventory
        approved = {a.get("stage") for a in rollout.approvals}
        last = max((c.wave for c in cars), default=0)
        stage = rollout.stage
        approval = None
        while stage < last:
            wave = [c for c in cars if c.wave == stage]
            for car in wave:
                if car.state in CAR_FINAL:
                    continue
                known = inventory.get(car.vin)
                deferred = (
                    stage > 0 and car.state == PENDING and (known is None or not known.online)
                )
                if not deferred:
                    break
            else:
                if wave and stage in spec.pause_after and stage not in approved:
                    approval = f"approval of {stage_name(stage)} needed (POST .../approve)"
                    break
                stage += 1
                continue
            break
        if stage != rollout.stage:
            await self._set(stage=stage)
            rollout.stage = stage
        return stage, approval

    # -- 5. sending ---------------------------------------------------------------------------

    async def _send(
        self, rollout: RolloutRow, spec: RolloutSpec, cars: list[CarRow], stage: int, now: float
    ) -> dict[str, str | None]:
        inventory = self.ctx.service.inventory
        reasons: dict[str, str | None] = {}
        budget = None
        if spec.budget is not None:
            groups = {}
            for car in cars:
                known = inventory.get(car.vin)
                groups[car.vin] = spec.budget.group(known.labels if known else {})
            in_flight = {c.vin for c in cars if c.state == SENT} | set(self.tasks)
            budget = BudgetCheck(spec.budget, groups, in_flight)
        sent = rollout.sent_count
        first = rollout.first_sent_at
        candidates = sorted(
            (c for c in cars if c.state == PENDING and c.wave <= stage),
            key=lambda c: (c.wave, c.vin),
        )
        link = self.ctx.service.link
        for car in candidates:
            if rollout.state not in (RUNNING, WAITING):
                break
            if not link.connected:
                reasons[car.vin] = "fleet-server is not connected to the broker"
                continue
            known = inventory.get(car.vin)
            if known is None or not known.online:
                reasons[car.vin] = OFFLINE
                await self._unwatch(car.vin)
                continue
            if self.gates is not None:
                await self._watch(car.vin)
                if not self.gates.open(car.vin):
                    reasons[car.vin] = self.gates.why(car.vin)
                    continue
            if budget is not None and not budget.take(car.vin):
                reasons[car.vin] = budget.why(car.vin)
                continue
            if (
                spec.rate is not None
                and first is not None
                and spec.rate.allowed(now - first) < sent + 1
            ):
                reasons[car.vin] = f"rate: {spec.rate.per_minute:g} cars per minute"
                continue
            claimed = await self._db_call(
                store.claim_send,
                self._db,
                self.id,
                car.vin,
                owner=self.ctx.owner,
                actor=self.ctx.actor,
                now=time.time(),
                sign=self._signing(spec, car.vin),
                key_id=self.ctx.signer.key_id if self.ctx.signer else None,
            )
            if claimed is None:
                break  # paused, aborted or no longer ours: the next step sees why
            rid, signed = claimed
            sent += 1
            first = first if first is not None else now
            car.state = SENT
            reasons[car.vin] = None
            self.ctx.on_transition(SENT)
            await self._unwatch(car.vin)
            self._start(spec, car.vin, rid, again=False, signed=signed)
        return reasons

    def _signing(self, spec: RolloutSpec, vin: str) -> Callable[[Any], bytes] | None:
        signer = self.ctx.signer
        if signer is None:
            return None
        operation = self._operation(spec)
        payload = spec.manifest.encode()
        return lambda tx: signer.envelope(tx, operation, vin, payload)

    @staticmethod
    def _operation(spec: RolloutSpec) -> Operation:
        return Operation.APPLY if spec.operation == "apply" else Operation.DELETE

    async def _watch(self, vin: str) -> None:
        assert self.gates is not None
        if self.gates.watching(vin):
            return
        self.gates.watch(vin)
        topic = self.gates.gate.car_topic(vin)
        gates = self.gates
        link = self.ctx.service.link
        link.route(topic, lambda payload: gates.value(vin, payload))
        self._gate_topics[vin] = topic
        try:
            await link.subscribe([topic])
        except LinkError as e:
            log.warning("subscribing to %s failed: %s", topic, e)

    async def _unwatch(self, vin: str) -> None:
        topic = self._gate_topics.pop(vin, None)
        if topic is None or self.gates is None:
            return
        self.gates.forget(vin)
        link = self.ctx.service.link
        link.unroute(topic)
        with contextlib.suppress(LinkError):
            await link.unsubscribe([topic])

    async def _record_waiting(self, reasons: dict[str, str | None]) -> None:
        changed = {vin: why for vin, why in reasons.items() if self._waiting.get(vin) != why}
        if not changed:
            return
        await self._db_call(
            store.set_waiting, self._db, self.id, changed, owner=self.ctx.owner, now=time.time()
        )
        self._waiting.update(changed)

    # -- a car's turn -------------------------------------------------------------------------

    def _start(
        self, spec: RolloutSpec, vin: str, rid: str, *, again: bool, signed: bytes | None
    ) -> None:
        config = self.ctx.service.config
        ask = attempts.Ask(
            vin=vin,
            operation=self._operation(spec),
            payload=signed if signed is not None else spec.manifest.encode(),
            request_id=rid,
            settle=spec.soak_time,
            deadline=spec.progress_deadline,
            success=spec.success,
            request_timeout=config.request_timeout,
            expires=not_after(signed) if signed is not None else None,
        )
        task = asyncio.create_task(self._turn(spec, ask, again), name=f"rollout {self.id} {vin}")
        self.tasks[vin] = task
        task.add_done_callback(lambda t: self._done(vin, t))

    def _done(self, vin: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(vin) is task:
            del self.tasks[vin]
        if not task.cancelled() and task.exception() is not None:
            log.error("rollout %s car %s: %s", self.id, vin, task.exception())

    async def _turn(self, spec: RolloutSpec, ask: attempts.Ask, again: bool) -> None:
        link = self.ctx.service.link
        try:
            result = await attempts.attempt(
                link, ask, again=again, live=lambda: self._live(spec, ask.vin)
            )
        except LinkError as e:
            result = attempts.Result(attempts.UNKNOWN, message=str(e))
        if result.code == attempts.WAIT_TIMEOUT and not self._online(ask.vin):
            # Gone before its outcome: asked again (same id) when it is back.
            result = attempts.Result(attempts.UNKNOWN, message=result.message)
        # Counted with the API's requests: the car's code, ok, or UNKNOWN / RESIGN.
        decided = result.state in (attempts.SUCCEEDED, attempts.FAILED)
        outcome = result.code or ("ok" if decided else result.state.upper())
        self.ctx.service.metrics.requests.labels(ask.operation.value, outcome).inc()
        if result.state == attempts.RESIGN:
            await self._resign(spec, ask)
            return
        if result.state == attempts.UNKNOWN:
            known = self.ctx.service.inventory.get(ask.vin)
            online = known is not None and known.online
            if result.code == attempts.NO_REPLY and online:
                result = attempts.Result(FAILED, attempts.NO_REPLY, result.message)
            else:
                # Offline, or stopped while following: asked again when back (same id).
                self._asked_again[ask.vin] = time.time()
                return
        state = SUCCEEDED if result.state == attempts.SUCCEEDED else FAILED
        detail = dict(result.detail)
        message = result.message or None
        rolled = False
        if "rolled_back_by" in detail:
            rolled = True  # the car's journal says it was undone: not asked twice
            detail["rollback"] = "rolled back"
        elif state == FAILED and spec.on_failure == "rollback" and result.changed:
            try:
                rolled, said = await attempts.rollback(link, ask, self._sign_rollback)
            except (LinkError, DatabaseError) as e:
                rolled, said = False, f"rollback: {e}"
            detail["rollback"] = said
            detail["rollback_request_id"] = f"{ask.request_id}-rollback"
        final = ROLLED_BACK if rolled else state
        ids = [ask.request_id] + ([f"{ask.request_id}-rollback"] if "rollback" in detail else [])
        try:
            recorded = await self._db_call(
                store.record_car,
                self._db,
                self.id,
                ask.vin,
                state=final,
                owner=self.ctx.owner,
                actor=self.ctx.actor,
                now=time.time(),
                kind=result.kind,
                code=result.code,
                message=message,
                detail=detail,
                request_ids=ids,
            )
        except DatabaseError as e:
            log.warning("rollout %s car %s: result not recorded (%s)", self.id, ask.vin, e)
            return
        if recorded:
            self.ctx.on_transition(final)

    def _online(self, vin: str) -> bool:
        known = self.ctx.service.inventory.get(vin)
        return known is not None and known.online

    def _live(self, spec: RolloutSpec, vin: str) -> attempts.Result | None:
        """The car's live workload states (the inventory), when its outcome never came: every
        workload of the manifest running for soakTime (apply) or gone (delete) succeeds, one
        that failed fails; anything else decides nothing."""
        known = self.ctx.service.inventory.get(vin)
        if known is None or not known.online or not spec.workloads:
            return None
        states = {w.name: w for w in known.workloads}
        detail: dict[str, Any] = {"from": "live states"}
        if spec.operation == "delete":
            if any(name in states for name in spec.workloads):
                return None
            return attempts.Result(attempts.SUCCEEDED, detail={**detail, "outcome": "removed"})
        held = time.time() - spec.soak_time
        for name in spec.workloads:
            workload = states.get(name)
            if workload is None:
                return None
            if workload.state == "failed":
                reason = f"{name}: failed ({workload.substate}): {workload.info}"[:500]
                return attempts.Result(
                    attempts.FAILED,
                    attempts.NOT_RUNNING,
                    reason,
                    {**detail, "outcome": "failed", "reason": reason},
                    changed=True,
                )
            if workload.state != "running" or _since(workload.since) > held:
                return None
        return attempts.Result(
            attempts.SUCCEEDED, detail={**detail, "outcome": "running"}, changed=True
        )

    async def _resign(self, spec: RolloutSpec, ask: attempts.Ask) -> None:
        """A new attempt (new id, new signature) for a car that never got the last one."""
        signer = self.ctx.signer
        sign = self._signing(spec, ask.vin)
        if signer is None or sign is None:
            return
        claimed = await self._db_call(
            store.new_attempt,
            self._db,
            self.id,
            ask.vin,
            owner=self.ctx.owner,
            actor=self.ctx.actor,
            now=time.time(),
            sign=sign,
            key_id=signer.key_id,
        )
        if claimed is not None:
            rid, signed = claimed
            # Started from the callback of this task's end: the task slot must be free.
            asyncio.get_running_loop().call_soon(
                lambda: self._start(spec, ask.vin, rid, again=False, signed=signed)
            )

    async def _sign_rollback(self, vin: str, payload: bytes) -> bytes:
        signer = self.ctx.signer
        if signer is None:
            return payload
        signed: bytes = await self._db_call(
            signer.sign_now, self._db, Operation.ROLLBACK, vin, payload
        )
        return signed

    # -- 6. the end ---------------------------------------------------------------------------

    async def _finish(
        self, rollout: RolloutRow, spec: RolloutSpec, cars: list[CarRow], now: float
    ) -> bool:
        if self.tasks or any(c.state == SENT for c in cars):
            return False
        until = spec.cars.until
        open_to_joiners = spec.cars.selector is not None and until is not None and now < until
        if open_to_joiners:
            return False
        pending = [c for c in cars if c.state == PENDING]
        if pending and (until is None or now < until):
            return False  # offline or gated cars are served when they can be
        failures = sum(1 for c in cars if c.state in FAILURES)
        state = DONE_WITH_FAILURES if failures else DONE
        reason = f"{failures} car(s) failed" if failures else None
        skip = None
        if pending:
            skip = "cars.until passed before it could be served"
            reason = f"{reason + '; ' if reason else ''}{len(pending)} car(s) skipped: {skip}"
        if await self._set(state=state, reason=reason, waiting=None, skip=skip):
            self.ctx.on_transition(state)
        return True

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for vin in list(self._gate_topics):
            await self._unwatch(vin)


def _since(text: str) -> float:
    """A live state's ``since`` as Unix seconds; the future when it cannot be read."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return float("inf")
