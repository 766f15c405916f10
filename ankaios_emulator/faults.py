"""Fault switches the sessions consult before answering (robustness tests of clients)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Mutable at any time from tests; read by every session when it answers.

    ``delay``: seconds to hold back every response (events and log entries included).
    ``drop``: swallow every response (the client times out).
    Handshake messages are never delayed or dropped; use ``restart_agent``/``close_connection``
    on the emulator for connection faults.
    """

    delay: float = 0.0
    drop: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def snapshot(self) -> tuple[float, bool]:
        with self._lock:
            return self.delay, self.drop

    def reset(self) -> None:
        with self._lock:
            self.delay = 0.0
            self.drop = False
