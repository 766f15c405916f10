"""Replies to recent requests, so that a request delivered twice is carried out once."""

from __future__ import annotations

import threading
from collections import OrderedDict

from fleet_connector.errors import ErrorCode
from fleet_connector.handler import Request

# Failures a requester retries under the same id: those retries must run again, not be
# answered from the cache (after a TIMEOUT the first attempt may or may not have taken effect).
_TRANSIENT = frozenset({ErrorCode.BUSY, ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT})


class ReplyCache:
    """Replies to recent requests that carried an id, so a redelivery is answered, not re-run.

    MQTT QoS 1 is at-least-once: after a reconnect the broker may deliver a request again.
    """

    def __init__(self, size: int = 1000) -> None:
        self._size = size
        self._replies: OrderedDict[tuple[str, bytes, bytes], str] = OrderedDict()
        self._in_flight: set[tuple[str, bytes, bytes]] = set()
        self._lock = threading.Lock()

    def admit(self, request: Request) -> str | bool:
        """A cached reply, ``True`` for a new request, ``False`` for one already running."""
        key = request.dedupe_key
        if key is None:
            return True
        with self._lock:
            if key in self._replies:
                self._replies.move_to_end(key)
                return self._replies[key]
            if key in self._in_flight:
                return False
            self._in_flight.add(key)
            return True

    def done(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        key = request.dedupe_key
        if key is None:
            return
        with self._lock:
            self._in_flight.discard(key)
            if code in _TRANSIENT:
                return
            self._replies[key] = reply
            while len(self._replies) > self._size:
                self._replies.popitem(last=False)
