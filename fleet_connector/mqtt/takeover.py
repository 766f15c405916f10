"""Noticing that another client takes over the connector's MQTT session.

A broker lets a new connection with the same client id take the session over and throws
the old one off. A client that does so (another car with a copied client id, a second
connector started by mistake) receives the requests meant for this car, and each time the
connector reconnects, the two throw each other off. Some brokers say so to MQTT 5 clients
(DISCONNECT with reason "Session taken over"); mosquitto 2.0.11 and MQTT 3.1.1 brokers just
close the connection, which then keeps being lost shortly after each connect: that
pattern counts too.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

log = logging.getLogger(__name__)

SESSION_TAKEN_OVER = 142
# Losses within this many seconds of connecting count as "right after connect"...
QUICK_LOSS = 10.0
# ... and this many of them within WINDOW seconds make a takeover.
QUICK_LOSSES = 3
WINDOW = 120.0


class SessionWatch:
    """Counts takeovers of one MQTT session (shown in presence once the session is back)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._connected_at: float | None = None
        self._quick_losses: deque[float] = deque()
        self.takeovers = 0
        self.last: str | None = None
        """When the last takeover was noticed (ISO 8601, UTC)."""

    def connected(self) -> None:
        self._connected_at = self._clock()

    def lost(self, reason_code: int | None, client_id: str) -> None:
        now = self._clock()
        quick = self._connected_at is not None and now - self._connected_at < QUICK_LOSS
        self._connected_at = None
        if reason_code == SESSION_TAKEN_OVER:
            self._noticed(client_id, "the broker says another client took the session over")
            return
        if not quick:
            return
        self._quick_losses.append(now)
        while self._quick_losses and now - self._quick_losses[0] > WINDOW:
            self._quick_losses.popleft()
        if len(self._quick_losses) >= QUICK_LOSSES:
            self._quick_losses.clear()
            self._noticed(
                client_id,
                f"the connection was lost {QUICK_LOSSES} times within {WINDOW:.0f} s, each "
                f"within {QUICK_LOSS:.0f} s of connecting",
            )

    def _noticed(self, client_id: str, why: str) -> None:
        self.takeovers += 1
        self.last = datetime.now(UTC).isoformat(timespec="seconds")
        log.error(
            "SECURITY: MQTT session of client id %r taken over (%s; %d so far); another "
            "client is connecting with this car's client id and receives its requests. "
            "Bind client ids to identities at the broker (see README, Running it in "
            "production).",
            client_id,
            why,
            self.takeovers,
        )
