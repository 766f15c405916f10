"""A car whose connector is a script, for rollout tests where the car's behaviour is chosen.

It publishes presence (with labels) like a FakeCar and answers what a rollout asks: followed
applies and deletes (the reply, then the outcome after ``delay`` seconds), rollbacks and
history, from a journal of its own. A repeated request id is never carried out twice:
``repeats="journal"`` answers it again with the journal's outcome (what a connector with the
journal does), ``repeats="silent"`` answers nothing (older connectors once the reply was out).
Everything it received and carried out is recorded for the test to assert on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from fleet_connector.mqtt.topics import Operation, Topics
from testkit.broker import Broker
from testkit.probe import MqttProbe
from testkit.server import FakeCar

WORKLOAD = "vehicle-data-sender"


@dataclass
class Change:
    operation: str
    request_id: str
    started: float
    ended: float | None = None
    outcome: str | None = None
    target: str | None = None
    """The request id a rollback undid."""


@dataclass
class Journal:
    changes: list[Change] = field(default_factory=list)
    rolled_back: set[str] = field(default_factory=set)

    def find(self, request_id: str) -> Change | None:
        for change in self.changes:
            if change.request_id == request_id:
                return change
        return None


class ScriptedCar(FakeCar):
    def __init__(
        self,
        broker: Broker,
        vin: str,
        *,
        outcome: str | Callable[[], str] = "running",
        delay: float = 0.0,
        repeats: str = "journal",
        labels: dict[str, str] | None = None,
        online: bool = True,
        lose_first: bool = False,
        rollback_delay: float = 0.0,
    ) -> None:
        self.probe = MqttProbe(broker, client_id=f"car-{vin}")
        super().__init__(self.probe.client, vin)
        self.car_topics = Topics(vin)
        self.outcome = outcome
        self.delay = delay
        self.repeats = repeats
        self.labels = dict(labels or {})
        self.journal = Journal()
        self.rollback_delay = rollback_delay
        """Seconds between carrying out a rollback and replying to it."""
        self.lose_first = lose_first
        """The first apply or delete never reaches it (lost on the way)."""
        self.received: list[tuple[str, str]] = []
        """(operation, request id) of every request, repeats too."""
        self.payloads: list[bytes] = []
        """The payload of each of them, as it came."""
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        self.probe.client.on_message = self._on_message
        for operation in (Operation.APPLY, Operation.DELETE, Operation.ROLLBACK, Operation.HISTORY):
            self.probe.subscribe(self.car_topics.request(operation, "+"))
            self.probe.subscribe(self.car_topics.request(operation, "+") + "/+")
        if online:
            self.online()

    # -- presence ---------------------------------------------------------------------------

    def online(self, **labels: str) -> None:
        self.labels.update(labels)
        self.presence("online", labels=self.labels)

    def offline(self) -> None:
        self.presence("offline", labels=self.labels)

    # -- what it was asked ------------------------------------------------------------------

    def applied(self) -> list[str]:
        with self._lock:
            return [c.request_id for c in self.journal.changes if c.operation != "rollback"]

    def rollbacks(self) -> list[str]:
        with self._lock:
            return [c.request_id for c in self.journal.changes if c.operation == "rollback"]

    def intervals(self) -> list[tuple[float, float]]:
        """(received, outcome sent) of each change carried out."""
        with self._lock:
            return [(c.started, c.ended or time.monotonic()) for c in self.journal.changes]

    # -- answering --------------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        parsed = self.car_topics.parse_request(msg.topic)
        if parsed is None or parsed.request_id is None:
            return
        rid = parsed.request_id
        operation = parsed.operation
        reply_topic = self.car_topics.response(operation, rid)
        with self._lock:
            self.received.append((operation.value, rid))
            self.payloads.append(bytes(msg.payload))
            if operation is Operation.HISTORY:
                self._send(reply_topic, {"entries": self._history()})
                return
            if operation is Operation.ROLLBACK:
                self._rollback(reply_topic, rid, json.loads(msg.payload or b"{}"))
                return
            if self.lose_first and operation in (Operation.APPLY, Operation.DELETE):
                self.lose_first = False
                return
            known = self.journal.find(rid)
            if known is not None:
                if self.repeats == "journal":
                    self._send(reply_topic, {"added_workloads": [], "deleted_workloads": []})
                    if known.outcome is not None:
                        self._send(reply_topic, self._outcome_message(known.outcome))
                return
            change = Change(operation.value, rid, time.monotonic())
            self.journal.changes.append(change)
            self._send(reply_topic, {"added_workloads": [], "deleted_workloads": []})
        if parsed.follow is not None:
            timer = threading.Timer(self.delay, self._finish, (change, reply_topic))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def _finish(self, change: Change, reply_topic: str) -> None:
        outcome = self.outcome() if callable(self.outcome) else self.outcome
        with self._lock:
            change.outcome = outcome
            change.ended = time.monotonic()
        self._send(reply_topic, self._outcome_message(outcome))

    def _outcome_message(self, outcome: str) -> dict[str, Any]:
        report: dict[str, Any] = {"outcome": outcome, "agent": "agent_A", "instance_id": "i1"}
        if outcome == "running":
            report.update(state="running", substate="Ok", info="")
        else:
            report.update(
                state="failed",
                substate="ExecFailed",
                info="Exit code: '2'",
                logs=["starting", "error: INTERVAL must be a number of seconds > 0"],
            )
        return {"outcome": outcome, "workloads": {WORKLOAD: report}}

    def _history(self) -> list[dict[str, Any]]:
        return [
            {
                "entry": number,
                "request_id": c.request_id,
                "operation": c.operation.removeprefix("manifest/"),
                "outcome": "OK",
                "followed": c.outcome,
                "rolled_back_by": self._undone_by(c.request_id),
            }
            for number, c in reversed(list(enumerate(self.journal.changes, 1)))
        ]

    def _undone_by(self, request_id: str) -> int | None:
        for number, change in enumerate(self.journal.changes, 1):
            if change.operation == "rollback" and change.target == request_id:
                return number
        return None

    def _rollback(self, reply_topic: str, rid: str, body: dict[str, Any]) -> None:
        target = body.get("request_id")
        if self.journal.find(rid) is not None:
            self._send(reply_topic, {"added_workloads": [], "deleted_workloads": []})
            return
        if not isinstance(target, str) or self.journal.find(target) is None:
            self._send(
                reply_topic,
                {"error": {"code": "INVALID_REQUEST", "message": f"no entry {target!r}"}},
            )
            return
        self.journal.rolled_back.add(target)
        now = time.monotonic()
        self.journal.changes.append(Change("rollback", rid, now, now, target=target))
        reply = {
            "added_workloads": [],
            "deleted_workloads": [],
            "rolled_back": {"entry": 1, "request_id": target},
        }
        timer = threading.Timer(self.rollback_delay, self._send, (reply_topic, reply))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _send(self, topic: str, body: dict[str, Any]) -> None:
        self.probe.client.publish(topic, json.dumps(body), qos=1)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self.clear()
        # Disconnecting first ends paho's loop at once (stopping it first waits out its select).
        self.probe.client.disconnect()
        self.probe.client.loop_stop()
