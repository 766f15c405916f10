"""The connection to the Ankaios agent: two FIFOs, length-prefixed protobuf frames.

The SDK's own ``ControlInterface`` (1.0.1) cannot be used for a long-running daemon:

* its reader takes a momentarily empty pipe in the middle of a large frame for the end of
  the frame and then loses sync with the stream for good;
* after the agent goes away it sends Hellos in a busy loop while the input FIFO has no writer;
* one shared response queue drops responses of concurrent or timed-out requests.

This module keeps the SDK's wire format and message types (its generated protobuf modules and
its ``Response`` parser) but owns the pipes: frames are reassembled from whatever the pipe
delivers, lost connections are re-established with backoff, and each request waits for the
answer with its own id, so a late answer is dropped instead of answering the next request.

A thread of its own opens the FIFOs and says Hello (again after the agent went away); once
connected, the input FIFO is read by the loop (fleet_connector/loop.py), so a requester in
the loop's thread gets its answer without a thread hand-off.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ankaios_sdk import Response, ResponseType
from ankaios_sdk._protos import _ank_base, _control_api
from ankaios_sdk.utils import ANKAIOS_VERSION

from fleet_connector.loop import Interrupted, Loop

log = logging.getLogger(__name__)

# Nothing Ankaios sends comes close; a larger length prefix means the stream is corrupt.
MAX_FRAME_SIZE = 256 * 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0
# How long to wait for ControlInterfaceAccepted before probing (see _handshake).
PROBE_AFTER = 0.5
_POLL_INTERVAL = 0.2
# Slices in which a writer in the loop's thread looks whether a full pipe has room again.
_FULL_PIPE_WAIT = 0.01
# Reconnect backoff ceiling before the first connection (after it: max_backoff).
BOOT_MAX_BACKOFF = 0.5
# Silence after which a request is preceded by a Hello (see _hello_if_idle).
HELLO_AFTER_IDLE = 1.0


def proto_of(response: Response) -> Any:
    """The ``ank_base.Response`` the SDK parsed (it keeps it), for fields it does not expose
    (event paths, instance names of log entries) without parsing the frame twice."""
    return getattr(response, "_response", None)


class Unavailable(Exception):
    """The control interface is not connected; the request was not sent or its answer is lost."""


class _ConnectionLost(Exception):
    pass


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _frame(payload: bytes) -> bytes:
    return encode_varint(len(payload)) + payload


def decode_frames(buffer: bytearray) -> list[bytes]:
    """Takes every complete frame off the front of ``buffer``; a partial frame stays."""
    frames: list[bytes] = []
    while buffer:
        length = 0
        shift = 0
        pos = 0
        while True:
            if pos >= len(buffer):
                return frames  # length prefix not complete yet
            byte = buffer[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise _ConnectionLost("corrupt frame length")
        if length > MAX_FRAME_SIZE:
            raise _ConnectionLost(f"frame of {length} bytes exceeds the limit")
        if len(buffer) < pos + length:
            return frames
        frames.append(bytes(buffer[pos : pos + length]))
        del buffer[: pos + length]
    return frames


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    response: Response | None = None
    lost: str | None = None


class ControlInterface:
    """A self-healing connection to the control interface at ``path``.

    ``start()`` returns at once; the connection is made, and re-made after the agent goes
    away, by a background thread. ``request()`` may be called from any thread. What comes
    from Ankaios is read by ``loop``; without one, the control interface runs a loop of its
    own on a thread of its own.
    """

    def __init__(
        self,
        path: Path,
        *,
        loop: Loop | None = None,
        on_connection_change: Callable[[bool], None] | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self.path = path
        self._own_loop = loop is None
        self._loop = loop or Loop()
        self._loop_thread: threading.Thread | None = None
        self._ever_connected = threading.Event()
        # Set once waiting for the first connection makes no sense any more: Ankaios
        # accepted us, the wait timed out once, or we are stopping.
        self._boot_wait_over = threading.Event()
        self._on_connection_change = on_connection_change
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._write_lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        # Request ids of campaigns (event subscriptions, log streams): every response with
        # such an id goes to its route, in the order Ankaios sent it. Routes must not block:
        # they run on the reading thread.
        self._streams: dict[str, Callable[[Response], None]] = {}
        self._pending_lock = threading.Lock()
        self._out_fd: int | None = None
        # The input FIFO of the connection being served and what was read of it; the
        # handshake reads it on the connection thread, the loop reads it after that.
        self._read_lock = threading.Lock()
        self._in_fd: int | None = None
        self._buffer = bytearray()
        self._broken: str | None = None  # why the served connection ended
        self._ended = threading.Event()  # it ended, or we are stopping
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self._last_heard = time.monotonic()

    # -- public -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._own_loop:
            self._loop_thread = threading.Thread(
                target=self._run_own_loop, name="control-interface-loop", daemon=True
            )
            self._loop_thread.start()
        self._thread = threading.Thread(target=self._run, name="control-interface", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._ended.set()
        self.end_boot_wait()
        if self._thread:
            self._thread.join(timeout=2)
        if self._loop_thread:
            self._loop.interrupt()
            self._loop_thread.join(timeout=2)
            self._loop.close()

    def _run_own_loop(self) -> None:
        self._loop.own()
        with contextlib.suppress(Interrupted):
            self._loop.wait(self._stop.is_set, None)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_first_connection(self, timeout: float) -> None:
        """Until Ankaios has accepted us once, waits up to ``timeout`` for that.

        On boot the broker hands over the requests it kept while the car was offline
        before the handshake with Ankaios is done; they wait for it instead of failing.
        Once the wait has timed out (say, a wrong path) nothing waits any more, and later
        gaps (an agent restart) fail at once: the sender learns and can retry.
        """
        over = self._boot_wait_over
        if not self._loop.wait(over.is_set, timeout, over):
            over.set()

    def end_boot_wait(self) -> None:
        """Lets :meth:`wait_first_connection` return now, e.g. because we are stopping."""
        self._boot_wait_over.set()
        self._loop.wake()

    def request(self, request: _ank_base.Request, timeout: float) -> Response:
        """Sends one request and returns Ankaios's answer to it.

        Raises :class:`Unavailable` when not connected or when the connection is lost while
        waiting, and :class:`TimeoutError` when no answer comes within ``timeout``.
        """
        answer = self.requests([request], timeout)[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def requests(
        self, requests: list[_ank_base.Request], timeout: float
    ) -> list[Response | Exception]:
        """Sends several requests at once, then collects each answer (or its exception).

        Ankaios answers requests of one connection in order, so reads can be pipelined;
        each request still waits at most ``timeout`` from when it was sent.
        """
        pendings: list[tuple[str, _Pending]] = []
        for request in requests:
            if not request.requestId:
                request.requestId = str(uuid.uuid4())
            pending = _Pending()
            with self._pending_lock:
                self._pending[request.requestId] = pending
            pendings.append((request.requestId, pending))
        failure: Unavailable | None = None
        if not self._connected.is_set():
            failure = Unavailable(self._unavailable_reason())
        else:
            # One write for the whole batch: the agent is woken once, not once per request
            # (a write that wakes another process costs more than the request's own work).
            frames = self._hello_if_idle() + b"".join(
                _frame(_control_api.ToAnkaios(request=request).SerializeToString())
                for request in requests
            )
            try:
                self._write_raw(frames, timeout)
            except (OSError, _ConnectionLost) as e:
                failure = Unavailable(f"could not write to the control interface: {e}")
        deadline = time.monotonic() + timeout
        sent: list[tuple[str, _Pending, float] | Exception] = []
        for request_id, pending in pendings:
            if failure is not None:
                self._forget(request_id)
                sent.append(failure)
            else:
                sent.append((request_id, pending, deadline))
        results: list[Response | Exception] = []
        for item in sent:
            if isinstance(item, Exception):
                results.append(item)
                continue
            request_id, pending, deadline = item
            try:
                done = pending.done
                if not self._loop.wait(done.is_set, deadline - time.monotonic(), done):
                    results.append(TimeoutError(f"Ankaios did not answer within {timeout:g} s"))
                elif pending.response is None:
                    lost = pending.lost or "connection to the control interface lost"
                    results.append(Unavailable(lost))
                else:
                    results.append(pending.response)
            finally:
                self._forget(request_id)
        return results

    def open_stream(
        self, request: _ank_base.Request, route: Callable[[Response], None], timeout: float
    ) -> str:
        """Sends a request that starts a campaign; all its responses, first included, go to
        ``route``. Returns the request id; raises :class:`Unavailable` when not sent."""
        if not request.requestId:
            request.requestId = str(uuid.uuid4())
        request_id: str = request.requestId
        with self._pending_lock:
            self._streams[request_id] = route
        try:
            self.send(request, timeout)
        except Unavailable:
            self.close_stream(request_id)
            raise
        return request_id

    def close_stream(self, request_id: str) -> None:
        """Responses with this id are dropped from now on."""
        with self._pending_lock:
            self._streams.pop(request_id, None)

    def send(self, request: _ank_base.Request, timeout: float) -> None:
        """Sends a request whose answer nobody waits for (e.g. a campaign's cancel, whose
        answer comes with the campaign's id to its route)."""
        if not self._connected.is_set():
            raise Unavailable(self._unavailable_reason())
        frame = _frame(_control_api.ToAnkaios(request=request).SerializeToString())
        try:
            self._write_raw(self._hello_if_idle() + frame, timeout)
        except (OSError, _ConnectionLost) as e:
            raise Unavailable(f"could not write to the control interface: {e}") from None

    def _readable(self) -> None:
        """The loop saw the input FIFO ready: read what it holds and dispatch each frame."""
        with self._read_lock:
            fd = self._in_fd
            if fd is None or self._broken is not None:
                return
            try:
                self._read_available(fd)
            except _ConnectionLost as e:
                self._connection_broken(str(e))
            except OSError as e:
                self._connection_broken(f"reading the control interface failed: {e}")
            except Exception as e:
                # A defect must not leave the car cut off from Ankaios: connect again.
                log.exception("control interface failed unexpectedly; connecting again")
                self._connection_broken(f"{type(e).__name__}: {e}")

    def _connection_broken(self, reason: str) -> None:
        """The served connection ended: fail what waits, and tell the connection thread."""
        self._broken = reason
        if self._in_fd is not None:
            self._loop.remove_reader(self._in_fd)  # a closed pipe stays readable
        with self._pending_lock:
            for waiting in self._pending.values():
                waiting.lost = reason
                waiting.done.set()
        self._ended.set()

    def _hello_if_idle(self) -> bytes:
        """After a silence, a Hello frame to write before the next request (in the same
        write), else nothing.

        When the Ankaios server restarts (1.0.1), the agent gives a running workload a new
        control-interface instance on the descriptors it holds: no end of file, but the new
        instance closes the connection for good unless its first frame is a Hello, and the
        FIFO files are gone, so there is no reconnecting. The server is away at least the
        agent's 1 s reconnect interval, so a Hello before any request that follows a
        second of silence reaches a new instance first; it answers ControlInterfaceAccepted
        (see _dispatch). An unchanged instance only logs the Hello as "yet another Hello"
        (a warning in the agent's log), the price of surviving a server restart.
        """
        if time.monotonic() - self._last_heard < HELLO_AFTER_IDLE:
            return b""
        hello = _control_api.ToAnkaios(hello=_control_api.Hello(protocolVersion=ANKAIOS_VERSION))
        return _frame(hello.SerializeToString())

    def _forget(self, request_id: str) -> None:
        with self._pending_lock:
            self._pending.pop(request_id, None)

    # -- connection thread --------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            in_fd: int | None = None
            try:
                in_fd = self._open()
                buffer = bytearray()
                self._handshake(in_fd, buffer)
                backoff = 0.1
                self._set_connected(True)
                log.info("control interface connected at %s", self.path)
                self._serve(in_fd, buffer)
            except _ConnectionLost as e:
                self.last_error = str(e)
                log.warning("control interface: %s", e)
            except OSError as e:
                self.last_error = f"{self.path}: {e.strerror or e}"
                log.debug("control interface not ready: %s", self.last_error)
            except Exception as e:
                # A defect must not end this thread: the car would stay cut off from Ankaios.
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("control interface failed unexpectedly; connecting again")
            finally:
                self._close(in_fd)
                self._set_connected(False)
            if self._stop.wait(backoff):
                break
            # Until the first connection the agent is still setting up the FIFOs, and
            # requests may be waiting for it: keep trying often.
            ceiling = self._max_backoff if self._ever_connected.is_set() else BOOT_MAX_BACKOFF
            backoff = min(backoff * 2, ceiling)

    def _open(self) -> int:
        # Input first, non-blocking: the agent opens its writing end only when it has
        # something to send, so a blocking open here would wait for our own Hello.
        in_fd = os.open(self.path / "input", os.O_RDONLY | os.O_NONBLOCK)
        try:
            # ENXIO here means the agent is not reading yet; the caller retries with backoff.
            out_fd = os.open(self.path / "output", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            os.close(in_fd)
            raise
        with self._write_lock:
            self._out_fd = out_fd
        return in_fd

    def _handshake(self, in_fd: int, buffer: bytearray) -> None:
        """Hello, then wait for ControlInterfaceAccepted.

        Ankaios 1.0.1's agent keeps a finished handshake when the same workload reopens the
        FIFOs (a restarted connector): it only logs the new Hello and sends no second
        acceptance, but serves requests. So when no acceptance comes, a probe request
        decides: any answer to it, even "Access denied", shows that Ankaios is listening.
        """
        hello = _control_api.ToAnkaios(hello=_control_api.Hello(protocolVersion=ANKAIOS_VERSION))
        self._write(hello.SerializeToString(), HANDSHAKE_TIMEOUT)
        start = time.monotonic()
        probe_id: str | None = None
        while time.monotonic() - start < HANDSHAKE_TIMEOUT and not self._stop.is_set():
            if probe_id is None and time.monotonic() - start > PROBE_AFTER:
                probe_id = f"fleet-connector-probe-{uuid.uuid4()}"
                probe = _ank_base.Request(
                    requestId=probe_id,
                    completeStateRequest=_ank_base.CompleteStateRequest(
                        fieldMask=["desiredState.apiVersion"]
                    ),
                )
                self._write(_control_api.ToAnkaios(request=probe).SerializeToString(), 1.0)
            for frame in self._read(in_fd, buffer):
                message = _control_api.FromAnkaios()
                try:
                    message.ParseFromString(frame)
                except Exception:
                    log.warning("control interface: undecodable frame during handshake")
                    continue
                if message.HasField("controlInterfaceAccepted"):
                    return
                if message.HasField("connectionClosed"):
                    raise _ConnectionLost(
                        f"Ankaios closed the connection: {message.connectionClosed.reason}"
                    )
                if message.HasField("response") and message.response.requestId == probe_id:
                    log.info("control interface: Ankaios answers without a new acceptance")
                    return
                log.warning("control interface: unexpected message before acceptance, ignored")
        raise _ConnectionLost("no answer from Ankaios to Hello within 5 s")

    def _serve(self, in_fd: int, buffer: bytearray) -> None:
        """Hands the input FIFO to the loop until the connection ends or we stop."""
        with self._read_lock:
            self._in_fd = in_fd
            self._buffer = buffer
            self._broken = None
        self._ended.clear()
        # Whatever ended it before the clear (a stop, a failed write) is seen here.
        if self._out_fd is None:
            raise _ConnectionLost("writing to the control interface failed")
        self._loop.add_reader(in_fd, self._readable)
        if not self._stop.is_set():
            self._ended.wait()
        if self._broken is not None and not self._stop.is_set():
            raise _ConnectionLost(self._broken)

    def _read_available(self, in_fd: int) -> None:
        """Dispatches each whole frame of what the FIFO holds. The caller holds
        ``_read_lock``."""
        for frame in self._frames(in_fd, self._buffer):
            self._dispatch(frame)

    def _read(self, in_fd: int, buffer: bytearray) -> list[bytes]:
        """The handshake's read: whole frames, waiting a while for something to come."""
        if not select.select([in_fd], [], [], _POLL_INTERVAL)[0]:
            return []
        return self._frames(in_fd, buffer)

    def _frames(self, in_fd: int, buffer: bytearray) -> list[bytes]:
        """The whole frames ``buffer`` holds after reading what the FIFO has now."""
        try:
            chunk = os.read(in_fd, 1 << 20)
        except BlockingIOError:
            return []
        if not chunk:
            raise _ConnectionLost("the agent closed the control interface")
        self._last_heard = time.monotonic()
        buffer.extend(chunk)
        return decode_frames(buffer)

    def _dispatch(self, frame: bytes) -> None:
        try:
            response = Response(frame)
        except Exception:
            log.warning("control interface: undecodable frame of %d bytes skipped", len(frame))
            return
        if response.content_type == ResponseType.CONNECTION_CLOSED:
            raise _ConnectionLost(f"Ankaios closed the connection: {response.content}")
        if response.content_type == ResponseType.CONTROL_INTERFACE_ACCEPTED:
            # Only a new control-interface instance accepts a Hello while we are connected:
            # the Ankaios server restarted, with its startup state and no subscriptions.
            log.warning("control interface: accepted again; the Ankaios server restarted")
            if self._on_connection_change:
                self._on_connection_change(True)
            return
        request_id = response.get_request_id()
        with self._pending_lock:
            pending = self._pending.get(request_id)
            route = self._streams.get(request_id) if pending is None else None
        if route is not None:
            route(response)
            return
        if pending is None:
            log.info(
                "control interface: dropped answer to unknown or expired request %s", request_id
            )
            return
        pending.response = response
        pending.done.set()

    def _write(self, payload: bytes, timeout: float) -> None:
        self._write_raw(_frame(payload), timeout)

    def _write_raw(self, data: bytes, timeout: float) -> None:
        """Writes whole frames, however long the pipe makes it wait (up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._write_lock:
            fd = self._out_fd
            if fd is None:
                raise _ConnectionLost("not connected")
            view = memoryview(data)
            while view:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Part of a frame is on the wire: the stream cannot be used any more.
                    self._close_output_locked("the agent does not read the control interface")
                    raise _ConnectionLost("the agent does not read the control interface")
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    # The pipe is full: wait until the agent has read some of it. The loop
                    # goes on reading meanwhile: the agent may be waiting for us to read.
                    self._loop.wait(
                        lambda: _writable(fd), min(remaining, _FULL_PIPE_WAIT), self._stop
                    )
                    continue
                except OSError as e:
                    self._close_output_locked(f"writing to the control interface failed: {e}")
                    if e.errno == errno.EPIPE:
                        raise _ConnectionLost(
                            "the agent stopped reading the control interface"
                        ) from None
                    raise
                view = view[written:]

    def _close_output_locked(self, reason: str | None = None) -> None:
        if self._out_fd is not None:
            os.close(self._out_fd)
            self._out_fd = None
        if reason is not None:
            # The connection cannot be used any more: the connection thread makes a new one.
            self._broken = self._broken or reason
            self._ended.set()

    def _close(self, in_fd: int | None) -> None:
        if in_fd is not None:
            self._loop.remove_reader(in_fd)
        with self._read_lock:
            self._in_fd = None
            if in_fd is not None:
                os.close(in_fd)
        with self._write_lock:
            self._close_output_locked()

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected.is_set():
            return
        if connected:
            self.last_error = None
            self._connected.set()
            self._ever_connected.set()
            self.end_boot_wait()
        else:
            self._connected.clear()
            with self._pending_lock:
                for pending in self._pending.values():
                    pending.lost = "connection to the control interface lost"
                    pending.done.set()
        if self._on_connection_change:
            self._on_connection_change(connected)

    def _unavailable_reason(self) -> str:
        detail = f" ({self.last_error})" if self.last_error else ""
        return f"the Ankaios control interface is not connected{detail}"


def _writable(fd: int) -> bool:
    return bool(select.select([], [fd], [], 0)[1])
