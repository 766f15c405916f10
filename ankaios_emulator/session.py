"""One control interface of one workload: the agent's control-interface task.

Handshake (Hello -> ControlInterfaceAccepted or ConnectionClosed), authorisation of each
request ("Access denied" with the original id), and delivery of everything the emulated
server answers. Behaviour follows ``agent/src/control_interface/control_interface_task.rs``,
``input_pipe.rs`` and ``output_pipe.rs`` of Ankaios 1.0.1.
"""

from __future__ import annotations

import enum
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ankaios_sdk._protos import _ank_base as ank_base
from ankaios_sdk._protos import _control_api as control_api
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from .faults import Faults
from .transport import (
    INPUT_FIFO,
    OUTPUT_FIFO,
    FrameReader,
    FrameWriter,
    ReceiverGone,
    TransportClosed,
    encode_frame,
    make_fifos,
    remove_fifos,
)

log = logging.getLogger(__name__)

SUPPORTED_MAJOR = 1
INITIAL_HELLO_MISSING = "Initial Hello missing!"
DECODE_ERROR = "Could not decode protobuf data"
ACCESS_DENIED = "Access denied"


# semver::Version::parse (the semver crate, strict SemVer 2.0): numbers without leading
# zeros; pre-release identifiers of ASCII alphanumerics and "-", numeric ones without
# leading zeros; build identifiers likewise but leading zeros allowed; none empty.
_NUMBER = r"(0|[1-9][0-9]*)"
_PRE_IDENTIFIER = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_IDENTIFIER = r"[0-9A-Za-z-]+"
_SEMVER_RE = re.compile(
    rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
    rf"(?:-{_PRE_IDENTIFIER}(?:\.{_PRE_IDENTIFIER})*)?"
    rf"(?:\+{_BUILD_IDENTIFIER}(?:\.{_BUILD_IDENTIFIER})*)?"
)
_U64_MAX = 2**64 - 1


def parse_semver_major(version: str) -> int | None:
    """The major of ``version`` as ``semver::Version::parse`` reads it; None if it fails."""
    # fullmatch: no trailing newline, no surrounding spaces, ASCII digits only ([0-9]).
    match = _SEMVER_RE.fullmatch(version)
    if match is None:
        return None
    numbers = [int(group) for group in match.groups()]
    # The crate parses each number into a u64 and fails on overflow.
    if any(number > _U64_MAX for number in numbers):
        return None
    return numbers[0]


def version_error(version: str) -> str | None:
    """Ankaios 1.x's ``check_version_compatibility`` (common/src/helpers.rs): same major."""
    if parse_semver_major(version) == SUPPORTED_MAJOR:
        return None
    return f"Unsupported protocol version '{version}'. Currently supported '{SUPPORTED_MAJOR}'"


class Authorizing(Protocol):
    def authorize(self, request: Any) -> bool: ...


class RequestHandler(Protocol):
    """The emulated server behind the agent."""

    def handle_request(self, session: Session, request: Any) -> None: ...

    def session_reset(self, session: Session) -> None:
        """The session's client is gone: drop its event subscriptions and log campaigns."""


class SessionState(enum.Enum):
    WAITING_FOR_HELLO = "waiting for Hello"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass
class _Outgoing:
    due: float
    data: bytes
    summary: str
    on_undeliverable: Callable[[], None] | None = None


_STOP = object()


def _summary(message: Any) -> str:
    """The log line's text for a frame, made only when it will be logged."""
    return describe_from_ankaios(message) if log.isEnabledFor(logging.INFO) else ""


def describe_request(request: Any) -> str:
    kind = request.WhichOneof("RequestContent")
    rid = request.requestId
    if kind == "updateStateRequest":
        r = request.updateStateRequest
        return f"UpdateStateRequest id={rid} mask={list(r.updateMask)}"
    if kind == "completeStateRequest":
        r = request.completeStateRequest
        sub = " subscribeForEvents" if r.subscribeForEvents else ""
        return f"CompleteStateRequest id={rid} mask={list(r.fieldMask)}{sub}"
    if kind == "logsRequest":
        names = [
            f"{n.workloadName}.{n.id}.{n.agentName}" for n in request.logsRequest.workloadNames
        ]
        return f"LogsRequest id={rid} workloads={names}"
    if kind is None:
        return f"Request id={rid} without content"
    return f"{kind[0].upper()}{kind[1:]} id={rid}"


def describe_from_ankaios(message: Any) -> str:
    kind = message.WhichOneof("FromAnkaiosEnum")
    if kind == "connectionClosed":
        return f"ConnectionClosed reason={message.connectionClosed.reason!r}"
    if kind != "response":
        return "ControlInterfaceAccepted" if kind else "empty FromAnkaios"
    response = message.response
    content = response.WhichOneof("ResponseContent")
    rid = response.requestId
    if content == "error":
        return f"Error id={rid} message={response.error.message!r}"
    if content == "UpdateStateSuccess":
        r = response.UpdateStateSuccess
        return (
            f"UpdateStateSuccess id={rid} added={list(r.addedWorkloads)} "
            f"deleted={list(r.deletedWorkloads)}"
        )
    if content == "completeStateResponse":
        r = response.completeStateResponse
        if r.HasField("alteredFields"):
            a = r.alteredFields
            return (
                f"Event id={rid} added={list(a.addedFields)} updated={list(a.updatedFields)} "
                f"removed={list(a.removedFields)}"
            )
        return f"CompleteStateResponse id={rid} ({response.ByteSize()} bytes)"
    if content == "logEntriesResponse":
        return f"LogEntriesResponse id={rid} entries={len(response.logEntriesResponse.logEntries)}"
    return f"{content} id={rid}"


class Session:
    """Serves the FIFOs in ``directory`` for the workload ``workload_name``."""

    def __init__(
        self,
        directory: Path,
        workload_name: str,
        authorizer: Authorizing,
        *,
        handler: RequestHandler,
        faults: Faults,
        record: Callable[[Any], None],
        reaccept_on_reconnect: bool = True,
        pace_frames: bool = True,
        hold_until_hello: bool = False,
    ) -> None:
        self.directory = directory
        self.workload_name = workload_name
        self.authorizer = authorizer
        # The controlInterfaceAccess tree the authorizer came from (to detect changes).
        self.authorizer_source: dict[str, Any] | None = None
        self._handler = handler
        self._faults = faults
        self._record = record
        self._reaccept = reaccept_on_reconnect
        self._stop = threading.Event()
        self._state = SessionState.WAITING_FOR_HELLO
        self._state_lock = threading.Lock()
        self._state_changed = threading.Condition(self._state_lock)
        # Set while the FIFO ends are open; cleared by close_connection/restart_agent.
        self._open = threading.Event()
        self._reader: FrameReader | None = None
        self._writer = FrameWriter(directory / INPUT_FIFO, self._stop, pace=pace_frames)
        self._outgoing: queue.Queue[_Outgoing | object] = queue.Queue()
        # Frames put on _outgoing and not yet handled by the writer thread; while it is 0
        # a frame may be written straight from the thread that made it (see _enqueue).
        self._queued = 0
        self._queue_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._generation = 0
        # A control-interface task forwards the server's answers only after the
        # handshake; until then they wait in its channel (control_interface_task.rs).
        self._hold_until_hello = hold_until_hello
        self._client_left = False
        self._held: list[tuple[Any, Callable[[], None] | None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, open_writer: bool = False) -> None:
        """Create (or reuse) the FIFOs and serve them.

        ``open_writer`` opens ``input`` at once when a client reads it, as the agent's
        output pipe does, instead of on the first frame.
        """
        make_fifos(self.directory)
        self._reader = FrameReader(self.directory / OUTPUT_FIFO, self._stop)
        if open_writer:
            self._writer.try_open()
        self._open.set()
        for target, name in ((self._read_loop, "reader"), (self._write_loop, "writer")):
            thread = threading.Thread(
                target=target, name=f"ci-{self.workload_name}-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, remove: bool = True) -> None:
        self._stop.set()
        self._open.set()
        self._outgoing.put(_STOP)
        if self._reader is not None:
            self._reader.wake()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(1.0)
        if self._reader is not None:
            self._reader.dispose()
        self._writer.close()
        with self._state_changed:
            self._state = SessionState.CLOSED
            self._state_changed.notify_all()
        if remove:
            remove_fifos(self.directory)

    @property
    def state(self) -> SessionState:
        with self._state_lock:
            return self._state

    @property
    def connected(self) -> bool:
        return self.state is SessionState.CONNECTED

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._state_changed:
            while self._state is not SessionState.CONNECTED:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state_changed.wait(remaining)
            return True

    def _set_state(self, state: SessionState) -> None:
        with self._state_changed:
            self._state = state
            self._state_changed.notify_all()

    # -- faults and raw frames -------------------------------------------------------

    def close_connection(self, reason: str) -> None:
        """Send ConnectionClosed and stop serving, as the agent's task does on a bad Hello."""
        self._close_with(reason)

    def restart_agent(self, downtime: float = 0.2) -> None:
        """Close both FIFO ends, wait, reopen them and require a fresh Hello.

        ``downtime`` must let the client notice EOF on ``input``; the SDK then resends its
        Hello (once a second while nobody reads ``output``).
        """
        log.info("[%s] agent restart: closing the control interface", self.workload_name)
        self._shut_ends()
        self._handler.session_reset(self)
        if self._stop.wait(downtime):
            return
        self._reopen()

    def _shut_ends(self) -> None:
        with self._state_changed:
            self._generation += 1
            self._state = SessionState.CLOSED
            self._state_changed.notify_all()
        self._open.clear()
        self._drain_outgoing()
        # Reader first: a client that notices the missing writer resends Hello at once
        # and must get EPIPE (then it waits a second) rather than a busy loop.
        if self._reader is not None:
            self._reader.close()
        self._writer.close()

    def _reopen(self) -> None:
        self._set_state(SessionState.WAITING_FOR_HELLO)
        # Writer first so the client's reader is not left at EOF (which makes the SDK
        # spin sending Hellos) once it can write again.
        self._writer.try_open()
        if self._reader is not None:
            self._reader.open()
        self._open.set()
        log.info("[%s] control interface reopened, waiting for Hello", self.workload_name)

    def send_frame(self, message: Any) -> None:
        """Push any ``FromAnkaios`` now, bypassing faults and the handshake state."""
        self._enqueue(message.SerializeToString(), _summary(message), delay=0.0)

    def send_garbage(self, data: bytes) -> None:
        """Write raw bytes (no length prefix) into ``input``."""
        self._put(_Outgoing(time.monotonic(), data, f"{len(data)} garbage bytes"))

    # -- outgoing ----------------------------------------------------------------------

    def send_response(
        self, response: Any, on_undeliverable: Callable[[], None] | None = None
    ) -> None:
        """Answer through the fault switches (delay/drop)."""
        with self._state_lock:
            if self._hold_until_hello and self._state is SessionState.WAITING_FOR_HELLO:
                self._held.append((response, on_undeliverable))
                return
        message = control_api.FromAnkaios(response=response)
        delay, drop = self._faults.snapshot()
        summary = _summary(message)
        if drop:
            log.info("[%s] -> dropped (fault): %s", self.workload_name, summary)
            return
        self._enqueue(message.SerializeToString(), summary, delay, on_undeliverable)

    def _enqueue(
        self,
        payload: bytes,
        summary: str,
        delay: float,
        on_undeliverable: Callable[[], None] | None = None,
    ) -> None:
        item = _Outgoing(time.monotonic() + delay, encode_frame(payload), summary, on_undeliverable)
        if delay > 0 or not self._open.is_set():
            self._put(item)
            return
        with self._queue_lock:
            # Nothing ahead of it: write it now, from this thread, when the pipe takes it
            # whole without waiting. Handing it to the writer thread instead costs a
            # thread switch per answer, as much as the answer itself (bench/results.md).
            if self._queued == 0 and self._writer.write_now(item.data):
                log.info("[%s] -> %s", self.workload_name, item.summary)
                return
            self._queued += 1
            self._outgoing.put(item)

    def _put(self, item: _Outgoing) -> None:
        with self._queue_lock:
            self._queued += 1
            self._outgoing.put(item)

    def _drain_outgoing(self) -> None:
        try:
            while True:
                item = self._outgoing.get_nowait()
                if item is _STOP:
                    self._outgoing.put(_STOP)
                    return
                self._handled()
        except queue.Empty:
            return

    def _handled(self) -> None:
        with self._queue_lock:
            self._queued -= 1

    def _write_loop(self) -> None:
        while True:
            item = self._outgoing.get()
            if item is _STOP or self._stop.is_set():
                return
            assert isinstance(item, _Outgoing)
            try:
                if not self._write_item(item):
                    return
            finally:
                self._handled()

    def _write_item(self, item: _Outgoing) -> bool:
        """Writes one queued frame; False when the session is stopping."""
        if not item.data:
            # A marker: everything queued before it has been handled.
            if item.on_undeliverable is not None:
                item.on_undeliverable()
            return True
        wait = item.due - time.monotonic()
        if wait > 0 and self._stop.wait(wait):
            return False
        if not self._open.is_set():
            log.info("[%s] -> not sent (interface closed): %s", self.workload_name, item.summary)
            return True
        try:
            self._writer.write(item.data)
        except TransportClosed:
            return not self._stop.is_set()
        except ReceiverGone:
            log.info("[%s] -> undeliverable (no reader): %s", self.workload_name, item.summary)
            if item.on_undeliverable is not None:
                item.on_undeliverable()
            return True
        except OSError as exc:
            log.warning("[%s] -> write failed (%s): %s", self.workload_name, exc, item.summary)
            return True
        log.info("[%s] -> %s", self.workload_name, item.summary)
        return True

    def _send_handshake(self, message: Any) -> None:
        self._enqueue(message.SerializeToString(), _summary(message), delay=0.0)

    def _close_with(self, reason: str) -> None:
        message = control_api.FromAnkaios(
            connectionClosed=control_api.ConnectionClosed(reason=reason)
        )
        log.warning("[%s] closing the connection: %s", self.workload_name, reason)
        done = threading.Event()
        self._put(
            _Outgoing(
                time.monotonic(),
                encode_frame(message.SerializeToString()),
                describe_from_ankaios(message),
            )
        )
        self._put(_Outgoing(time.monotonic(), b"", "", done.set))
        with self._state_changed:
            self._generation += 1
            self._state = SessionState.CLOSED
            self._held.clear()
            self._state_changed.notify_all()
        self._handler.session_reset(self)
        # Like the ended agent task, drop both ends once the reason is out.
        threading.Thread(
            target=self._close_after,
            args=(done,),
            name=f"ci-{self.workload_name}-close",
            daemon=True,
        ).start()

    def _close_after(self, done: threading.Event) -> None:
        done.wait(2.0)
        if self.state is SessionState.CLOSED and not self._stop.is_set():
            self._open.clear()
            if self._reader is not None:
                self._reader.close()
            self._writer.close()

    # -- incoming ----------------------------------------------------------------------

    def _read_loop(self) -> None:
        assert self._reader is not None
        while not self._stop.is_set():
            if not self._open.wait(0.1):
                continue
            try:
                payload = self._reader.read_frame()
            except TransportClosed:
                # Closed by restart_agent/close_connection: wait for a reopen or stop.
                while not self._stop.is_set() and (
                    not self._reader.is_open or not self._open.is_set()
                ):
                    time.sleep(0.02)
                continue
            if payload is None:
                self._on_workload_gone()
                continue
            self._on_frame(payload)

    def _on_workload_gone(self) -> None:
        # Like the agent's input pipe: reopen and keep the session (handshake,
        # subscriptions, log campaigns); clients may open and close output per message.
        # The writer on input stays open too; it is dropped only on a broken pipe.
        log.info("[%s] workload closed its end of output; kept open", self.workload_name)
        with self._state_lock:
            if self._state is SessionState.CONNECTED:
                self._client_left = True

    @property
    def client_left(self) -> bool:
        """True from the client closing ``output`` until its next frame."""
        with self._state_lock:
            return self._client_left

    def _on_frame(self, payload: bytes) -> None:
        state = self.state
        if state is SessionState.CLOSED:
            return
        try:
            message = control_api.ToAnkaios()
            message.ParseFromString(payload)
        except DecodeError:
            if state is SessionState.WAITING_FOR_HELLO:
                self._close_with(DECODE_ERROR)
            else:
                log.warning("[%s] <- could not decode a frame; ignored", self.workload_name)
            return
        self._record(message)
        kind = message.WhichOneof("ToAnkaiosEnum")
        if state is SessionState.WAITING_FOR_HELLO:
            self._handshake(message, kind)
            return
        with self._state_lock:
            returning, self._client_left = self._client_left, False
        if kind == "hello" and returning and self._reaccept:
            # A restarted workload (it left, and its first frame is a Hello): accepted
            # anew, which Ankaios 1.0.1 does not do (see docs/emulator.md, 3.3).
            log.info("[%s] <- Hello from a returning client", self.workload_name)
            self._handler.session_reset(self)
            self._handshake(message, kind)
            return
        if kind == "hello":
            version = message.hello.protocolVersion
            error = version_error(version)
            # Ankaios 1.0.1 warns about every one (control_interface_task.rs). The fleet
            # connector says Hello before a request that follows a second of silence, to
            # survive a server restart, so a quiet car would warn every agent interval:
            # logged at debug here unless the Hello ends the connection
            # (docs/emulator-semantics.md, section 7).
            log.log(
                logging.WARNING if error is not None else logging.DEBUG,
                "[%s] <- received yet another Hello with protocol version '%s'",
                self.workload_name,
                version,
            )
            if error is not None:
                self._close_with(error)
            return
        if kind != "request":
            log.warning("[%s] <- ToAnkaios without content; ignored", self.workload_name)
            return
        self._on_request(message.request)

    def _handshake(self, message: Any, kind: str | None) -> None:
        if kind != "hello":
            self._close_with(INITIAL_HELLO_MISSING)
            return
        version = message.hello.protocolVersion
        error = version_error(version)
        if error is not None:
            self._close_with(error)
            return
        log.info("[%s] <- Hello protocolVersion=%s", self.workload_name, version)
        self._send_handshake(
            control_api.FromAnkaios(controlInterfaceAccepted=control_api.ControlInterfaceAccepted())
        )
        self._set_state(SessionState.CONNECTED)
        with self._state_lock:
            self._client_left = False
            held, self._held = self._held, []
        for response, on_undeliverable in held:
            self.send_response(response, on_undeliverable)

    def _on_request(self, request: Any) -> None:
        log.info("[%s] <- %s", self.workload_name, describe_request(request))
        # The agent's authorizer also denies requests without content, so the server's
        # "does not contain any content" error never reaches a workload.
        if request.WhichOneof("RequestContent") is None or not self.authorizer.authorize(request):
            self.send_response(
                ank_base.Response(
                    requestId=request.requestId, error=ank_base.Error(message=ACCESS_DENIED)
                )
            )
            return
        try:
            self._handler.handle_request(self, request)
        except Exception:
            # A bug in the emulator must not kill the control interface.
            log.exception("[%s] request handling failed", self.workload_name)
