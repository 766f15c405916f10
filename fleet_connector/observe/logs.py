"""Logs on demand: ``<base>/logs/req[/<id>]`` streams workloads' output lines to the cloud.

A request names workloads; the connector asks Ankaios for the logs of each one's current
instance (a logs campaign on the control interface) and publishes what arrives in ordered
batches ``{"seq": n, "lines": [{"workload", "instance_id", "line"}]}`` on the reply topic,
then one end message ``{"seq": n, "end": "done" | "limit" | "cancelled" | "error"}``.
``<base>/logs/cancel[/<id>]`` ends a stream early.

Memory stays bounded whatever a workload prints: lines wait in a buffer of a fixed size and
leave at most at the configured rate; what does not fit is counted (``"dropped"`` in the next
batch), never kept. A stream ends after the configured number of lines (``limit``) or its
follow time (``done``). Entries arrive on the control interface's reading thread and are only
buffered there; one thread of this module sends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ankaios_sdk import Response, ResponseType
from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.client import ACCESS_DENIED
from fleet_connector.ankaios.control_interface import ControlInterface, Unavailable, proto_of
from fleet_connector.config import LogLimits
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.mqtt.topics import Operation, Topics
from fleet_connector.observe.live_model import Key, LiveModel
from fleet_connector.observe.log_tail import cancel_campaign, instance_name, log_rule_message
from fleet_connector.observe.workload_states import WorkloadStates
from fleet_connector.requests.handler import Request

log = logging.getLogger(__name__)

MAX_WORKLOADS = 100
# A stream that hears nothing from Ankaios for this many request timeouts is given up.
IDLE_FACTOR = 2
BATCH_LINES = 500
_TICK = 0.1
_FIELDS = frozenset({"workloads", "tail", "since", "until", "follow"})


@dataclass(frozen=True)
class LogQuery:
    workloads: list[str]
    tail: int
    since: str | None
    until: str | None
    follow: float


def parse_log_request(payload: bytes, limits: LogLimits) -> LogQuery:
    def invalid(message: str) -> RequestError:
        return RequestError(ErrorCode.INVALID_REQUEST, message)

    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise invalid(
            'a logs request is a JSON object such as {"workloads": ["nginx"], "tail": 50}'
        )
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise invalid(f"unknown keys {unknown}; allowed: {sorted(_FIELDS)}")
    workloads = data.get("workloads")
    if (
        not isinstance(workloads, list)
        or not workloads
        or not all(isinstance(w, str) and w for w in workloads)
    ):
        raise invalid('"workloads" must be a non-empty list of workload names')
    if len(workloads) > MAX_WORKLOADS:
        raise invalid(f"at most {MAX_WORKLOADS} workloads per logs request")
    tail = data.get("tail", -1)
    if "tail" in data and (
        isinstance(tail, bool) or not isinstance(tail, int) or not 0 <= tail <= limits.max_lines
    ):
        raise invalid(f'"tail" must be a whole number from 0 to {limits.max_lines}')
    times: dict[str, str | None] = {}
    for key in ("since", "until"):
        value = data.get(key)
        if value is not None:
            try:
                datetime.fromisoformat(str(value))
            except ValueError:
                raise invalid(
                    f'"{key}" must be an RFC 3339 time such as 2026-12-02T10:00:00Z'
                ) from None
            if not isinstance(value, str):
                raise invalid(f'"{key}" must be an RFC 3339 time string')
        times[key] = value
    follow = data.get("follow", 0)
    if isinstance(follow, bool) or not isinstance(follow, int | float):
        raise invalid(f'"follow" is a number of seconds from 0 to {limits.max_follow:g}')
    if not 0 <= follow <= limits.max_follow:
        raise invalid(
            f'"follow" of {follow:g} s is beyond the limit of {limits.max_follow:g} s '
            "(LOG_MAX_FOLLOW)"
        )
    return LogQuery(list(dict.fromkeys(workloads)), tail, times["since"], times["until"], follow)


@dataclass
class _Stream:
    request: Request
    instances: dict[str, Key]  # workload name -> instance
    limits: LogLimits
    follow_until: float | None
    campaign: str | None = None
    seq: int = 0
    sent: int = 0
    # Lines waiting to be sent, with their total size; bounded by ``capacity``.
    waiting: deque[tuple[str, str, str]] = field(default_factory=deque)
    waiting_bytes: int = 0
    dropped: int = 0
    tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)
    accepted: int | None = None
    stopped: int = 0
    first: Response | None = None
    last_activity: float = field(default_factory=time.monotonic)
    end: str | None = None
    message: str | None = None

    @property
    def capacity(self) -> int:
        return max(2 * self.limits.bytes_per_second, 64 * 1024)


class LogStreams:
    """The log streams of one connector."""

    def __init__(
        self,
        control_interface: ControlInterface,
        topics: Topics,
        live: WorkloadStates,
        *,
        answer: Any,
        ack: Any,
        limits: LogLimits,
        request_timeout: float,
    ) -> None:
        """``answer(request, payload)`` publishes for a request; ``ack(request)`` ends its
        delivery."""
        self._ci = control_interface
        self._topics = topics
        self._live = live
        self._answer = answer
        self._ack = ack
        self.limits = limits
        self._timeout = request_timeout
        self._idle = IDLE_FACTOR * request_timeout
        self._lock = threading.Lock()
        self._streams: list[_Stream] = []
        self._inbox: queue.Queue[Request | tuple[str, str | None, bytes | None] | None] = (
            queue.Queue(1000)
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- any thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-streams", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(2)
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.end = stream.end or "cancelled"
            self._finish(stream)

    def submit(self, request: Request) -> None:
        """A logs request off MQTT (paho's thread): handled on this module's thread."""
        try:
            self._inbox.put_nowait(request)
        except queue.Full:
            error = RequestError(ErrorCode.BUSY, "too many logs requests waiting")
            self._refuse(request, error)
            return
        self._wake.set()

    def cancel(self, request_id: str | None, correlation: bytes | None) -> None:
        """A cancel off MQTT: ends the stream with this id (or correlation data)."""
        try:
            self._inbox.put_nowait(("cancel", request_id, correlation))
        except queue.Full:
            return
        self._wake.set()

    def connection_changed(self, connected: bool) -> None:
        if not connected:
            with self._lock:
                for stream in self._streams:
                    if stream.end is None:
                        stream.end = "error"
                        stream.message = "the connection to the control interface was lost"
            self._wake.set()

    def _route(self, stream: _Stream, response: Response) -> None:
        # On the control interface's reading thread: buffer, never wait.
        proto = proto_of(response)
        with self._lock:
            stream.last_activity = time.monotonic()
            if stream.first is None:
                stream.first = response
                if response.content_type == ResponseType.LOGS_REQUEST_ACCEPTED:
                    stream.accepted = len(proto.logsRequestAccepted.workloadNames)
            elif response.content_type == ResponseType.LOGS_ENTRY:
                for entry in proto.logEntriesResponse.logEntries:
                    size = len(entry.message)
                    if stream.waiting_bytes + size > stream.capacity:
                        stream.dropped += 1
                        continue
                    name = entry.workloadName
                    stream.waiting.append((name.workloadName, name.id, entry.message))
                    stream.waiting_bytes += size
            elif response.content_type == ResponseType.LOGS_STOP_RESPONSE:
                stream.stopped += 1
            elif response.content_type == ResponseType.ERROR and stream.end is None:
                stream.end = "error"
                stream.message = str(response.content)
        self._wake.set()

    # -- this module's thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            # Open streams are paced and time out; without any, only a request wakes us
            # (a thousand idle cars in one host must not tick ten times a second each).
            with self._lock:
                idle = not self._streams
            self._wake.wait(None if idle else _TICK)
            self._wake.clear()
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                try:
                    if isinstance(item, Request):
                        self._open(item)
                    elif item is not None:
                        self._cancel(item[1], item[2])
                except Exception as e:
                    log.exception("log streams: unexpected failure")
                    if isinstance(item, Request):
                        # A request taken in is answered, a defect included.
                        with contextlib.suppress(Exception):
                            error = f"{type(e).__name__}: {e}"
                            self._refuse(item, RequestError(ErrorCode.INTERNAL, error))
            try:
                self._pump()
            except Exception:
                log.exception("log streams: unexpected failure while sending")

    def _refuse(self, request: Request, error: RequestError) -> None:
        self._answer(request, error.to_json())
        self._ack(request)
        log.info(
            "logs request id=%s topic=%s outcome=%s%s",
            request.request_id,
            request.topic,
            error.code,
            request.log_trace,
        )

    def _open(self, request: Request) -> None:
        try:
            query = parse_log_request(request.payload, self.limits)
            with self._lock:
                busy = any(
                    s.request.reply_topic == request.reply_topic
                    and s.request.correlation_data == request.correlation_data
                    for s in self._streams
                )
                if busy and request.has_topic_id:
                    self._ack(request)  # a redelivery of a stream that is running
                    return
                if len(self._streams) >= self.limits.max_streams:
                    raise RequestError(
                        ErrorCode.BUSY,
                        f"{self.limits.max_streams} log streams are open (LOG_MAX_STREAMS); "
                        "try again later",
                    )
            instances = self._instances(query.workloads)
        except RequestError as e:
            self._refuse(request, e)
            return
        stream = _Stream(
            dataclasses.replace(request, payload=b""),
            instances,
            self.limits,
            time.monotonic() + query.follow if query.follow else None,
        )
        stream.tokens = float(self.limits.bytes_per_second)
        logs_request = _ank_base.LogsRequest(
            workloadNames=[instance_name(k) for k in instances.values()],
            follow=bool(query.follow),
            tail=query.tail,
        )
        if query.since is not None:
            logs_request.since = query.since
        if query.until is not None:
            logs_request.until = query.until
        try:
            stream.campaign = self._ci.open_stream(
                _ank_base.Request(logsRequest=logs_request),
                lambda response: self._route(stream, response),
                self._timeout,
            )
        except Unavailable as e:
            self._refuse(request, RequestError(ErrorCode.UNAVAILABLE, str(e)))
            return
        stream.refilled = time.monotonic()
        with self._lock:
            self._streams.append(stream)
        self._ack(request)

    def _instances(self, workloads: list[str]) -> dict[str, Key]:
        """Each workload's current instance, from the live model (on its own thread)."""
        from concurrent.futures import Future  # noqa: PLC0415 - on a log request only

        found: Future[dict[str, Key]] = Future()

        def look(model: LiveModel) -> None:
            current = {}
            for name in workloads:
                state = model.current(name)
                if state is not None:
                    current[name] = (state.agent, state.workload, state.instance_id)
            found.set_result(current)

        if not self._live.synced.is_set():
            raise RequestError(
                ErrorCode.UNAVAILABLE, "the workload states of Ankaios are not known yet"
            )
        self._live.call_soon(lambda: look(self._live.model))
        try:
            current = found.result(self._timeout)
        except TimeoutError:
            raise RequestError(ErrorCode.TIMEOUT, "the workload states did not answer") from None
        unknown = [name for name in workloads if name not in current]
        if unknown:
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"unknown workloads: {', '.join(unknown)}"
            )
        return current

    def _cancel(self, request_id: str | None, correlation: bytes | None) -> None:
        with self._lock:
            matching = [
                s
                for s in self._streams
                if (correlation is not None and s.request.correlation_data == correlation)
                # Without correlation data a cancel names a stream by its topic id alone, so
                # it must not reach streams that correlation data identifies.
                or (
                    correlation is None
                    and s.request.correlation_data is None
                    and (s.request.request_id if s.request.has_topic_id else None) == request_id
                )
            ]
            for stream in matching:
                stream.end = stream.end or "cancelled"
        if not matching:
            # Answered where the stream's batches would have gone.
            error = RequestError(
                ErrorCode.INVALID_REQUEST,
                f"no open log stream {request_id or '(without id)'} to cancel",
            )
            self._answer(
                Request(
                    Operation.LOGS,
                    b"",
                    topic="",
                    reply_topic=self._topics.response(Operation.LOGS, request_id),
                    correlation_data=correlation,
                ),
                error.to_json(),
            )
        self._wake.set()

    def _pump(self) -> None:
        now = time.monotonic()
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            self._pump_one(stream, now)
        with self._lock:
            # A full batch left lines behind that the rate allows now: no pause before them.
            if any(s.waiting and s.tokens >= len(s.waiting[0][2]) for s in self._streams):
                self._wake.set()

    def _pump_one(self, stream: _Stream, now: float) -> None:
        silent = now - stream.last_activity > self._idle
        with self._lock:
            first = stream.first
            refused = (
                first is not None and first.content_type == ResponseType.ERROR and not stream.seq
            )
            unanswered = first is None and silent
            if refused or unanswered:
                self._streams.remove(stream)
            elif silent and stream.follow_until is None and stream.end is None:
                # Ankaios streams each instance until its LogsStopResponse; one that never
                # comes (an agent that went away) must not keep the stream open for ever.
                stream.end = "error"
                stream.message = f"Ankaios sent nothing more for {self._idle:g} s"
        if unanswered:
            self._close_campaign(stream, cancel=True)
            error = RequestError(
                ErrorCode.TIMEOUT, f"Ankaios did not answer within {self._idle:g} s"
            )
            self._answer(stream.request, error.to_json())
            return
        if first is not None and refused:
            # Ankaios refused the campaign: the usual error reply instead of batches.
            self._close_campaign(stream, cancel=False)
            text = str(first.content)
            if text == ACCESS_DENIED:
                error = RequestError(
                    ErrorCode.ACCESS_DENIED, log_rule_message(list(stream.instances))
                )
            else:
                error = RequestError(ErrorCode.REJECTED, text)
            self._answer(stream.request, error.to_json())
            log.info(
                "logs request id=%s topic=%s outcome=%s%s",
                stream.request.request_id,
                stream.request.topic,
                error.code,
                stream.request.log_trace,
            )
            return
        message: dict[str, Any] | None = None
        with self._lock:
            limits = stream.limits
            stream.tokens = min(
                float(limits.bytes_per_second),
                stream.tokens + (now - stream.refilled) * limits.bytes_per_second,
            )
            stream.refilled = now
            batch: list[dict[str, str]] = []
            room = limits.max_lines - stream.sent
            while stream.waiting and len(batch) < min(BATCH_LINES, room):
                workload, instance_id, line = stream.waiting[0]
                if len(line) > stream.tokens and batch:
                    break
                if len(line) > stream.tokens and stream.tokens < limits.bytes_per_second:
                    break  # wait for a full bucket; a longer line still goes alone
                stream.waiting.popleft()
                stream.waiting_bytes -= len(line)
                stream.tokens -= len(line)
                batch.append({"workload": workload, "instance_id": instance_id, "line": line})
            dropped, stream.dropped = (stream.dropped, 0) if batch else (0, stream.dropped)
            stream.sent += len(batch)
            if stream.end is None:
                if stream.sent >= limits.max_lines:
                    stream.end = "limit"
                elif (stream.follow_until is not None and now >= stream.follow_until) or (
                    stream.accepted is not None
                    and stream.stopped >= stream.accepted
                    and not stream.waiting
                ):
                    stream.end = "done"
            finished = stream.end is not None and (
                not stream.waiting or stream.end in ("limit", "cancelled", "error")
            )
            if batch:
                message = {"seq": stream.seq, "lines": batch}
                if dropped:
                    message["dropped"] = dropped
                stream.seq += 1
            if finished:
                self._streams.remove(stream)
        if message is not None:
            self._answer(stream.request, json.dumps(message))
        if finished:
            self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        self._close_campaign(stream, cancel=stream.end != "done" or stream.follow_until is not None)
        end: dict[str, Any] = {"seq": stream.seq, "end": stream.end}
        if stream.message:
            end["message"] = stream.message
        self._answer(stream.request, json.dumps(end))
        log.info(
            "logs request id=%s topic=%s outcome=%s lines=%d%s",
            stream.request.request_id,
            stream.request.topic,
            stream.end,
            stream.sent,
            stream.request.log_trace,
        )

    def _close_campaign(self, stream: _Stream, *, cancel: bool) -> None:
        if stream.campaign is None:
            return
        self._ci.close_stream(stream.campaign)
        if cancel:
            cancel_campaign(self._ci, stream.campaign, self._timeout)
