"""A plain MQTT client that records what it receives, for asserting on topics."""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties

from fleet_connector.mqtt.broker import BrokerSettings
from testkit.broker import Broker


@dataclass
class Message:
    topic: str
    payload: bytes
    properties: Properties | None
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode()


class MqttProbe:
    """A plain paho client that records what it receives, for asserting on topics."""

    def __init__(
        self,
        broker: Broker,
        protocol: int = mqtt.MQTTv5,
        settings: BrokerSettings | None = None,
        client_id: str | None = None,
    ) -> None:
        """A probe on ``broker``; ``settings`` (TLS, credentials) replace the plain default."""
        self.broker = broker
        self.protocol = protocol
        self.messages: queue.Queue[Message] = queue.Queue()
        client_id = client_id or f"probe-{uuid.uuid4().hex[:8]}"
        if settings is None:
            version = "5" if protocol == mqtt.MQTTv5 else "3.1.1"
            settings = BrokerSettings(host=broker.host, port=broker.port, protocol=version)
        # make_client also turns off Nagle's algorithm, which would add ~40 ms per exchange.
        self.client = settings.make_client(client_id)
        self.client.on_message = self._on_message
        self._subscribed: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subscribed.put(mid)
        connected: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        try:
            reason = connected.get(timeout=10)
        except queue.Empty:
            self.close()
            raise ConnectionError("no CONNACK from the broker") from None
        if reason.is_failure:
            self.close()
            raise ConnectionRefusedError(str(reason))

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        self.messages.put(Message(msg.topic, msg.payload, props, bool(msg.retain)))

    def subscribe(self, topic: str, qos: int = 1) -> None:
        _, mid = self.client.subscribe(topic, qos)
        got = self._subscribed.get(timeout=5)
        assert got == mid

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, properties: Properties | None = None
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        info.wait_for_publish(timeout=5)

    def expect(self, topic: str | None = None, timeout: float = 10.0) -> Message:
        """The next message (on `topic`, if given); fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message on {topic or 'any topic'} within {timeout}s")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if topic is None or msg.topic == topic:
                return msg

    def expect_nothing(self, within: float) -> None:
        """Asserts silence for `within` seconds (only where silence is the behaviour)."""
        try:
            msg = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic}: {msg.payload[:200]!r}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
