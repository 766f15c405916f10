"""Requests to cars and their replies, matched by request id.

Every request goes to ``<base>/<operation>/req/<id>`` with an id unique to this run, so the
reply on ``<base>/<operation>/resp/<id>`` is ours even on MQTT 3.1.1 and among other
operators' replies. Replies are dispatched on paho's thread into per-request events; the
main thread waits on them with one deadline for a whole batch.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Operation, Topics
from fleetctl.client.connection import Connection
from fleetctl.client.presence import Presence
from fleetctl.client.results import BAD_REPLY, BROKER_REFUSED, NOT_DELIVERED

# MQTT 5 PUBACK reason "No matching subscribers": not an error for the broker, but for us
# it means no car session holds the request, so no reply will ever come.
_NO_MATCHING_SUBSCRIBERS = 0x10


@dataclass(frozen=True)
class Reply:
    """What a car answered: the connector's data, or its error code and message."""

    data: Any = None
    code: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None

    @classmethod
    def parse(cls, payload: bytes, operation: Operation | None = None) -> Reply:
        """The reply, checked as hostile data: a car may send anything (a defect, or a
        compromised car), and one car's reply must never break fleetctl for the others."""
        try:
            data = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            text = payload[:200].decode("utf-8", "replace")
            return cls(code=BAD_REPLY, message=f"the reply is not JSON: {text!r}")
        except RecursionError:
            return cls(code=BAD_REPLY, message="the reply is nested too deeply")
        problem = reply_problem(data, operation)
        if problem is not None:
            return cls(code=BAD_REPLY, message=f"the reply has the wrong shape: {problem}")
        if isinstance(data, dict) and "error" in data:
            error = data["error"]
            return cls(code=error["code"], message=error.get("message", ""))
        return cls(data=data)


# Deeper replies are refused: printing them (JSON, YAML) recurses once per level.
MAX_DEPTH = 32
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_UPDATE_FIELDS = ("added_workloads", "deleted_workloads")


def reply_problem(data: Any, operation: Operation | None) -> str | None:
    """What is wrong with a reply's shape for its operation, or None."""
    if _depth_exceeds(data, MAX_DEPTH):
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(data, dict) and "error" in data:
        error = data["error"]
        if not isinstance(error, dict):
            return "an error reply is {'error': {'code': ..., 'message': ...}}"
        if not isinstance(error.get("code"), str) or not _CODE.fullmatch(error["code"]):
            return "the error code is not an upper-case code such as POLICY_DENIED"
        if not isinstance(error.get("message", ""), str):
            return "the error message is not text"
        return None
    if operation in (Operation.APPLY, Operation.DELETE):
        if not isinstance(data, dict):
            return "an apply or delete reply is a mapping"
        for key in _UPDATE_FIELDS:
            items = data.get(key)
            if not isinstance(items, list) or not all(
                isinstance(item, dict)
                and all(isinstance(item.get(f), str) for f in _INSTANCE_FIELDS)
                for item in items
            ):
                return f"{key} is not a list of workload instances"
    elif operation is Operation.STATE:
        if not isinstance(data, dict):
            return "a state reply is a mapping"
        states = data.get("workload_states", {})
        if not _nested_dicts(states, 3) or not all(
            isinstance(state.get(f, ""), str)
            for agent in states.values()
            for workload in agent.values()
            for state in workload.values()
            for f in ("state", "substate", "additional_info")
        ):
            return "workload_states is not agent -> workload -> id -> state"
        desired = data.get("desired_state", {})
        if not isinstance(desired, dict) or not all(
            isinstance(desired.get(key, {}), dict) for key in ("workloads", "configs")
        ):
            return "desired_state is not a mapping with workloads and configs"
    return None


_INSTANCE_FIELDS = ("agent_name", "workload_name", "workload_id")


def _nested_dicts(value: Any, levels: int) -> bool:
    """Whether ``value`` is a mapping of mappings ``levels`` deep, leaves mappings too."""
    if not isinstance(value, dict):
        return False
    if levels == 0:
        return True
    return all(_nested_dicts(child, levels - 1) for child in value.values())


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(current, dict):
            stack.extend((child, depth + 1) for child in current.values())
        elif isinstance(current, list):
            stack.extend((child, depth + 1) for child in current)
    return False


@dataclass
class Pending:
    """One request in flight; ``reply`` is set (once) when the car answers."""

    vin: str
    operation: Operation
    request_id: str
    reply_topic: str
    outcome: Pending | None = None
    """For a followed request: the outcome message that comes after the reply."""
    key: str = ""
    """Where the engine keeps it: the reply topic (an outcome's has a suffix)."""
    done: threading.Event = field(default_factory=threading.Event)
    reply: Reply | None = None
    sent_at: float = field(default_factory=time.monotonic)
    answered_at: float | None = None
    _notify: queue.SimpleQueue[Pending] | None = None

    def __post_init__(self) -> None:
        self.key = self.key or self.reply_topic


_OUTCOME = "#outcome"


# Above this many cars, wildcard subscriptions instead of per-car ones (see subscribe).
PER_CAR_FILTERS_UP_TO = 20


class Engine:
    """Sends requests over one connection and routes the replies to their ``Pending``."""

    def __init__(self, settings: BrokerSettings, *, expiry: int | None = None) -> None:
        self.run_id = f"fleetctl-{uuid.uuid4().hex[:8]}"
        self.expiry = expiry
        self.connection = Connection(
            settings,
            self._dispatch,
            client_id=self.run_id,
            on_ack=self._acknowledged,
        )
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        # Requests by message id until the broker acknowledges them; an acknowledgement
        # may come before publish() has returned the id, so it waits in _early_acks.
        self._unacknowledged: dict[int, Pending] = {}
        self._early_acks: dict[int, ReasonCode] = {}
        self._counter = 0
        self._presence: dict[str, Presence] = {}
        self._status_topics: dict[str, str] = {}

    def subscribe(
        self, vins: Iterable[str], operations: Iterable[Operation], timeout: float
    ) -> dict[str, list[str]]:
        """Reply and presence subscriptions for these cars, before anything is published.

        Up to PER_CAR_FILTERS_UP_TO cars, per-car filters: they deliver only the replies of
        the cars we ask, and they work under per-car broker ACLs. For more cars, one
        ``vehicle/+/...`` filter per topic kind: brokers limit subscriptions per session
        (NATS refuses more than about 63) and some make each one expensive. Returns the
        refused filters by VIN.
        """
        cars = list(vins)
        operations = list(operations)
        with self._lock:
            for vin in cars:
                self._status_topics[Topics(vin).status] = vin
        owners: dict[str, list[str]] = {}
        if len(cars) <= PER_CAR_FILTERS_UP_TO:
            for vin in cars:
                topics = Topics(vin)
                for operation in operations:
                    owners[topics.response(operation, "+")] = [vin]
                owners[topics.status] = [vin]
        else:
            every = Topics("+")
            for operation in operations:
                owners[every.response(operation, "+")] = cars
            owners[every.status] = cars
        refused: dict[str, list[str]] = {}
        for topic in self.connection.subscribe(list(owners), timeout):
            for vin in owners[topic]:
                refused.setdefault(vin, []).append(topic)
        return refused

    def send(
        self,
        vin: str,
        operation: Operation,
        payload: bytes | str,
        request_id: str | None = None,
        *,
        follow: str | None = None,
    ) -> Pending:
        """``request_id`` is chosen here unless given (a rollout's ids are stable, so a
        request sent again after a crash is the same request). ``follow``
        (``follow;settle=S;deadline=D``) asks for the outcome too (its topic level works on
        MQTT 3.1.1 as well); it arrives in ``pending.outcome``."""
        with self._lock:
            self._counter += 1
            request_id = request_id or f"{self.run_id}-{self._counter}"
        topics = Topics(vin)
        reply_topic = topics.response(operation, request_id)
        pending = Pending(vin, operation, request_id, reply_topic)
        if follow is not None:
            pending.outcome = Pending(
                vin, operation, request_id, reply_topic, key=reply_topic + _OUTCOME
            )
        with self._lock:
            self._pending[pending.key] = pending
            if pending.outcome is not None:
                self._pending[pending.outcome.key] = pending.outcome
        topic = topics.request(operation, request_id)
        if follow is not None:
            topic = f"{topic}/{follow}"
        mid = self.connection.publish(topic, payload, expiry=self.expiry)
        with self._lock:
            reason = self._early_acks.pop(mid, None)
            if reason is None:
                self._unacknowledged[mid] = pending
            else:
                self._settle_locked(pending, reason)
        return pending

    def send_many(
        self,
        vins: Sequence[str],
        operation: Operation,
        payload: bytes | str,
        *,
        follow: str | None = None,
    ) -> list[Pending]:
        return [self.send(vin, operation, payload, follow=follow) for vin in vins]

    def wait(
        self,
        pendings: Sequence[Pending],
        timeout: float,
        on_reply: Callable[[Pending], None] | None = None,
    ) -> None:
        """Returns when every request has its reply or ``timeout`` seconds have passed.

        ``on_reply`` runs on this thread for each reply as it arrives (progress display).
        """
        arrived: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        outstanding = set()
        with self._lock:
            for pending in pendings:
                if pending.done.is_set():
                    arrived.put(pending)
                else:
                    pending._notify = arrived
                outstanding.add(id(pending))
        deadline = time.monotonic() + timeout
        while outstanding:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                pending = arrived.get(timeout=remaining)
            except queue.Empty:
                break
            outstanding.discard(id(pending))
            if on_reply is not None:
                on_reply(pending)
        with self._lock:
            for pending in pendings:
                pending._notify = None
                if not pending.done.is_set():
                    # A late reply is not ours to report any more.
                    self._pending.pop(pending.key, None)
                    if pending.outcome is not None:
                        self._pending.pop(pending.outcome.key, None)

    def open(self, timeout: float) -> None:
        self.connection.open(timeout)

    def presence(self, vin: str) -> Presence | None:
        with self._lock:
            return self._presence.get(vin)

    def close(self) -> None:
        self.connection.close()

    def _acknowledged(self, mid: int, reason: ReasonCode) -> None:
        """paho's thread: the broker took a request; on MQTT 5 it says if anyone gets it."""
        with self._lock:
            pending = self._unacknowledged.pop(mid, None)
            if pending is None:
                self._early_acks[mid] = reason
            else:
                self._settle_locked(pending, reason)

    def _settle_locked(self, pending: Pending, reason: ReasonCode) -> None:
        if reason.is_failure:
            message = f"the broker refused the request: {reason}"
            self._complete_locked(pending, Reply(code=BROKER_REFUSED, message=message))
        elif reason.value == _NO_MATCHING_SUBSCRIBERS:
            message = (
                "no connector is subscribed for this car on the broker (unknown VIN, a "
                "connector that never connected, or one whose session expired), so nothing "
                "keeps the request"
            )
            self._complete_locked(pending, Reply(code=NOT_DELIVERED, message=message))

    def _complete_locked(self, pending: Pending, reply: Reply) -> None:
        if self._pending.pop(pending.key, None) is None:
            return  # answered already, or given up by wait()
        if not reply.ok and pending.outcome is not None:
            self._pending.pop(pending.outcome.key, None)  # a refused request has no outcome
        pending.reply = reply
        pending.answered_at = time.monotonic()
        pending.done.set()
        if pending._notify is not None:
            pending._notify.put(pending)

    def _dispatch(self, topic: str, payload: bytes, retained: bool) -> None:
        """paho's thread: a reply completes its request; presence is remembered."""
        with self._lock:
            # The reply comes first; a second message on the topic is the outcome.
            pending = self._pending.get(topic) or self._pending.get(topic + _OUTCOME)
            status_vin = self._status_topics.get(topic)
            if pending is not None:
                # An outcome is shaped otherwise than the reply to its operation.
                is_outcome = pending.key.endswith(_OUTCOME)
                shape = None if is_outcome else pending.operation
                self._complete_locked(pending, Reply.parse(payload, shape))
            elif status_vin is not None:
                presence = Presence.parse(status_vin, payload)
                if presence is not None:
                    self._presence[status_vin] = presence
