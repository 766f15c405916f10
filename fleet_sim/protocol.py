"""The connector's topics, error codes and time format, as far as the simulator speaks them.

Kept apart from fleet_connector on purpose: the simulator must not load the connector's
modules (each car would pay for them in memory), and tests/sim compares the two on the
wire instead, so a drift in either shows there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

PREFIX = "vehicle"
APPLY = "manifest/apply"
DELETE = "manifest/delete"
PLAN = "manifest/plan"
PLAN_DELETE = "manifest/plan-delete"
STATE = "state"
LOGS = "logs"
ROLLBACK = "manifest/rollback"
HISTORY = "history"
OPERATIONS = frozenset({APPLY, DELETE, PLAN, PLAN_DELETE, STATE, LOGS, ROLLBACK, HISTORY})
FOLLOWABLE = frozenset({APPLY, DELETE})
# Writes: deduplicated by id, journaled, subject to the reject ratio.
WRITES = frozenset({APPLY, DELETE, ROLLBACK})
FORBIDDEN_TOPIC_CHARS = frozenset("/+#\x00")
MAX_REQUEST_ID_BYTES = 1024

INVALID_REQUEST = "INVALID_REQUEST"
POLICY_DENIED = "POLICY_DENIED"
REJECTED = "REJECTED"
BUSY = "BUSY"
EXPIRED = "EXPIRED"
NO_JOURNAL = "NO_JOURNAL"


class SimError(Exception):
    """A request refused with one of the connector's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_json(self) -> str:
        return json.dumps({"error": {"code": self.code, "message": self.message}})


def seconds_stamp(when: float) -> str:
    """Presence times, as the connector writes them (whole seconds)."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def stamp(when: float) -> str:
    """Live-state and journal times (milliseconds)."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class Request:
    """One request as it came off MQTT, with where its answer goes."""

    vin: str
    operation: str
    request_id: str | None
    topic: str
    reply_topic: str
    payload: bytes
    follow: str | None = None
    correlation: bytes | None = None
    user_properties: list[tuple[str, str]] = field(default_factory=list)
    problem: SimError | None = None
    cancel: bool = False
    """A logs cancel (``<base>/logs/cancel[/<id>]``), not a request."""
    expires: float | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    vin: str
    operation: str
    request_id: str | None
    follow: str | None
    cancel: bool


def base(vin: str) -> str:
    return f"{PREFIX}/{vin}"


def response_topic(vin: str, operation: str, request_id: str | None) -> str:
    topic = f"{PREFIX}/{vin}/{operation}/resp"
    return f"{topic}/{request_id}" if request_id else topic


def subscriptions(vin: str) -> list[str]:
    """Three filters cover every request and cancel topic of a car (``#`` matches the
    parent level too, so ``.../req/#`` takes plain requests as well as those with an id)."""
    return [
        f"{PREFIX}/{vin}/manifest/+/req/#",
        f"{PREFIX}/{vin}/+/req/#",
        f"{PREFIX}/{vin}/logs/cancel/#",
    ]


def parse_topic(topic: str) -> Parsed | None:
    """The car, operation, id and follow level of a request topic; None for anything else."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != PREFIX:
        return None
    vin = parts[1]
    if parts[2] == "manifest":
        operation, tail = f"manifest/{parts[3]}", parts[4:]
    else:
        operation, tail = parts[2], parts[3:]
    if operation not in OPERATIONS or not tail:
        return None
    cancel = operation == LOGS and tail[0] == "cancel"
    if tail[0] != "req" and not cancel:
        return None
    request_id = tail[1] if len(tail) > 1 else None
    if request_id is not None and (not request_id or FORBIDDEN_TOPIC_CHARS & set(request_id)):
        return None
    follow = "/".join(tail[2:]) or None
    if follow is not None and (
        cancel or operation not in FOLLOWABLE or follow.split(";", 1)[0] != "follow"
    ):
        return None
    return Parsed(vin, operation, request_id, follow, cancel)


def owns(vin: str, topic: str) -> bool:
    """Whether an MQTT 5 response topic lies under the car's base, as the connector asks."""
    return topic.startswith(base(vin) + "/") and not (set("+#\x00") & set(topic))
