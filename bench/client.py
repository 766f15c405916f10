"""The benchmark's own MQTT client: publishes requests, times the replies.

Built by ``BrokerSettings.make_client`` like every client of the project, so TCP_NODELAY is
set on its socket (Nagle's algorithm would otherwise add ~40 ms per exchange on loopback).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from bench.common import HOST
from fleet_connector.mqtt.broker import BrokerSettings


class Client:
    """One paho client; everything it receives lands in ``inbox`` with its arrival time."""

    def __init__(self, port: int, protocol: str = "5", name: str = "bench") -> None:
        self.settings = BrokerSettings(host=HOST, port=port, protocol=protocol)
        self.client = self.settings.make_client(f"{name}-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(0)  # pipelining: no client-side window
        self.client.max_queued_messages_set(0)
        self.inbox: queue.SimpleQueue[tuple[str, bytes, float, bool]] = queue.SimpleQueue()
        self.counted = 0
        self.count_prefix: str | None = None
        self.count_target = 0
        self.count_done = threading.Event()
        self.last_arrival = 0.0
        self._subacks: queue.SimpleQueue[int] = queue.SimpleQueue()
        connected: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subacks.put(mid)
        self.client.on_message = self._on_message
        deadline = time.monotonic() + 30
        while True:  # a NATS cluster may still be electing its JetStream leader
            try:
                self.client.connect(HOST, port, keepalive=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.client.loop_start()
        reason = connected.get(timeout=30)
        if reason.is_failure:
            raise ConnectionRefusedError(str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        if self.count_prefix is not None and msg.topic.startswith(self.count_prefix):
            self.counted += 1
            self.last_arrival = now
            if msg.payload.startswith(b'{"error"'):
                self.inbox.put((msg.topic, bytes(msg.payload), now, bool(msg.retain)))
            if self.counted >= self.count_target:
                self.count_done.set()
            return
        self.inbox.put((msg.topic, bytes(msg.payload), now, bool(msg.retain)))

    def subscribe(self, *filters: str, timeout: float = 30.0) -> None:
        for topic in filters:
            _, mid = self.client.subscribe(topic, 1)
            while self._subacks.get(timeout=timeout) != mid:
                pass

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos)

    def expect(self, topic: str, timeout: float = 10.0) -> tuple[bytes, float]:
        """The payload and arrival time of the next message on ``topic``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"nothing on {topic} within {timeout}s")
            try:
                got, payload, arrived, _ = self.inbox.get(timeout=remaining)
            except queue.Empty:
                continue
            if got == topic:
                return payload, arrived

    def call(self, topic: str, reply_topic: str, payload: bytes | str) -> tuple[bytes, float]:
        """One request/reply; returns the reply and the round trip in seconds."""
        started = time.perf_counter()
        self.publish(topic, payload)
        reply, arrived = self.expect(reply_topic)
        return reply, arrived - started

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
