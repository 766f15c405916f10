"""Test-only crash points: a SIGKILL of the connector at a named point of a request.

The exactly-once tests must kill the connector at precise moments (after Ankaios answered
but before the journal recorded it, say). Timing a ``kill`` from outside cannot hit those
windows reliably, so the connector kills itself with a real SIGKILL, the same signal an
out-of-memory killer or a power cut would deliver, when ``FLEET_CONNECTOR_CRASH_AT`` names
the point. Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "FLEET_CONNECTOR_CRASH_AT"
POINTS = ("before-ankaios", "after-ankaios", "after-journal", "after-reply")
"""Where a change can be cut: before Ankaios got the request; after Ankaios answered (the
journal does not know yet); after the journal recorded the answer (no reply yet); after the
reply reached the broker (the request is not acknowledged yet)."""


class CrashPoints:
    def __init__(self, point: str | None = None) -> None:
        if point is not None and point not in POINTS:
            raise ValueError(f"{ENV} must be one of {', '.join(POINTS)}")
        self.point = point

    def reach(self, point: str) -> None:
        if point == self.point:
            log.warning("crash point %s reached: SIGKILL", point)
            os.kill(os.getpid(), signal.SIGKILL)
