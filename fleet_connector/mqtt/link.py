"""The connector's MQTT side: session, subscriptions, incoming requests, replies, presence.

paho has no thread here: the connector's loop (fleet_connector/loop.py) drives it. Its
callbacks only turn messages into :class:`Request` objects and hand them on; nothing here
waits for Ankaios.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.loop import Loop
from fleet_connector.mqtt.broker import BrokerSettings, FallbackClient
from fleet_connector.mqtt.takeover import SessionWatch
from fleet_connector.mqtt.topics import MAX_REQUEST_ID_BYTES, Topics
from fleet_connector.requests.handler import Request

log = logging.getLogger(__name__)

QOS = 1
# QoS 1 messages on their way to the broker at once (see _new_client).
MAX_INFLIGHT = 1000
# W3C Trace Context, carried as MQTT 5 user properties from a request to all it causes.
TRACE_PROPERTIES = ("traceparent", "tracestate")
# Linux holds a corked socket's data until it is uncorked (see MqttLink.together).
_TCP_CORK: int = getattr(socket, "TCP_CORK", 3)
# How often paho's housekeeping (keepalive pings, retries) runs; what its own thread does.
HOUSEKEEPING_INTERVAL = 1.0
# Reconnect backoff after the connection was lost or refused (paho's defaults for its thread).
RECONNECT_MIN_DELAY = 1.0
RECONNECT_MAX_DELAY = 30.0


class MqttLink:
    """One persistent MQTT session for one vehicle.

    The session survives restarts (stable client id, clean start off) so that requests
    published while the car is offline are delivered once it is back. Requests are
    acknowledged only after their reply is handed to the client, so a request the
    connector could not answer before it stopped is delivered again.

    The client has no thread of its own: ``loop`` drives it (connecting, reading, writing,
    keepalive), so requests are taken in and answered on the loop's thread.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        topics: Topics,
        *,
        loop: Loop,
        client_id: str,
        session_expiry: int,
        on_request: Callable[[Request], None],
        presence: Callable[[str], dict[str, Any]],
        session: SessionWatch | None = None,
        watch: Sequence[str] = (),
        on_watched: Callable[[mqtt.MQTTMessage], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._topics = topics
        # Filters of topics the connector itself publishes (live states), read back to find
        # retained messages left by an earlier run; handed to on_watched off the request path.
        self._watch = list(watch)
        self._on_watched = on_watched
        self._on_connected = on_connected
        self._session_expiry = session_expiry
        self._on_request = on_request
        self._presence = presence
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stopping = False
        # Set by a refused CONNACK, so the disconnect that follows is not logged twice.
        self._refused = False
        self._client_id = client_id
        self.session = session or SessionWatch()
        self._cleared: dict[str, bool] = {}
        self._loop = loop
        self._next_attempt = 0.0
        self._delay: float | None = None
        self._next_housekeeping = 0.0
        # Subscriptions per SUBSCRIBE packet id until its SUBACK; those refused, until asked again.
        self._asked: dict[int, list[tuple[str, Any]]] = {}
        self._refused_subs: list[tuple[str, Any]] = []
        self._resubscribe_at = 0.0
        self._resubscribe_delay = 0.0
        self._together = False
        self._mqtt = FallbackClient(settings, self._new_client, self._connect)

    @property
    def _client(self) -> mqtt.Client:
        return self._mqtt.client

    @property
    def _settings(self) -> BrokerSettings:
        return self._mqtt.settings

    @property
    def _housekeeping_interval(self) -> float:
        # Often enough that a ping goes out well before the broker's 1.5 keepalives.
        return min(HOUSEKEEPING_INTERVAL, self._settings.keepalive / 2)

    @property
    def _v5(self) -> bool:
        return self._settings.protocol == "5"

    def _new_client(self, settings: BrokerSettings) -> mqtt.Client:
        client = settings.make_client(self._client_id, clean=False)
        client.manual_ack_set(True)
        # paho rescans its whole queue of waiting messages on every PUBACK while the
        # in-flight window is full: a burst of live states (2,000 workloads started at once)
        # behind the default window of 20 delays a reply queued after it by seconds.
        client.max_inflight_messages_set(MAX_INFLIGHT)
        # A defect in any callback is reported by paho instead of ending the loop's turn.
        client.suppress_exceptions = True
        client.on_log = _log_callback_failure
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        status = self._status_payload("offline")
        client.will_set(self._topics.status, status, qos=QOS, retain=True)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        # A publish from another thread (live states, log streams) wakes the loop to write it.
        client.on_socket_register_write = self._wake
        return client

    def _wake(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._loop.wake()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker confirmed the request subscriptions within ``timeout``."""
        return self._loop.wait(self._subscribed.is_set, timeout, self._subscribed)

    def wait_published(self, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        """Whether the broker acknowledged ``info``'s message within ``timeout``."""

        def published() -> bool:
            try:
                return info.is_published()
            except (RuntimeError, ValueError):
                return False  # never queued, or lost with the connection

        return self._loop.wait(published, timeout)

    def start(self) -> None:
        """Connects from the loop; retries until the broker is there."""
        self._mqtt.connect()
        self._loop.add_source(self)

    def _connect(self, client: mqtt.Client, settings: BrokerSettings) -> None:
        v5 = settings.protocol == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session_expiry
        client.connect_async(
            settings.host,
            settings.port,
            keepalive=settings.keepalive,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        # A new client (the 3.1.1 fallback) connects at the loop's next turn.
        self._next_attempt = 0.0
        self._delay = None
        self._loop.wake()

    def stop(self, timeout: float = 1.0) -> None:
        """Says offline (retained), then disconnects without the will.

        Call from the loop's thread (the connector hands the loop to its stopping thread).
        """
        self._stopping = True
        client = self._mqtt.close()
        if self._connected.is_set():
            self.wait_published(self.publish_status("offline"), timeout)
        client.disconnect()
        # The DISCONNECT goes out with the next write; paho closes the socket after it.
        self._loop.wait(lambda: client.socket() is None, timeout)

    # -- driven by the loop ---------------------------------------------------------------

    def prepare(self, now: float) -> tuple[int | None, bool, float]:
        client = self._client
        if client.socket() is None:
            if self._stopping:
                return None, False, math.inf
            if now < self._next_attempt:
                return None, False, self._next_attempt
            self._attempt(client, now)
        if client.want_write():
            client.loop_write()  # before sleeping: a reply queued this turn goes out now
        sock = client.socket()  # none after a DISCONNECT written or a failed write
        if sock is None:
            return None, False, self._next_attempt
        pending = getattr(sock, "pending", None)
        due = now if pending is not None and pending() else self._next_housekeeping
        return sock.fileno(), client.want_write(), due

    def handle(self, readable: bool, now: float) -> None:
        client = self._client
        sock = client.socket()
        if sock is None:
            return
        pending = getattr(sock, "pending", None)
        if readable or (pending is not None and pending()):
            client.loop_read()
        if client.socket() is not None and client.want_write():
            client.loop_write()
        if client.socket() is not None and now >= self._next_housekeeping:
            self._next_housekeeping = now + self._housekeeping_interval
            client.loop_misc()
            if self._refused_subs and now >= self._resubscribe_at and self._connected.is_set():
                refused, self._refused_subs = self._refused_subs, []
                self._subscribe(client, refused)

    def _attempt(self, client: mqtt.Client, now: float) -> None:
        """One connection attempt; the next one is scheduled in case it fails."""
        self._delay = (
            RECONNECT_MIN_DELAY
            if self._delay is None
            else min(self._delay * 2, RECONNECT_MAX_DELAY)
        )
        self._next_attempt = now + self._delay
        self._next_housekeeping = now + self._housekeeping_interval
        try:
            client.reconnect()
        except ssl.SSLError as e:
            # Unlike a broker that is not up yet, this needs someone to look at it.
            log.warning("MQTT TLS connection to %s failed: %s", self._settings.describe(), e)
        except Exception as e:  # refused, unreachable: try again later
            log.debug("MQTT connection to %s failed: %s", self._settings.describe(), e)

    def reply(self, request: Request, payload: str) -> None:
        """Publishes the reply, then acknowledges the request to the broker."""
        with self.together():
            self.answer(request, payload)
            self.ack(request)

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Packets queued inside go out at its end, in one TCP segment where they fit.

        A reply and the acknowledgement of its request (or a batch of them) are written at
        once instead of at the loop's next turn, and the broker is woken once for all (each
        send on loopback costs about as much as the broker's whole handling of the packet).
        """
        client = self._client
        sock = client.socket() if self._loop.in_loop and not self._together else None
        if sock is None:
            yield  # not the loop's thread, or inside an outer together()
            return
        self._together = True
        _cork(sock, True)
        try:
            yield
            if client.want_write():
                client.loop_write()
        finally:
            self._together = False
            _cork(sock, False)

    def answer(
        self, request: Request, payload: str, topic: str | None = None
    ) -> mqtt.MQTTMessageInfo:
        """Publishes a message for a request (its reply, outcome, log batches) on its reply
        topic (or ``topic``), with its correlation data and trace context (MQTT 5)."""
        properties = None
        if self._v5:
            trace = [(k, v) for k, v in request.user_properties if k in TRACE_PROPERTIES]
            if request.correlation_data is not None or trace:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                if request.correlation_data is not None:
                    properties.CorrelationData = request.correlation_data
                if trace:
                    properties.UserProperty = trace
        return self._client.publish(
            topic or request.reply_topic, payload, qos=QOS, properties=properties
        )

    def ack(self, request: Request) -> None:
        """Tells the broker the request is dealt with; until then it would redeliver it."""
        if request.mid is not None:
            self._client.ack(request.mid, QOS)

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """Publishes with QoS 1; MQTT 5 properties are dropped on a 3.1.1 connection."""
        return self._client.publish(
            topic, payload, qos=QOS, retain=retain, properties=properties if self._v5 else None
        )

    @property
    def v5(self) -> bool:
        return self._v5

    def publish_status(self, status: str) -> mqtt.MQTTMessageInfo:
        return self._client.publish(
            self._topics.status, self._status_payload(status), qos=QOS, retain=True
        )

    def _subscriptions(self) -> list[tuple[str, Any]]:
        """Every filter with its QoS (3.1.1) or subscription options (MQTT 5)."""
        if not self._v5:
            return [(f, QOS) for f in [*self._topics.subscriptions(), *self._watch]]
        # Retain as published: a retained request must be recognisable as one even when
        # it arrives live. No local: the empty publish that clears one is not a request.
        options = SubscribeOptions(qos=QOS, noLocal=True, retainAsPublished=True)
        # Our own live-state publications need not come back; retained ones still do.
        own = SubscribeOptions(qos=QOS, noLocal=True)
        return [(f, options) for f in self._topics.subscriptions()] + [
            (f, own) for f in self._watch
        ]

    def _subscribe(self, client: mqtt.Client, subscriptions: list[tuple[str, Any]]) -> None:
        result, mid = client.subscribe(subscriptions)
        if result == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._asked[mid] = subscriptions
        else:  # not sent (connection gone): the next connect subscribes to everything
            log.debug("MQTT subscribe not sent: %s", result)

    def _status_payload(self, status: str) -> str:
        return json.dumps(self._presence(status))

    # -- paho callbacks (the loop's thread) ---------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self._mqtt.is_current(client):
            return  # a client replaced by the 3.1.1 fallback
        self._refused = reason.is_failure
        if reason.is_failure:
            if not self._mqtt.fall_back(client, reason):
                log.warning("MQTT broker refused the connection: %s", reason)
            return
        self._delay = None
        self._connected.set()
        self.session.connected()
        log.info(
            "MQTT connected to %s (session %s)",
            self._settings.describe(),
            "resumed" if flags.session_present else "new",
        )
        # Subscribe on every connect: a broker that lost the session lost the subscriptions.
        self._subscribe(client, self._subscriptions())
        self.publish_status("online")
        if self._on_connected is not None:
            self._on_connected()

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self._mqtt.is_current(client):
            return
        if not self._stopping:
            if self._connected.is_set():
                log.warning("MQTT connection lost: %s; reconnecting", reason)
                self.session.lost(getattr(reason, "value", None), self._client_id)
            elif not self._refused:
                log.warning(
                    "MQTT broker %s closed the connection before accepting it: %s",
                    self._settings.describe(),
                    reason,
                )
        self._refused = False
        self._connected.clear()
        self._subscribed.clear()
        self._asked.clear()  # the next connect subscribes to everything again
        self._refused_subs.clear()
        # paho's own thread would wait before reconnecting too; so does the loop.
        delay = self._delay or RECONNECT_MIN_DELAY
        self._next_attempt = time.monotonic() + delay

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        if not self._mqtt.is_current(client):
            return
        asked = self._asked.pop(mid, [])
        refused = [s for s, r in zip(asked, reasons, strict=False) if r.is_failure]
        if refused:
            # A refusal can be the broker's passing state (NATS refuses a subscription whose
            # JetStream consumer it could not create within its 4 s): asked again until granted.
            self._refused_subs.extend(refused)
            self._resubscribe_delay = min(
                self._resubscribe_delay * 2 if self._resubscribe_delay else RECONNECT_MIN_DELAY,
                RECONNECT_MAX_DELAY,
            )
            self._resubscribe_at = time.monotonic() + self._resubscribe_delay
            log.error(
                "MQTT broker refused subscriptions (%s): %s; asking again in %g s",
                ", ".join(str(r) for r in reasons if r.is_failure),
                ", ".join(f for f, _ in refused),
                self._resubscribe_delay,
            )
        elif not self._asked and not self._refused_subs:
            self._resubscribe_delay = 0.0
            self._subscribed.set()

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # A message that cannot be taken in is logged and acknowledged, so that the broker
        # does not hand it over again at every reconnect.
        try:
            self._take(client, msg)
        except Exception:
            log.exception("incoming message on %.200r could not be taken in; dropped", msg.topic)
            with contextlib.suppress(Exception):
                client.ack(msg.mid, msg.qos)

    def _take(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        parsed = self._topics.parse_request(msg.topic)
        if parsed is None:
            # Only our subscriptions deliver here; anything else is acknowledged and ignored.
            client.ack(msg.mid, msg.qos)
            if self._on_watched is not None:
                self._on_watched(msg)
            return
        if msg.retain and not msg.payload:
            client.ack(msg.mid, msg.qos)  # a retained request being cleared; nothing to do
            return
        if not msg.payload and self._cleared.pop(msg.topic, False):
            # MQTT 3.1.1 has no "no local": our own clearing publish comes back live.
            client.ack(msg.mid, msg.qos)
            return
        props = msg.properties if self._v5 else None
        correlation = getattr(props, "CorrelationData", None)
        response_topic = getattr(props, "ResponseTopic", None)
        expiry = getattr(props, "MessageExpiryInterval", None)
        received = time.monotonic()
        request = Request(
            operation=parsed.operation,
            payload=bytes(msg.payload),
            topic=msg.topic,
            reply_topic=self._topics.response(parsed.operation, parsed.request_id),
            request_id=parsed.request_id or _log_id(correlation),
            has_topic_id=parsed.request_id is not None,
            correlation_data=correlation,
            received=received,
            expires=received + expiry if expiry is not None else None,
            mid=msg.mid if msg.qos > 0 else None,
            follow=parsed.follow,
            user_properties=list(getattr(props, "UserProperty", None) or []),
        )
        if msg.retain:
            request.problem = RequestError(
                ErrorCode.INVALID_REQUEST,
                "retained requests are not carried out; publish without -r",
            )
            self._clear_retained(client, msg.topic)
        if len((parsed.request_id or "").encode()) > MAX_REQUEST_ID_BYTES:
            request.reply_topic = self._topics.response(parsed.operation)
            request.request_id = (parsed.request_id or "")[:32] + "..."
            request.problem = RequestError(
                ErrorCode.INVALID_REQUEST,
                f"the request id has more than {MAX_REQUEST_ID_BYTES} bytes",
            )
        elif response_topic is not None:
            if self._topics.owns(response_topic):
                request.reply_topic = response_topic
            else:
                request.problem = RequestError(
                    ErrorCode.INVALID_REQUEST,
                    f"response topic {response_topic!r} is not under {self._topics.base}/",
                )
        self._on_request(request)

    def _clear_retained(self, client: mqtt.Client, topic: str) -> None:
        """Removes a retained request from the broker, so it is not delivered at every start.

        Where the ACL refuses the car this write the broker drops it silently (MQTT 3.1.1)
        or says so in the PUBACK; the request is still refused at each delivery.
        """
        log.warning("request on %.200s was published retained; refusing it and clearing it", topic)
        if not self._v5:
            if len(self._cleared) > 1000:
                self._cleared.clear()
            self._cleared[topic] = True
        client.publish(topic, b"", qos=QOS, retain=True)


def _cork(sock: Any, on: bool) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, int(on))


def _log_callback_failure(client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
    # paho's other messages (e.g. its loop noticing a closed socket) are routine.
    if text.startswith("Caught exception in"):
        log.error("MQTT client: %s", text)


def _log_id(correlation: bytes | None) -> str:
    """An id for the log line of a request that brought none in its topic."""
    if correlation:
        return "corr-" + correlation[:16].hex()
    return "auto-" + uuid.uuid4().hex[:8]
