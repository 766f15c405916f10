"""Publishes the speed on a fixed schedule over one MQTT connection that heals itself.

Two threads, both owned by a `Sender`:

* paho's network thread (`loop_start`) connects, reconnects with exponential backoff and
  reports the connection state through callbacks; the callbacks only flip flags;
* one publisher thread, started once in `start()`, that ticks at anchor + k * interval on
  the monotonic clock and publishes on a tick only while connected. A reconnect only sets
  the "connected" flag again, so it can never start a second publishing loop (the
  reference sender started a new timer chain on every connect and so doubled its rate).

The schedule is anchored at the first successful connection, so the first value goes out
as soon as the broker is reachable; afterwards its phase never changes. Ticks that fall
into a disconnection are skipped, not caught up in a burst, and the value that would
have been sent is sent on the next tick after the reconnect (the sequence has no gaps).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fleet_connector.mqtt.broker import BrokerSettings, FallbackClient
from vehicle_data_sender.config import Config
from vehicle_data_sender.wave import TriangleWave

logger = logging.getLogger(__name__)

# paho's reconnect wait sleeps in steps of up to 1 s before it notices disconnect(), and a
# connect attempt may block for its socket timeout; stop() does not wait that long.
DEFAULT_STOP_TIMEOUT = 0.7


class Sender:
    """Publishes `TriangleWave` values to `config.topic` every `config.interval` seconds."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._wave = TriangleWave()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        # Set whenever _stopping or _connected is set, to wake the wait for a first connection.
        self._wake = threading.Event()
        self._failed_attempts = 0  # paho's network thread only
        self._publisher: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.published = 0  # values handed to the socket, for tests and diagnostics
        self._mqtt = FallbackClient(config.broker, self._make_client, self._connect)

    @property
    def _client(self) -> mqtt.Client:
        return self._mqtt.client

    def _make_client(self, broker: BrokerSettings) -> mqtt.Client:
        client = broker.make_client(client_id="")
        client.reconnect_delay_set(
            min_delay=self._config.reconnect_min_delay,
            max_delay=self._config.reconnect_max_delay,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        return client

    @property
    def config(self) -> Config:
        return self._config

    @property
    def failure(self) -> BaseException | None:
        """What ended the publisher thread, if it ended by an exception."""
        return self._failure

    def is_connected(self) -> bool:
        return self._connected.is_set()

    def is_running(self) -> bool:
        return self._publisher is not None and self._publisher.is_alive()

    def start(self) -> None:
        """Starts connecting (in the background) and the publisher thread; returns at once."""
        if self._publisher is not None:
            raise RuntimeError("Sender.start() may only be called once")
        self._mqtt.connect()
        self._publisher = threading.Thread(
            target=self._run, name="vehicle-data-sender-publisher", daemon=True
        )
        self._publisher.start()

    @staticmethod
    def _connect(client: mqtt.Client, broker: BrokerSettings) -> None:
        # connect_async never raises for an unreachable broker: the network thread retries.
        client.connect_async(broker.host, broker.port, broker.keepalive)
        client.loop_start()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stops publishing, sends DISCONNECT if connected, and ends the network thread.

        Waits at most `timeout` seconds. Returns False if the publisher, or (when there was
        a connection) the network thread flushing the DISCONNECT, had not ended by then.
        Both are daemon threads, so neither can keep the process alive.
        """
        deadline = self._clock() + timeout
        self._stopping.set()
        client = self._mqtt.close()
        self._wake.set()
        if self._publisher is not None and self._publisher is not threading.current_thread():
            self._publisher.join(max(0.0, deadline - self._clock()))
        # Queues DISCONNECT if there is a connection; otherwise only stops reconnecting.
        sent_disconnect = client.disconnect() == mqtt.MQTT_ERR_SUCCESS
        # loop_stop() joins paho's thread without a timeout, and while paho waits out a
        # reconnect backoff that takes up to 1 s; so join in a helper thread with a bound,
        # and only wait at all if there is a DISCONNECT to flush.
        stopper = threading.Thread(
            target=client.loop_stop, name="vehicle-data-sender-stopper", daemon=True
        )
        stopper.start()
        if sent_disconnect:
            stopper.join(max(0.0, deadline - self._clock()))
        publisher_done = self._publisher is None or not self._publisher.is_alive()
        return publisher_done and (not sent_disconnect or not stopper.is_alive())

    # -- publisher thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._publish_on_schedule()
        except BaseException as exc:
            self._failure = exc
            logger.exception("publisher stopped by an unexpected error")

    def _publish_on_schedule(self) -> None:
        if not self._wait_for_first_connection():
            return
        interval = self._config.interval
        anchor = self._clock()
        tick = 0
        while True:
            self._publish_if_connected()
            tick += 1
            now = self._clock()
            if anchor + tick * interval <= now:
                # Fell behind (suspended, or a slow publish): skip to the next future tick
                # on the same grid instead of publishing a burst.
                tick = math.floor((now - anchor) / interval) + 1
            due = anchor + tick * interval
            # Event.wait may wake a hair early; never publish before the tick is due.
            while (remaining := due - self._clock()) > 0:
                if self._stopping.wait(remaining):
                    return
            if self._stopping.is_set():
                return

    def _wait_for_first_connection(self) -> bool:
        while not self._stopping.is_set():
            if self._connected.is_set():
                return True
            self._wake.wait()
            self._wake.clear()
        return False

    def _publish_if_connected(self) -> None:
        if not self._connected.is_set():
            return
        value = self._wave.peek()
        info = self._client.publish(
            self._config.topic, str(value).encode("ascii"), qos=0, retain=False
        )
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._wave.advance()
            self.published += 1
        else:
            logger.debug("value %d not published: %s", value, mqtt.error_string(info.rc))

    # -- paho callbacks (network thread) ------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._mqtt.is_current(client):
            return  # a client replaced by the 3.1.1 fallback
        if reason_code.is_failure:
            if self._mqtt.fall_back(client, reason_code):
                return
            logger.warning(
                "broker %s:%d refused the connection: %s",
                self._config.broker.host,
                self._config.broker.port,
                reason_code,
            )
            return
        self._failed_attempts = 0
        logger.info("connected to %s:%d", self._config.broker.host, self._config.broker.port)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if not self._mqtt.is_current(client):
            return
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected:
            return
        if self._stopping.is_set():
            logger.info(
                "disconnected from %s:%d", self._config.broker.host, self._config.broker.port
            )
        else:
            logger.warning(
                "lost connection to %s:%d (%s); reconnecting",
                self._config.broker.host,
                self._config.broker.port,
                reason_code,
            )

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._failed_attempts += 1
        # One warning per outage; the retries with backoff only at debug level.
        level = logging.WARNING if self._failed_attempts == 1 else logging.DEBUG
        logger.log(
            level,
            "cannot connect to %s:%d; retrying with backoff of %d..%d s",
            self._config.broker.host,
            self._config.broker.port,
            self._config.reconnect_min_delay,
            self._config.reconnect_max_delay,
        )
