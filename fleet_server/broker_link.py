"""fleet-server's one MQTT connection, bridged to asyncio.

paho runs its network loop on a thread of its own. Messages are handed to the inventory on
that thread (it only parses and queues them), and to waiting requests through the event
loop. Subscriptions are awaited (SUBACK) and re-made after a reconnect; :attr:`on_connected`
lets the inventory read the retained topics again after each one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleet_connector.mqtt.broker import BrokerSettings

log = logging.getLogger(__name__)

QOS = 1
MessageHandler = Callable[[str, bytes, bool], None]


class LinkError(Exception):
    """The broker cannot be reached, refused us, or did not answer; one line."""


class BrokerLink:
    def __init__(self, settings: BrokerSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.on_message: MessageHandler | None = None
        """Called on paho's thread for every message not routed to a waiter."""
        self.on_connected: Callable[[], Awaitable[None]] | None = None
        """Run on the event loop after every successful (re)connect."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._connected = asyncio.Event()
        self._first: asyncio.Future[Any] | None = None
        self._lock = threading.Lock()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._early: dict[int, Any] = {}
        self._persistent: list[str] = []
        self._routes: dict[str, Callable[[bytes], None]] = {}
        self._background: set[asyncio.Future[None]] = set()

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected()

    async def start(self, timeout: float = 10.0) -> None:
        """Connects (MQTT 5, else 3.1.1 where allowed).

        A broker that refuses us (credentials, protocol) raises LinkError; one that does not
        answer within ``timeout`` is tried again in the background (paho reconnects), so the
        server serves its inventory from the database meanwhile and /readyz says why not.
        """
        self._loop = asyncio.get_running_loop()
        for _attempt in range(2):
            self._first = self._loop.create_future()
            client = self.settings.make_client(self.client_id, clean=True)
            client.max_inflight_messages_set(1000)
            client.reconnect_delay_set(min_delay=1, max_delay=10)
            client.on_connect = self._handle_connect
            client.on_disconnect = self._handle_disconnect
            client.on_message = self._handle_message
            client.on_subscribe = self._handle_ack
            client.on_unsubscribe = self._handle_ack
            client.on_connect_fail = self._handle_connect_fail
            self._client = client
            try:
                client.connect_async(
                    self.settings.host, self.settings.port, self.settings.keepalive
                )
            except (OSError, ValueError) as e:
                raise LinkError(f"cannot reach broker {self.settings.describe()}: {e}") from None
            client.loop_start()
            try:
                reason = await asyncio.wait_for(asyncio.shield(self._first), timeout)
            except TimeoutError:
                log.warning(
                    "broker %s did not answer within %gs; trying on in the background",
                    self.settings.describe(),
                    timeout,
                )
                return
            if reason is None:
                log.warning(
                    "broker %s is not reachable; trying on in the background",
                    self.settings.describe(),
                )
                return
            if not reason.is_failure:
                return
            self.stop()
            fallback = self.settings.falls_back(reason)
            if fallback is None:
                raise LinkError(f"broker {self.settings.describe()} refused us: {reason}")
            self.settings = fallback
        raise LinkError(f"broker {self.settings.describe()} refused us")

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(
        self, filters: Sequence[str], *, persistent: bool = False, retained: bool = True
    ) -> list[str]:
        """Subscribes and awaits the SUBACK; returns the refused filters.

        ``persistent`` ones are made again after a reconnect (our session is clean).
        ``retained=False`` asks the broker (MQTT 5 retain handling 2) not to send the
        retained messages matching them: mosquitto 2.0 sends them to a new shared
        subscription too, which would hand the server every retained message twice at start.
        """
        if self.settings.protocol == "5":
            handling = (
                SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE
                if retained
                else SubscribeOptions.RETAIN_DO_NOT_SEND
            )
            topics: list[tuple[str, Any]] = [
                (f, SubscribeOptions(qos=QOS, retainHandling=handling)) for f in filters
            ]
        else:
            topics = [(f, QOS) for f in filters]
        reasons = await self._await_ack(lambda c: c.subscribe(topics))
        refused = [f for f, r in zip(filters, reasons, strict=False) if _failed(r)]
        if persistent:
            self._persistent.extend(f for f in filters if f not in refused)
        return refused

    async def unsubscribe(self, filters: Sequence[str]) -> None:
        await self._await_ack(lambda c: c.unsubscribe(list(filters)))

    async def _await_ack(self, send: Callable[[mqtt.Client], tuple[int, int | None]]) -> Any:
        client = self._client
        if client is None or self._loop is None:
            raise LinkError("not connected to the broker")
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._lock:
            result, mid = send(client)
            if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise LinkError(f"the broker is not reachable: {mqtt.error_string(result)}")
            if mid in self._early:
                future.set_result(self._early.pop(mid))
            else:
                self._acks[mid] = future
        try:
            return await asyncio.wait_for(future, 10)
        except TimeoutError:
            with self._lock:
                self._acks.pop(mid, None)
            raise LinkError("the broker did not confirm within 10s") from None

    # -- routes: replies to one request ----------------------------------------------------

    def route(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Messages on exactly ``topic`` go to ``handler`` (on the event loop)."""
        self._routes[topic] = handler

    def unroute(self, topic: str) -> None:
        self._routes.pop(topic, None)

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        retain: bool = False,
    ) -> None:
        client = self._client
        if client is None:
            raise LinkError("not connected to the broker")
        properties = None
        if self.settings.protocol == "5" and (response_topic or correlation):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                properties.ResponseTopic = response_topic
            if correlation:
                properties.CorrelationData = correlation
        info = client.publish(topic, payload, qos=QOS, retain=retain, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise LinkError(f"publishing to {topic} failed: {mqtt.error_string(info.rc)}")

    # -- paho callbacks (network thread) ---------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is not self._client:
            return
        self._call(self._connected_on_loop, reason)

    def _connected_on_loop(self, reason: Any) -> None:
        first = self._first
        if first is not None and not first.done():
            first.set_result(reason)  # start() may be waiting for it
        if reason.is_failure:
            log.warning("broker %s refused us: %s", self.settings.describe(), reason)
            return
        self._connected.set()
        log.info("MQTT connected to %s", self.settings.describe())
        if self._persistent and self._client is not None:
            # A clean session: the broker forgot our subscriptions with the connection.
            filters = list(self._persistent)
            self._persistent.clear()
            self._spawn(self._resubscribe(filters))
        if self.on_connected is not None:
            self._spawn(self.on_connected())

    def _spawn(self, work: Awaitable[None]) -> None:
        # Referenced until done: the loop keeps only weak references to tasks.
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resubscribe(self, filters: list[str]) -> None:
        try:
            await self.subscribe(filters, persistent=True)
        except LinkError as e:
            log.warning("subscribing again failed: %s", e)

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if client is self._client:
            self._call(self._unreachable)

    def _unreachable(self) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(None)  # start() need not wait: paho tries on

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if client is self._client:
            log.warning("MQTT connection lost: %s", reason)
            self._call(self._connected.clear)

    def _handle_ack(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        with self._lock:
            future = self._acks.pop(mid, None)
            if future is None:
                self._early[mid] = list(reasons)
                return
        self._call(_settle, future, list(reasons))

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = bytes(msg.payload)
            handler = self._routes.get(msg.topic)
            if handler is not None:
                self._call(handler, payload)
            elif self.on_message is not None:
                self.on_message(msg.topic, payload, bool(msg.retain))
        except Exception:
            # One car's message must never end paho's thread, and with it the ingest.
            log.exception("message on %.200r could not be handled; ignored", msg.topic)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _failed(reason: Any) -> bool:
    if isinstance(reason, int):
        return reason >= 0x80
    return bool(reason.is_failure)


def new_request_id(instance: str) -> str:
    return f"fs-{instance}-{uuid.uuid4().hex[:16]}"
