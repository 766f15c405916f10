"""How large a message the connector may publish, and a message the broker will not take.

A broker refuses a message over its size limit, and how it refuses is the trouble: over MQTT 5
mosquitto closes the connection ("protocol error"), and paho publishes every unacknowledged
QoS 1 message again at the next connect, so one oversized reply made a car lose its connection
at every reconnect, forever. So every message is measured against ``MAX_MESSAGE_SIZE`` before
it is handed to paho (:func:`packet_size`), and a message the broker still drops the connection
for (its limit is lower than ``MAX_MESSAGE_SIZE``) is found and given up (:class:`Culprits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

# Below every common broker's default limit (docs/operations.md, "Message sizes").
DEFAULT_MAX_MESSAGE_SIZE = 1_000_000
# Fixed header (up to 5 bytes), topic length, packet id and properties length, rounded up.
_HEADER = 16
# Connection losses with the same message the oldest unacknowledged one before it is given
# up: a broker handles a connection's messages in order, so the one it dropped the connection
# for is the oldest it never acknowledged. Two, so one ordinary network loss never costs a
# message; the second must come right after a connect (QUICK_LOSS), when paho sent it again.
STRIKES = 2
QUICK_LOSS = 10.0


class MessageTooLarge(ValueError):
    """A message over the size limit; it was not published."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(
            f"a message of {size} bytes for {topic[:200]!r} is over the limit of {limit} bytes"
        )
        self.size = size
        self.limit = limit


def packet_size(topic: str, payload: str | bytes, properties: Any = None) -> int:
    """The size of the PUBLISH packet that carries ``payload`` (to a few bytes)."""
    if isinstance(payload, str):
        # isascii() is a flag CPython keeps: no encoding of a large reply just to measure it.
        body = len(payload) if payload.isascii() else len(payload.encode())
    else:
        body = len(payload)
    packed = len(properties.pack()) if properties is not None else 0
    return _HEADER + len(topic.encode()) + body + packed


@dataclass
class _Suspect:
    message: mqtt.MQTTMessage
    strikes: int


class Culprits:
    """Finds the message a broker keeps dropping the connection for.

    Call :meth:`connection_lost` from paho's disconnect callback (the loop's thread). It
    returns the messages to give up: removed from paho's queue, they are not published again.
    """

    def __init__(self) -> None:
        self._suspects: dict[int, _Suspect] = {}

    def connection_lost(self, client: mqtt.Client, *, quick: bool) -> list[mqtt.MQTTMessage]:
        """``quick``: the connection was lost right after it was made, that is right after
        paho published its unacknowledged messages again. Only such a loss counts again for
        the same message: a link that is merely flaky loses connections at any time."""
        # paho keeps the QoS 1 messages it waits a PUBACK for in order of sending.
        with client._out_message_mutex:
            queued = client._out_messages
            oldest = next(
                (m for m in queued.values() if m.state == mqtt.mqtt_ms_wait_for_puback), None
            )
            # Acknowledged messages are gone from paho's queue: forget them.
            self._suspects = {
                mid: s
                for mid, s in self._suspects.items()
                if queued.get(mid) is s.message and s.message is oldest
            }
            if oldest is None:
                return []
            suspect = self._suspects.setdefault(oldest.mid, _Suspect(oldest, 0))
            suspect.strikes = suspect.strikes + 1 if quick else 1
            if suspect.strikes < STRIKES:
                return []
            del self._suspects[oldest.mid]
            del queued[oldest.mid]
            return [oldest]
