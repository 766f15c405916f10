"""One car's turn: the followed request, its reply and outcome, and a rollback if it failed.

The request goes to ``vehicle/<VIN>/manifest/<op>/req/<request-id>/follow;settle=S;deadline=D``
(the follow level works on MQTT 3.1.1 and 5), with S the rollout's soakTime: the car's
``running`` outcome means its workloads ran that long without interruption, and only that
promotes a car ("accepted" never does). The reply and the outcome come on ``.../resp/<id>``.

A car sent before (by an instance that died, or before the car went offline) is asked again
with the same request id. Its journal knows the change: first the car's history is read for
that id, and a known ``followed`` outcome decides at once (nothing is sent again). Otherwise
the same request is sent again: a connector answers a repeat from its journal or reply
cache rather than carrying it out twice, and one that follows it again sends the outcome.
A connector that answers a repeat with nothing at all (older ones, once the reply went out)
is covered by the history being read again when the outcome's time is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fleet_connector.mqtt.topics import Operation, Topics
from fleet_server.broker_link import BrokerLink, LinkError

SUCCEEDED = "succeeded"
FAILED = "failed"
UNKNOWN = "unknown"
"""Nothing decisive came (no reply, or the connector stopped while following): the car
stays ``sent`` and is asked again, with the same id, once it is online."""
RESIGN = "resign"
"""The car never got this attempt and its signature ran out: a new attempt is due."""
EXPIRY_MARGIN = 10.0

NO_REPLY = "NO_REPLY"
WAIT_TIMEOUT = "WAIT_TIMEOUT"
NOT_RUNNING = "NOT_RUNNING"
BAD_REPLY = "BAD_REPLY"
INTERRUPTED = "interrupted"

_REJECTED = frozenset(
    {
        "INVALID_REQUEST",
        "POLICY_DENIED",
        "ACCESS_DENIED",
        "SIGNATURE_INVALID",
        "REJECTED",
        "EXPIRED",
        "BAD_REPLY",
    }
)
_TIMEOUT = frozenset({"TIMEOUT", WAIT_TIMEOUT})
LOG_LINES = 5
HISTORY_LIMIT = 200


def failure_kind(code: str | None) -> str:
    """rejected, failed, timeout or noReply: what the abort thresholds count."""
    if code == NO_REPLY:
        return "noReply"
    if code in _TIMEOUT:
        return "timeout"
    if code in _REJECTED:
        return "rejected"
    return "failed"


@dataclass
class Result:
    state: str
    code: str | None = None
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    """Whether the car carried the change out (so a rollback has something to undo)."""

    @property
    def kind(self) -> str | None:
        return None if self.state == SUCCEEDED else failure_kind(self.code)


@dataclass(frozen=True)
class Ask:
    """What to send and how long to wait."""

    vin: str
    operation: Operation
    payload: bytes
    request_id: str
    settle: float
    deadline: float
    success: str
    """The followed outcome that promotes the car (running for apply, removed for delete)."""
    request_timeout: float
    expires: float | None = None
    """When the signature of ``payload`` runs out (signed requests only)."""


class Exchange:
    """One request id on one car: its reply topic routed into a queue while open."""

    def __init__(self, link: BrokerLink, vin: str, operation: Operation, request_id: str) -> None:
        self.link = link
        self.topics = Topics(vin)
        self.operation = operation
        self.request_id = request_id
        self.reply_topic = self.topics.response(operation, request_id)
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()

    async def __aenter__(self) -> Exchange:
        self.link.route(self.reply_topic, self.messages.put_nowait)
        try:
            await self.link.subscribe([self.reply_topic])
        except BaseException:
            self.link.unroute(self.reply_topic)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.link.unroute(self.reply_topic)
        with contextlib.suppress(LinkError):
            await self.link.unsubscribe([self.reply_topic])

    def send(self, payload: bytes, level: str = "") -> None:
        topic = self.topics.request(self.operation, self.request_id)
        if level:
            topic = f"{topic}/{level}"
        self.link.publish(
            topic,
            payload,
            response_topic=self.reply_topic,
            correlation=self.request_id.encode(),
        )

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message as a JSON object (anything else: a BAD_REPLY error), or None."""
        try:
            payload = await asyncio.wait_for(self.messages.get(), max(timeout, 0.0))
        except TimeoutError:
            return None
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            return {"error": {"code": BAD_REPLY, "message": "the reply is not a JSON object"}}
        return data


def follow_level(settle: float, deadline: float) -> str:
    return f"follow;settle={settle:g};deadline={deadline:g}"


def _error(data: dict[str, Any]) -> tuple[str, str] | None:
    error = data.get("error")
    if error is None:
        return None
    if not isinstance(error, dict):
        return BAD_REPLY, "the error reply has no code"
    code = error.get("code")
    code = code if isinstance(code, str) and code.isupper() and len(code) <= 64 else BAD_REPLY
    message = error.get("message")
    return code, message[:1000] if isinstance(message, str) else ""


def judge(data: dict[str, Any], success: str) -> Result:
    """What a followed outcome means: the success outcome promotes, ``interrupted`` (the
    connector stopped) decides nothing, anything else failed; with the reason and the last
    log lines of each workload that did not make it."""
    overall = str(data.get("outcome"))[:32]
    if overall == success:
        return Result(SUCCEEDED, detail={"outcome": overall}, changed=True)
    if overall == INTERRUPTED:
        return Result(UNKNOWN, message="the car stopped before the outcome was known")
    reports = data.get("workloads")
    reasons: list[str] = []
    logs: dict[str, list[str]] = {}
    if isinstance(reports, dict):
        for name, report in list(reports.items())[:64]:
            if not isinstance(report, dict) or report.get("outcome") == success:
                continue
            text = f"{str(name)[:128]}: {str(report.get('state', ''))[:32]}"
            if report.get("substate"):
                text += f" ({str(report['substate'])[:64]})"
            if report.get("info"):
                text += f": {str(report['info'])[:300]}"
            text += f" [{str(report.get('outcome'))[:32]}]"
            lines = report.get("logs")
            if isinstance(lines, list) and lines:
                kept = [str(line)[:500] for line in lines[-LOG_LINES:]]
                logs[str(name)[:128]] = kept
                text += " last lines: " + " | ".join(kept[-3:])
            reasons.append(text)
    message = "; ".join(reasons) or f"outcome {overall}"
    code = WAIT_TIMEOUT if overall == "timeout" else NOT_RUNNING
    detail: dict[str, Any] = {"outcome": overall, "reason": message}
    if logs:
        detail["logs"] = logs
    return Result(FAILED, code, message, detail, changed=True)


async def history_entry(link: BrokerLink, vin: str, request_id: str, timeout: float) -> Any:
    """The car's journal entry for ``request_id``: the entry, False when the journal has
    none (or the car keeps no journal), None when the car did not answer."""
    # An id of its own each time: a connector answers a repeated id from its reply cache.
    rid = f"{request_id}-history-{secrets.token_hex(4)}"
    async with Exchange(link, vin, Operation.HISTORY, rid) as exchange:
        exchange.send(json.dumps({"limit": HISTORY_LIMIT}).encode())
        data = await exchange.next(timeout)
    if data is None:
        return None
    entries = data.get("entries")
    if not isinstance(entries, list):
        return False
    for entry in entries:
        if isinstance(entry, dict) and entry.get("request_id") == request_id:
            return entry
    return False


def _from_journal(entry: dict[str, Any], success: str) -> Result | None:
    """A decision from the car's journal entry, if it holds one."""
    outcome = entry.get("outcome")
    if isinstance(outcome, str) and outcome not in ("OK", "PENDING"):
        return Result(FAILED, outcome[:64], f"the car's journal: {outcome}", {"from": "journal"})
    followed = entry.get("followed")
    if not isinstance(followed, str) or followed == INTERRUPTED:
        return None
    result = judge({"outcome": followed}, success)
    result.detail["from"] = "journal"
    undone = entry.get("rolled_back_by")
    if result.state == FAILED and undone is not None:
        # Rolled back already (by an instance that died before it could record it).
        result.detail["rolled_back_by"] = str(undone)[:64]
    return result


async def attempt(
    link: BrokerLink,
    ask: Ask,
    *,
    again: bool,
    live: Callable[[], Result | None] = lambda: None,
) -> Result:
    """The car's turn; ``again``: it was sent this request before (same id). ``live``
    judges the car's live workload states, the last resort when a change was carried out
    but its outcome never came (the connector restarted while following it)."""
    journaled = False
    if again:
        entry = await history_entry(link, ask.vin, ask.request_id, ask.request_timeout)
        if isinstance(entry, dict):
            decided = _from_journal(entry, ask.success)
            if decided is not None:
                return decided
            journaled = True  # carried out; its outcome is still to come
        elif (
            entry is False
            and ask.expires is not None
            and time.time() >= ask.expires - EXPIRY_MARGIN
        ):
            # Never carried out, and the signature is (about to be) out of date.
            return Result(RESIGN, message="the signature ran out before the car got it")
    async with Exchange(link, ask.vin, ask.operation, ask.request_id) as exchange:
        exchange.send(ask.payload, follow_level(ask.settle, ask.deadline))
        if not journaled:
            data = await exchange.next(ask.request_timeout)
            if data is None:
                return Result(UNKNOWN, NO_REPLY, f"no reply within {ask.request_timeout:g}s")
            failure = _error(data)
            if failure is not None:
                return Result(FAILED, failure[0], failure[1])
            if "outcome" in data:
                return judge(data, ask.success)
        data = await exchange.next(ask.deadline + ask.request_timeout)
        while data is not None and "outcome" not in data and _error(data) is None:
            data = await exchange.next(ask.deadline + ask.request_timeout)  # a repeated reply
    if data is not None:
        failure = _error(data)
        if failure is not None:
            return Result(FAILED, failure[0], failure[1], changed=True)
        return judge(data, ask.success)
    # The outcome's time is up: the journal may know it (a connector that stayed silent).
    entry = await history_entry(link, ask.vin, ask.request_id, ask.request_timeout)
    if isinstance(entry, dict):
        decided = _from_journal(entry, ask.success)
        if decided is not None:
            return decided
    decided = live()
    if decided is not None:
        return decided
    waited = ask.deadline + ask.request_timeout
    return Result(
        FAILED,
        WAIT_TIMEOUT,
        f"no outcome within {waited:g}s (the car's connector cannot follow, or stopped)",
        {"outcome": "timeout"},
        changed=True,
    )


async def rollback(
    link: BrokerLink, ask: Ask, sign: Callable[[str, bytes], Awaitable[bytes]]
) -> tuple[bool, str]:
    """Undoes the request on the car through its journal; (done, what the car said)."""
    rid = f"{ask.request_id}-rollback"
    body = await sign(ask.vin, json.dumps({"request_id": ask.request_id}).encode())
    async with Exchange(link, ask.vin, Operation.ROLLBACK, rid) as exchange:
        exchange.send(body)
        data = await exchange.next(ask.request_timeout)
    if data is None:
        return False, f"rollback: no reply within {ask.request_timeout:g}s"
    failure = _error(data)
    if failure is not None:
        return False, f"rollback: {failure[0]}: {failure[1]}"
    return True, "rolled back"
