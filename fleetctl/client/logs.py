"""``fleetctl logs``: a car's workload logs, like ``ank logs``, through its connector.

One request on ``vehicle/<VIN>/logs/req/<id>``; the batches on ``.../logs/resp/<id>`` are
printed line by line until the end message. Ctrl-C or SIGTERM while following sends the
cancel and prints what still comes until the connector ends the stream.
"""

from __future__ import annotations

import json
import queue
import sys
import uuid
from dataclasses import dataclass
from typing import Any, TextIO

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Operation, Topics
from fleetctl.client.connection import BrokerError, Connection

# After a cancel, how long the end message may take.
CANCEL_GRACE = 5.0


@dataclass(frozen=True)
class LogsQuery:
    vin: str
    workloads: list[str]
    tail: int | None
    follow: float
    since: str | None = None
    until: str | None = None

    def payload(self) -> bytes:
        body: dict[str, Any] = {"workloads": self.workloads}
        if self.tail is not None:
            body["tail"] = self.tail
        if self.follow:
            body["follow"] = self.follow
        if self.since:
            body["since"] = self.since
        if self.until:
            body["until"] = self.until
        return json.dumps(body).encode()


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while streaming."""


def run(
    settings: BrokerSettings,
    query: LogsQuery,
    *,
    timeout: float,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Prints the lines; 0 when the stream ended normally, 1 for an error or no answer."""
    out = out or sys.stdout
    err = err or sys.stderr
    arrived: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    topics = Topics(query.vin)
    request_id = f"fleetctl-logs-{uuid.uuid4().hex[:8]}"
    reply_topic = topics.response(Operation.LOGS, request_id)
    connection = Connection(
        settings,
        lambda topic, payload, retained: arrived.put(payload) if topic == reply_topic else None,
    )
    prefix = len(query.workloads) > 1
    connection.open(timeout)
    try:
        refused = connection.subscribe([reply_topic], timeout)
        if refused:
            raise BrokerError(f"the broker refused the subscription {reply_topic}")
        connection.publish(topics.request(Operation.LOGS, request_id), query.payload())
        # Without follow the stream ends by itself; each batch must come within timeout.
        wait = timeout if not query.follow else query.follow + timeout
        cancelled = False
        while True:
            try:
                try:
                    payload = arrived.get(timeout=wait)
                except queue.Empty:
                    print(f"fleetctl: no answer from {query.vin} within {wait:g}s", file=err)
                    return 1
                ended = _show(_parse(payload), query, prefix, out, err)
                if ended is not None:
                    return ended
            except (KeyboardInterrupt, Interrupted):
                if cancelled:
                    return 1
                cancelled = True
                connection.publish(topics.logs_cancel(request_id), b"")
                wait = CANCEL_GRACE
    finally:
        connection.close()


def _show(
    message: dict[str, Any], query: LogsQuery, prefix: bool, out: TextIO, err: TextIO
) -> int | None:
    """Prints one message of the stream; the exit code once it is the last one."""
    if "error" in message:
        error = message["error"]
        if isinstance(error, dict):
            error = f"{error.get('code')}: {error.get('message')}"
        print(f"fleetctl: {query.vin}: {error}", file=err)
        return 1
    for line in message.get("lines") or []:
        if not isinstance(line, dict):
            continue
        text = str(line.get("line", ""))
        print(f"{line.get('workload')}: {text}" if prefix else text, file=out, flush=True)
    if message.get("dropped"):
        print(f"fleetctl: {message['dropped']} line(s) dropped by the car's rate limit", file=err)
    end = message.get("end")
    return None if end is None else _ended(str(end), message, err)


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        data = None
    if not isinstance(data, dict):
        return {"error": f"the car's answer is not a JSON object: {payload[:200]!r}"}
    return data


def _ended(end: str, message: dict[str, Any], err: TextIO) -> int:
    if end == "error":
        print(f"fleetctl: the log stream failed: {message.get('message', '')}", file=err)
        return 1
    if end == "limit":
        print("fleetctl: the car's line limit (LOG_MAX_LINES) ended the stream", file=err)
    return 0
