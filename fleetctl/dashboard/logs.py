"""Log tails on demand: one request to the car per page that asks, its batches passed on.

A page asks for a workload's tail (optionally followed); the dashboard sends the car a logs
request with an id of its own and hands every batch answered on that id to the page, as text.
When the page goes away before the car has ended the tail, the request is cancelled so that
the car stops sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_connector.mqtt.topics import FORBIDDEN_TOPIC_CHARS, Operation, Topics
from fleetctl.client.connection import BrokerError
from fleetctl.dashboard.model import text

log = logging.getLogger(__name__)

MAX_LINE = 4000
MAX_TAIL = 10_000
# A followed tail ends by itself after this long unless the page cancels it earlier.
FOLLOW_SECONDS = 600
# Batches a page may have waiting; a page further behind loses its tail (cancelled).
SESSION_QUEUE = 1000

Publish = Callable[[str, bytes], None]
Event = dict[str, Any]


def request_topic(vin: str, request_id: str) -> str:
    return Topics(vin).request(Operation.LOGS, request_id)


def cancel_topic(vin: str, request_id: str) -> str:
    return Topics(vin).logs_cancel(request_id)


def reply_filter(cars: Topics) -> str:
    return cars.response(Operation.LOGS, "+")


class LogRequestError(ValueError):
    """A page asked for something the dashboard will not send to a car."""


def valid_name(value: str, what: str) -> str:
    if not value or FORBIDDEN_TOPIC_CHARS.intersection(value) or len(value) > 200:
        raise LogRequestError(f"{what} must be 1 to 200 characters without / + #")
    return value


@dataclass
class Session:
    vin: str
    request_id: str
    follow: bool
    events: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(SESSION_QUEUE))
    ended: bool = False


def reply_event(payload: bytes) -> Event:
    """One batch of the car's answer, as the page gets it: text only, bounded."""
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return {"error": "the car's reply is not a JSON object"}
    error = data.get("error")
    if error is not None:
        if isinstance(error, dict):
            return {"error": text(f"{text(error.get('code'))}: {text(error.get('message'))}")}
        return {"error": text(error)}
    event: Event = {"seq": text(data.get("seq"))}
    if "end" in data:
        event["end"] = text(data["end"])
    if data.get("dropped"):
        # Lines the car could not send at its configured rate: the page says so.
        event["dropped"] = text(data["dropped"])
    lines = data.get("lines")
    if isinstance(lines, list):
        event["lines"] = [
            {
                "workload": text(item.get("workload")),
                "instance_id": text(item.get("instance_id")),
                "line": _line(item.get("line")),
            }
            for item in lines
            if isinstance(item, dict)
        ]
    return event


def _line(value: Any) -> str:
    line = value if isinstance(value, str) else text(value)
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "\u2026"


class Sessions:
    """The log tails pages have open, by request id."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._prefix = f"dash-{uuid.uuid4().hex[:8]}"
        self._ids = itertools.count(1)
        self._open: dict[str, Session] = {}

    def open(self, vin: str, workload: str, tail: int, follow: bool) -> Session:
        """Sends the request; raises LogRequestError or BrokerError."""
        valid_name(vin, "VIN")
        valid_name(workload, "workload name")
        if not 1 <= tail <= MAX_TAIL:
            raise LogRequestError(f"tail must be 1 to {MAX_TAIL}")
        request_id = f"{self._prefix}-{next(self._ids)}"
        session = Session(vin, request_id, follow)
        request: dict[str, Any] = {"workloads": [workload], "tail": tail}
        if follow:
            request["follow"] = FOLLOW_SECONDS
        self._open[request_id] = session
        try:
            self._publish(request_topic(vin, request_id), json.dumps(request).encode())
        except BrokerError:
            del self._open[request_id]
            raise
        return session

    def arrived(self, vin: str, request_id: str, payload: bytes) -> None:
        session = self._open.get(request_id)
        if session is None or session.vin != vin:
            return  # another operator's tail, or one that was closed
        event = reply_event(payload)
        if "end" in event or "error" in event:
            session.ended = True
            del self._open[request_id]
        try:
            session.events.put_nowait(event)
        except asyncio.QueueFull:
            self.close(session)
            while not session.events.empty():
                session.events.get_nowait()
            session.events.put_nowait({"error": "the page fell behind; the tail was cancelled"})

    def close(self, session: Session) -> None:
        """The page is done with it: cancels a tail the car has not ended."""
        if self._open.pop(session.request_id, None) is None or session.ended:
            return
        session.ended = True
        with contextlib.suppress(BrokerError):
            self._publish(cancel_topic(session.vin, session.request_id), b"{}")

    def cancel_all(self) -> None:
        for session in list(self._open.values()):
            self.close(session)
