"""Followed outcomes: what became of the workloads an apply or delete changed.

A requester asks for it with the MQTT 5 user property ``follow`` (``settle`` and
``deadline`` as further user properties, in seconds) or, on any broker, with one more topic
level after the request id: ``.../req/<id>/follow[;settle=S][;deadline=D]``. The immediate
reply is unchanged; exactly one outcome message follows on the same reply topic.

Each workload of the request is followed in the live model (fleet_connector/observe/live_model.py),
on the live-state thread, so an outcome never contradicts the retained workload topics:

* apply: the instance Ankaios added (or, for a workload the apply left unchanged, its
  current instance) until it is ``running`` for the settle time, ``succeeded``, ``failed``
  or ``not_scheduled``;
* delete: the deleted instance until it is gone (``removed``);
* at the deadline: ``timeout``, with the state each workload is stuck in.

Follows live in memory only. On a clean stop each open follow gets the outcome
``interrupted`` with the states known then; after a crash nothing follows, and the
workload topics tell what happened.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet_connector.ankaios.control_interface import ControlInterface
from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.mqtt.topics import FOLLOW_LEVEL, Operation
from fleet_connector.observe.live_model import InstanceState, Key, LiveModel, public_state
from fleet_connector.observe.log_tail import last_lines
from fleet_connector.observe.workload_states import WorkloadStates
from fleet_connector.requests.handler import Request

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

DEFAULT_SETTLE = 2.0
DEFAULT_DEADLINE = 60.0
MAX_SETTLE = 600.0
MAX_DEADLINE = 3600.0
MAX_OPEN = 1000
LOG_LINES = 20
LOG_TIMEOUT = 2.0
# The first outcome found wins for the request as a whole.
_PRECEDENCE = ("interrupted", "failed", "timeout", "not_scheduled", "removed", "running")


@dataclass(frozen=True)
class FollowSpec:
    settle: float = DEFAULT_SETTLE
    deadline: float = DEFAULT_DEADLINE


def _seconds(name: str, text: str, limit: float, minimum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not minimum <= value <= limit:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"follow {name} must be a number of seconds from {minimum:g} to {limit:g}, "
            f"not {text!r}",
        )
    return value


def follow_spec(request: Request) -> FollowSpec | None:
    """What the request asks to be followed with; raises RequestError for bad settings."""
    settings: dict[str, str] = {}
    if request.follow is not None:
        for part in request.follow.split(";")[1:]:
            key, sep, value = part.partition("=")
            if not sep or key not in ("settle", "deadline"):
                raise RequestError(
                    ErrorCode.INVALID_REQUEST,
                    f"the follow level is follow[;settle=S][;deadline=D], not {request.follow!r}",
                )
            settings[key] = value
    else:
        properties = dict(request.user_properties)
        wanted = properties.get(FOLLOW_LEVEL)
        if wanted is None or wanted.strip().lower() in ("", "0", "false", "no", "off"):
            return None
        settings = {k: v for k, v in properties.items() if k in ("settle", "deadline")}
    if request.operation not in (Operation.APPLY, Operation.DELETE):
        raise RequestError(ErrorCode.INVALID_REQUEST, "only apply and delete can be followed")
    settle = _seconds("settle", settings.get("settle", str(DEFAULT_SETTLE)), MAX_SETTLE, 0.0)
    deadline = _seconds(
        "deadline", settings.get("deadline", str(DEFAULT_DEADLINE)), MAX_DEADLINE, 0.1
    )
    return FollowSpec(settle, deadline)


@dataclass
class _Target:
    workload: str
    key: Key | None
    """The instance followed; None: whichever instance the workload has (unchanged ones)."""
    deleting: bool
    outcome: str | None = None
    last: InstanceState | None = None
    seen: bool = False
    logs: list[str] | None = None
    logs_error: str | None = None

    def report(self) -> dict[str, Any]:
        state = self.last
        report: dict[str, Any] = {"outcome": self.outcome}
        if state is not None:
            report |= state.to_dict()
        elif self.key is not None:
            report |= {"agent": self.key[0], "instance_id": self.key[2], "state": None}
        else:
            report["state"] = None
        if self.logs is not None:
            report["logs"] = self.logs
        if self.logs_error is not None:
            report["logs_error"] = self.logs_error
        return report


@dataclass
class _Follow:
    request: Request
    spec: FollowSpec
    targets: list[_Target]
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.spec.deadline


class Outcomes:
    """Open follows, evaluated on the live-state thread whenever the model changes."""

    def __init__(
        self,
        live: WorkloadStates,
        control_interface: ControlInterface,
        publish: Any,
    ) -> None:
        """``publish(request, payload)`` sends a message for a request on its reply topic."""
        self._live = live
        self._ci = control_interface
        self._publish = publish
        self._open: list[_Follow] = []
        self._count = 0
        # Held while follows are evaluated, so that stop() and an outcome never both answer one.
        self._lock = threading.RLock()
        # Made for the first failed workload, which most cars never see: concurrent.futures
        # stays unloaded until then (bench/README.md, "Footprint").
        self._logs: ThreadPoolExecutor | None = None
        live.observe(self._evaluate)

    def check(self, request: Request) -> FollowSpec | None:
        """The request's follow, refused before it is carried out when it cannot be had."""
        spec = follow_spec(request)
        if spec is not None and self._count >= MAX_OPEN:
            raise RequestError(ErrorCode.BUSY, f"{MAX_OPEN} follows are open; try again later")
        return spec

    def follow(self, request: Request, spec: FollowSpec, reply: dict[str, Any]) -> None:
        """Starts following a request Ankaios carried out (``reply`` is its answer)."""
        # The payload may be large; the follow needs only where to answer.
        light = dataclasses.replace(request, payload=b"")
        targets = _targets(request, reply)
        with self._lock:
            self._count += 1
        self._live.call_soon(lambda: self._add(_Follow(light, spec, targets)))

    def _add(self, follow: _Follow) -> None:
        with self._lock:
            self._open.append(follow)

    def stop(self) -> None:
        """Answers every open follow ``interrupted``: the connector is going away."""
        with self._lock:
            follows, self._open = self._open, []
            for follow in follows:
                for target in follow.targets:
                    target.outcome = target.outcome or "interrupted"
                self._finish(follow, fetch_logs=False)
            fetcher = self._logs
        if fetcher is not None:
            fetcher.shutdown(wait=True, cancel_futures=False)

    # -- on the live-state thread ---------------------------------------------------------

    def _evaluate(self, model: LiveModel, touched: set[str]) -> float | None:
        with self._lock:
            return self._evaluate_locked(model) if self._open else None

    def _evaluate_locked(self, model: LiveModel) -> float | None:
        now = time.monotonic()
        wall = time.time()
        wake: float | None = None
        still_open: list[_Follow] = []
        for follow in self._open:
            pending = False
            for target in follow.targets:
                if target.outcome is not None:
                    continue
                due = _evaluate_target(target, model, follow.spec.settle, wall)
                if target.outcome is None:
                    pending = True
                    if due is not None:
                        at = now + max(0.0, due - wall)
                        wake = at if wake is None else min(wake, at)
            if pending and now >= follow.deadline:
                for target in follow.targets:
                    target.outcome = target.outcome or "timeout"
                pending = False
            if pending:
                still_open.append(follow)
                wake = follow.deadline if wake is None else min(wake, follow.deadline)
            else:
                self._finish(follow, fetch_logs=True)
        self._open = still_open
        return wake

    def _finish(self, follow: _Follow, *, fetch_logs: bool) -> None:
        failed = [t for t in follow.targets if t.outcome == "failed" and t.last is not None]
        if fetch_logs and failed:
            if self._logs is None:  # under self._lock, as every _finish
                from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

                self._logs = ThreadPoolExecutor(1, thread_name_prefix="outcome-logs")
            self._logs.submit(self._with_logs, follow, failed)
        else:
            self._send(follow)

    def _with_logs(self, follow: _Follow, failed: list[_Target]) -> None:
        keys = [_key(t.last) for t in failed if t.last is not None]
        tail = last_lines(self._ci, keys, LOG_LINES, LOG_TIMEOUT)
        for target in failed:
            target.logs = tail.lines.get(target.workload, [])
            target.logs_error = tail.error
        self._send(follow)

    def _send(self, follow: _Follow) -> None:
        outcomes = {t.outcome for t in follow.targets}
        overall = next((o for o in _PRECEDENCE if o in outcomes), None)
        if overall is None:
            overall = "succeeded" if outcomes else "running"
        if not follow.targets:
            overall = "removed" if follow.request.operation is Operation.DELETE else "running"
        payload = {
            "outcome": overall,
            "workloads": {t.workload: t.report() for t in follow.targets},
        }
        self._publish(follow.request, json.dumps(payload))
        with self._lock:
            self._count -= 1
        log.info(
            "follow id=%s topic=%s outcome=%s duration_ms=%.1f%s",
            follow.request.request_id,
            follow.request.topic,
            overall,
            (time.monotonic() - follow.started) * 1000,
            follow.request.log_trace,
        )


def _key(state: InstanceState) -> Key:
    return (state.agent, state.workload, state.instance_id)


def _evaluate_target(target: _Target, model: LiveModel, settle: float, wall: float) -> float | None:
    """Sets the target's outcome when it has one; returns the wall time to look again."""
    if target.key is not None:
        state = model.instance(*target.key)
    else:
        state = model.current(target.workload)
    if state is not None:
        target.last = state
        target.seen = True
    if target.deleting:
        if state is None:
            target.outcome = "removed"
        return None
    if state is None:
        if target.seen:
            target.outcome = "removed"
        return None
    kind = public_state(state.state)
    if kind == "running":
        settled_at = state.since + settle
        if wall >= settled_at:
            target.outcome = "running"
            return None
        return settled_at
    if kind in ("failed", "succeeded", "not_scheduled"):
        target.outcome = kind
    elif kind == "pending" and state.substate == "StartingFailed":
        # The runtime could not start it (unknown image, bad runtimeConfig): failed, not late.
        target.outcome = "failed"
    return None


def _targets(request: Request, reply: dict[str, Any]) -> list[_Target]:
    deleting = request.operation is Operation.DELETE
    changed = reply.get("deleted_workloads" if deleting else "added_workloads") or []
    targets = [
        _Target(
            str(w["workload_name"]),
            (str(w["agent_name"]), str(w["workload_name"]), str(w["workload_id"])),
            deleting,
        )
        for w in changed
    ]
    followed = {t.workload for t in targets}
    try:
        named = sorted(parse_manifest(request.payload).workloads)
    except RequestError:
        named = []
    targets += [_Target(name, None, deleting) for name in named if name not in followed]
    return targets
