"""The control interface's wire: two FIFOs carrying varint-length-prefixed protobuf frames.

Direction names follow Ankaios (seen from the workload): the workload writes ``output`` and
reads ``input``. The emulator therefore reads ``output`` and writes ``input``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import stat
import struct
import termios
import threading
import time
from pathlib import Path

INPUT_FIFO = "input"
OUTPUT_FIFO = "output"

# Ankaios's agent gives up on a varint after this many bytes; a longer one means garbage.
MAX_VARINT_BYTES = 19
_POLL_INTERVAL_S = 0.05
# A waiting read is woken by close() and stop (FrameReader.wake); this is only a backstop.
_IDLE_WAIT_S = 1.0
_READ_CHUNK = 65536
# How long a frame waits for the previous one to leave the pipe (see FrameWriter).
_DRAIN_WAIT_S = 1.0
_DRAIN_POLL_S = 0.002


class TransportClosed(Exception):
    """The FIFO end was closed locally (session stopping or agent restart)."""


class ReceiverGone(Exception):
    """Nobody reads the ``input`` FIFO (workload not started yet or gone)."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must not be negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    return encode_varint(len(payload)) + payload


def make_fifos(directory: Path) -> None:
    """Create ``input`` and ``output`` FIFOs in ``directory``, reusing FIFOs already there."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in (INPUT_FIFO, OUTPUT_FIFO):
        path = directory / name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            os.mkfifo(path, 0o600)
            continue
        if not stat.S_ISFIFO(mode):
            raise FileExistsError(f"{path} exists and is not a FIFO")


def remove_fifos(directory: Path) -> None:
    for name in (INPUT_FIFO, OUTPUT_FIFO):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


class FrameReader:
    """Reads whole frames from the ``output`` FIFO.

    Like the agent's input pipe it keeps the FIFO open without a writer (non-blocking open)
    and reopens it on EOF, so a workload can close and reopen its end at any time. A frame
    cut short by EOF is discarded, as the agent does.
    """

    def __init__(self, path: Path, stop: threading.Event) -> None:
        self._path = path
        self._stop = stop
        self._fd: int | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()
        # Wakes a read waiting in select() when the reader is closed or the session stops,
        # so that the wait need not poll: an idle emulator (a thousand of them in the
        # fleet benchmark) then costs no CPU.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.open()

    def open(self) -> None:
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
                self._buf.clear()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._buf.clear()
        self.wake()

    def wake(self) -> None:
        """Makes a waiting :meth:`read_frame` look at the stop flag and the FIFO again."""
        with contextlib.suppress(OSError):  # full (a wake is pending) or already disposed
            os.write(self._wake_w, b"\0")

    def dispose(self) -> None:
        """Closes the FIFO end for good, with the wake-up pipe."""
        self.close()
        with self._lock:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def read_frame(self) -> bytes | None:
        """Return the next frame's payload, or ``None`` on EOF (the writer went away).

        Raises :class:`TransportClosed` when stopped or closed locally.
        """
        while True:
            frame = self._take_frame()
            if frame is not None:
                return frame
            fd = self._fd
            if fd is None or self._stop.is_set():
                raise TransportClosed
            wake = self._wake_r
            try:
                ready, _, _ = select.select([fd, wake], [], [], _IDLE_WAIT_S)
            except (OSError, ValueError) as exc:  # fd closed by another thread
                raise TransportClosed from exc
            if wake in ready:
                with contextlib.suppress(OSError):
                    os.read(wake, 4096)
                continue
            if not ready:
                continue
            try:
                chunk = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportClosed from exc
            if not chunk:
                self._reopen_after_eof()
                return None
            self._buf += chunk

    def _reopen_after_eof(self) -> None:
        # A fresh descriptor forgets the departed writer, so select() blocks again until a
        # new workload opens its end instead of reporting EOF forever.
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                # Fails when the FIFO was removed (a replaced control-interface
                # instance): nothing can reach this reader any more.
                with contextlib.suppress(OSError):
                    self._fd = os.open(self._path, os.O_RDONLY | os.O_NONBLOCK)
            self._buf.clear()

    def _take_frame(self) -> bytes | None:
        length = 0
        shift = 0
        for index, byte in enumerate(self._buf[:MAX_VARINT_BYTES]):
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                start = index + 1
                if len(self._buf) - start < length:
                    return None
                payload = bytes(self._buf[start : start + length])
                del self._buf[: start + length]
                return payload
        if len(self._buf) >= MAX_VARINT_BYTES:
            # Not a varint any decoder would accept; report it as an undecodable frame.
            payload = bytes(self._buf[:MAX_VARINT_BYTES])
            del self._buf[:MAX_VARINT_BYTES]
            return payload
        return None


class FrameWriter:
    """Writes whole frames to the ``input`` FIFO.

    Opened lazily like the agent's output pipe: a missing reader (ENXIO) or a reader that
    left (EPIPE) is retried a few times, then the frame is reported undeliverable. Once a
    frame has started it is written to the end, however large, so the stream never
    desynchronises on our side.

    A frame is only written once the previous one has left the pipe: the SDK 1.0.1 reader
    polls the descriptor but reads through a buffer, so two frames that arrive together
    leave the second stranded in that buffer until yet another frame comes. Between a
    real agent and the server there is always a network hop that spaces frames out.
    ``pace=False`` writes frames back to back, as the agent itself does, for clients
    whose reader takes frames apart correctly.
    """

    def __init__(
        self,
        path: Path,
        stop: threading.Event,
        retries: int = 5,
        retry_interval: float = 0.1,
        pace: bool = True,
    ) -> None:
        self._pace = pace
        self._path = path
        self._stop = stop
        self._retries = retries
        self._retry_interval = retry_interval
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_open(self) -> bool:
        with self._lock:
            return self._ensure_open()

    def _ensure_open(self) -> bool:
        if self._fd is not None:
            return True
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            # ENXIO: nobody reads yet; ENOENT: the FIFO was removed meanwhile.
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return False
            raise
        return True

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def write(self, data: bytes) -> None:
        """Write ``data`` whole; raise :class:`ReceiverGone` if no reader appears in time."""
        with self._lock:
            attempt = 0
            while True:
                if self._stop.is_set():
                    raise TransportClosed
                try:
                    if self._ensure_open():
                        if self._pace:
                            self._wait_drained()
                        self._write_all(data)
                        return
                except BrokenPipeError:
                    self._close_locked()
                if attempt >= self._retries:
                    raise ReceiverGone(str(self._path))
                attempt += 1
                time.sleep(self._retry_interval)

    def _wait_drained(self) -> None:
        fd = self._fd
        assert fd is not None
        deadline = time.monotonic() + _DRAIN_WAIT_S
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                pending = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return
            if pending == 0:
                return
            time.sleep(_DRAIN_POLL_S)

    def write_now(self, data: bytes) -> bool:
        """Writes ``data`` if the pipe takes all of it at once, now; False if it would wait.

        Only frames of at most ``PIPE_BUF`` bytes, which a pipe takes whole or not at all,
        and only when not pacing; anything else goes through :meth:`write`, which waits,
        retries and reports. False leaves the stream untouched.
        """
        if self._pace or len(data) > select.PIPE_BUF:
            return False
        with self._lock:
            if self._stop.is_set():
                return False
            try:
                if not self._ensure_open():
                    return False
                assert self._fd is not None
                os.write(self._fd, data)
            except BrokenPipeError:
                self._close_locked()
                return False
            except OSError:  # BlockingIOError (full) and the rest: write() decides
                return False
            return True

    def write_raw(self, data: bytes) -> None:
        """Write bytes without framing (garbage injection); same delivery rules."""
        self.write(data)

    def _write_all(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        written = 0
        while written < len(view):
            if self._stop.is_set():
                raise TransportClosed
            try:
                written += os.write(fd, view[written:])
            except BlockingIOError:
                select.select([], [fd], [], _POLL_INTERVAL_S)
            except BrokenPipeError:
                if written:
                    # The reader vanished mid-frame; nothing sane can follow on this stream.
                    self._close_locked()
                    raise ReceiverGone(str(self._path)) from None
                raise
