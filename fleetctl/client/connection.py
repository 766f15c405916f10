"""fleetctl's one MQTT connection: connect (MQTT 5, else 3.1.1), subscribe, publish.

Everything arriving is handed to one ``on_message`` callback on paho's network thread;
callers turn it into per-request events or queue it for the main thread.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleet_connector.mqtt.broker import BrokerSettings

log = logging.getLogger(__name__)

QOS = 1
# One SUBSCRIBE per this many filters keeps packets small for brokers with size limits.
SUBSCRIBE_CHUNK = 200
# paho sends at most this many QoS 1 messages before their PUBACKs; its default of 20
# would serialise a 500-car rollout behind the broker's round trips.
MAX_INFLIGHT = 500

MessageHandler = Callable[[str, bytes, bool], None]
# The broker's acknowledgement of a publish: its message id and reason code. On MQTT 5 the
# reason says whether anyone will get it ("Not authorized", "No matching subscribers").
AckHandler = Callable[[int, ReasonCode], None]


class BrokerError(Exception):
    """The broker could not be reached or refused us; the message is one line."""


class Connection:
    """One paho client for the whole fleet, its network loop on a thread of its own."""

    def __init__(
        self,
        settings: BrokerSettings,
        on_message: MessageHandler,
        *,
        client_id: str | None = None,
        on_ack: AckHandler | None = None,
    ) -> None:
        self.settings = settings
        self._on_message = on_message
        self._on_ack = on_ack
        self._client_id = client_id or f"fleetctl-{uuid.uuid4().hex[:12]}"
        self._client: mqtt.Client | None = None
        self._lock = threading.Condition()
        self._connack: ReasonCode | None = None
        self._gone: str | None = None
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._filters: list[str] = []

    @property
    def protocol(self) -> str:
        return self.settings.protocol

    @property
    def connected(self) -> bool:
        """Whether the connection is up now; paho reconnects by itself after a loss."""
        client = self._client
        return client is not None and client.is_connected()

    def open(self, timeout: float) -> None:
        """Connects; falls back to MQTT 3.1.1 if the broker does not speak 5 (and we may)."""
        reason = self._connect(timeout)
        fallback = None if reason is None else self.settings.falls_back(reason)
        if fallback is not None:
            self.close()
            self.settings = fallback
            reason = self._connect(timeout)
        if reason is not None:
            self.close()
            raise BrokerError(f"broker {self.settings.describe()} refused the connection: {reason}")

    def _connect(self, timeout: float) -> ReasonCode | None:
        """None once connected, else the broker's refusal; raises BrokerError otherwise."""
        with self._lock:
            self._connack = None
            self._gone = None
        client = self.settings.make_client(self._client_id, clean=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_publish = self._handle_publish
        self._client = client
        try:
            client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot reach broker {self.settings.describe()}: {e}") from None
        client.loop_start()
        with self._lock:
            arrived = self._lock.wait_for(
                lambda: self._connack is not None or self._gone is not None, timeout
            )
            connack, gone = self._connack, self._gone
        if not arrived:
            self.close()
            raise BrokerError(f"broker {self.settings.describe()} did not answer within {timeout}s")
        if connack is None:
            self.close()
            raise BrokerError(f"broker {self.settings.describe()} closed the connection: {gone}")
        return None if not connack.is_failure else connack

    def subscribe(self, filters: Sequence[str], timeout: float) -> list[str]:
        """Subscribes and waits for the SUBACKs; returns the filters the broker refused."""
        client = self._require()
        refused: list[str] = []
        for start in range(0, len(filters), SUBSCRIBE_CHUNK):
            chunk = list(filters[start : start + SUBSCRIBE_CHUNK])
            result, mid = client.subscribe(self._subscription(chunk))
            if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise BrokerError(f"subscribing failed: {mqtt.error_string(result)}")
            reasons = self._suback(mid, timeout)
            refused.extend(f for f, r in zip(chunk, reasons, strict=False) if r.is_failure)
            self._filters.extend(
                f for f, r in zip(chunk, reasons, strict=False) if not r.is_failure
            )
        return refused

    def _suback(self, mid: int, timeout: float) -> list[ReasonCode]:
        with self._lock:
            if not self._lock.wait_for(lambda: mid in self._subacks, timeout):
                raise BrokerError(f"the broker did not confirm subscriptions within {timeout}s")
            return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes | str, *, expiry: int | None = None) -> int:
        """Publishes with QoS 1 and returns the message id its acknowledgement will carry.

        ``expiry`` (seconds) becomes the MQTT 5 Message Expiry Interval; MQTT 3.1.1 has none.
        """
        properties = None
        if expiry is not None and self.settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = expiry
        info = self._require().publish(topic, payload, qos=QOS, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: paho queues the message and sends it after reconnecting.
            raise BrokerError(f"publishing to {topic} failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()

    def _require(self) -> mqtt.Client:
        if self._client is None:
            raise BrokerError("not connected")
        return self._client

    def _subscription(self, filters: list[str]) -> list[tuple[str, Any]]:
        if self.settings.protocol == "5":
            return [(f, SubscribeOptions(qos=QOS)) for f in filters]
        return [(f, QOS) for f in filters]

    # -- paho callbacks (network thread) ------------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            first = self._connack is None
            self._connack = reason
            self._lock.notify_all()
        if not first and not reason.is_failure and self._filters:
            # Our session is clean: after a reconnect the broker forgot our subscriptions.
            client.subscribe(self._subscription(self._filters))

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        with self._lock:
            self._gone = str(reason)
            self._lock.notify_all()

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        with self._lock:
            self._subacks[mid] = list(reasons)
            self._lock.notify_all()

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        if self._on_ack is not None:
            self._on_ack(mid, reason)

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's network thread and with it every reply of
        # every car; one car's message is not worth that.
        try:
            self._on_message(msg.topic, bytes(msg.payload), bool(msg.retain))
        except Exception as e:
            log.warning(
                "message on %.200r could not be handled (%s: %.200s); ignored",
                msg.topic,
                type(e).__name__,
                e,
            )
