"""One thread serves a car's connector: the MQTT socket, the control interface, wake-ups.

A request arrives on the MQTT socket, is carried out, its answer read from the control
interface and its reply written to the socket, all on this thread. Handing a request from
paho's network thread to a worker and its reply back costs more than the work itself
(bench/README.md, "Where the time goes"); and every thread of a simulated car wakes and
fights for the GIL when a fleet of them shares a host process.

The code that carries out a request stays sequential: where it waits (for Ankaios's
answer, for the broker's acknowledgement) it calls :meth:`Loop.wait`, which keeps serving
every socket until what it waits for has happened. Messages that come in meanwhile are only
queued by their handlers, which never wait themselves.

Threads other than the loop's (live states, log streams, the control interface's
connection keeper) never touch a socket the loop serves: they queue and :meth:`Loop.wake`
it, or wait for an event the loop sets.
"""

from __future__ import annotations

import contextlib
import math
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

# Longest sleep without a reason to wake: a source that wants to run at a time says so.
IDLE_TURN = 1.0


class Interrupted(BaseException):
    """Raised in the loop's thread by :meth:`Loop.wait` after :meth:`Loop.interrupt`.

    A BaseException, so that request handling, which turns every Exception into an error
    reply, unwinds instead of answering a request it did not finish.
    """


class Source(Protocol):
    """Something with a socket of its own that the loop drives (the MQTT client)."""

    def prepare(self, now: float) -> tuple[int | None, bool, float]:
        """Before a turn: the descriptor to watch (or None), whether to watch it for
        writing, and when (monotonic) the source wants to run even without I/O."""

    def handle(self, readable: bool, now: float) -> None:
        """After a turn: whether its descriptor was readable (it writes what it can itself)."""


class Loop:
    """Serves descriptors and sources from one thread, its owner."""

    def __init__(self) -> None:
        self._readers: dict[int, Callable[[], None]] = {}
        self._sources: list[Source] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._owner: int | None = None
        self._interrupted = False

    # -- from any thread ----------------------------------------------------------------

    def own(self) -> None:
        """Makes the calling thread the loop's: only it runs the loop from now on."""
        self._owner = threading.get_ident()
        self._interrupted = False

    @property
    def in_loop(self) -> bool:
        return self._owner == threading.get_ident()

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        with self._lock:
            self._readers[fd] = callback
        self.wake()

    def remove_reader(self, fd: int) -> None:
        with self._lock:
            self._readers.pop(fd, None)
        self.wake()

    def add_source(self, source: Source) -> None:
        with self._lock:
            if source not in self._sources:
                self._sources.append(source)
        self.wake()

    def wake(self) -> None:
        """Ends the current turn's sleep, so the loop sees what another thread queued."""
        if self.in_loop:
            return  # it looks again before it sleeps
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def interrupt(self) -> None:
        """Makes :meth:`wait` raise :class:`Interrupted` in the owner (a stop that cannot
        wait any longer for the request in progress)."""
        self._interrupted = True
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def wait(
        self,
        done: Callable[[], bool],
        timeout: float | None,
        event: threading.Event | None = None,
    ) -> bool:
        """Until ``done()`` or ``timeout`` seconds; whether it is done.

        In the loop's thread the loop runs meanwhile. Any other thread waits for ``event``
        (set, with a wake-up, by whatever makes ``done`` true) or, without one, only
        checks ``done`` once: the loop is what makes things happen.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.in_loop:
            return self._run_until(done, deadline)
        if event is not None and not done():
            event.wait(timeout)
        return done()

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    # -- in the owner's thread ----------------------------------------------------------

    def _run_until(self, done: Callable[[], bool], deadline: float | None) -> bool:
        while True:
            if done():
                return True
            if self._interrupted or self._owner != threading.get_ident():
                raise Interrupted  # stopping, or another thread took the loop over
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            self._turn(now, IDLE_TURN if deadline is None else min(deadline - now, IDLE_TURN))

    def _turn(self, now: float, longest: float) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        with self._lock:
            readers = dict(self._readers)
            sources = list(self._sources)
        for fd in readers:
            poller.register(fd, select.POLLIN)
        watched: list[tuple[Source, int | None]] = []
        for source in sources:
            source_fd, write, due = source.prepare(now)
            watched.append((source, source_fd))
            longest = min(longest, due - now)
            if source_fd is not None:
                poller.register(source_fd, select.POLLIN | (select.POLLOUT if write else 0))
        timeout_ms = max(0, math.ceil(longest * 1000))
        try:
            ready = dict(poller.poll(timeout_ms))
        except InterruptedError:
            ready = {}
        if ready.pop(self._wake_r.fileno(), 0):
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_r.recv(4096)
        incoming = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
        now = time.monotonic()
        for source, source_fd in watched:
            mask = ready.pop(source_fd, 0) if source_fd is not None else 0
            source.handle(bool(mask & incoming), now)
        for fd, mask in ready.items():
            callback = readers.get(fd)
            if callback is not None and mask & incoming:
                callback()
