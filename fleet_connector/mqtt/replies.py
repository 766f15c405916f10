"""Replies to recent writes, so that a write delivered twice is carried out once."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fleet_connector.errors import ErrorCode
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.handler import Request

# Failures a requester retries under the same id: those retries must run again, not be
# answered from the cache (after a TIMEOUT the first attempt may or may not have taken
# effect). EXPIRED is about that one delivery; a later one with a fresh expiry may run.
_NOT_CACHED = frozenset(
    {ErrorCode.BUSY, ErrorCode.UNAVAILABLE, ErrorCode.TIMEOUT, ErrorCode.EXPIRED}
)

# A broker redelivers within one connection's life (seconds to minutes after the first
# delivery); an id reused later is a new request, not a redelivery.
MAX_AGE = 600.0
MAX_BYTES = 8 * 1024 * 1024

Key = tuple[str, str, bytes, bytes]


@dataclass
class _Entry:
    reply: str
    stored: float
    size: int


class ReplyCache:
    """Replies to recent writes that carried an id, so a redelivery is answered, not re-run.

    MQTT QoS 1 is at-least-once: after a reconnect the broker may deliver a request again.
    Reads are never cached: a repeated read must see the state of now, and running it
    twice changes nothing. Entries expire after ``max_age`` seconds and the cache holds
    at most ``max_bytes`` of replies, whatever their number.
    """

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._clock = clock
        self._replies: OrderedDict[Key, _Entry] = OrderedDict()
        self._bytes = 0
        self._in_flight: set[Key] = set()
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def admit(self, request: Request) -> str | bool:
        """A cached reply, ``True`` for a new request, ``False`` for one already running."""
        key = _key(request)
        if key is None:
            return True
        with self._lock:
            self._expire()
            entry = self._replies.get(key)
            if entry is not None:
                return entry.reply
            if key in self._in_flight:
                return False
            self._in_flight.add(key)
            return True

    def done(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        key = _key(request)
        if key is None:
            return
        with self._lock:
            if key not in self._in_flight:
                return  # answered without being admitted (refused on arrival)
            self._in_flight.discard(key)
            size = len(reply) + len(key[0]) + len(key[1]) + len(key[2]) + len(key[3])
            if code in _NOT_CACHED or size > self._max_bytes:
                return
            self._replies[key] = _Entry(reply, self._clock(), size)
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, evicted = self._replies.popitem(last=False)
                self._bytes -= evicted.size

    def _expire(self) -> None:
        limit = self._clock() - self._max_age
        while self._replies:
            key, oldest = next(iter(self._replies.items()))
            if oldest.stored >= limit:
                return
            del self._replies[key]
            self._bytes -= oldest.size


def _key(request: Request) -> Key | None:
    """What makes two deliveries the same write; None for reads and requests without an id.

    The reply topic is part of it: two requesters who happen to pick the same correlation
    data (with their own MQTT 5 response topics) are two requests.
    """
    if request.operation is Operation.STATE:
        return None
    return request.dedupe_key
