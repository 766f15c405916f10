"""One MQTT connection for a group of simulated cars: paho-mqtt driven by asyncio.

paho has no thread here: its socket is watched with the event loop's ``add_reader`` and
``add_writer`` (paho's socket callbacks say when), and the fleet's housekeeping calls
``loop_misc`` for keepalive. Everything runs on the loop's one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleet_sim.options import Options
from fleet_sim.protocol import (
    INVALID_REQUEST,
    MAX_REQUEST_ID_BYTES,
    POLICY_DENIED,
    Request,
    SimError,
    owns,
    parse_topic,
    response_topic,
    subscriptions,
)

if TYPE_CHECKING:
    from fleet_sim.car import Car

log = logging.getLogger(__name__)
_paho_log = logging.getLogger("fleet_sim.paho")
_paho_log.setLevel(logging.WARNING)

QOS = 1
TRACE_PROPERTIES = ("traceparent", "tracestate")
SESSION_EXPIRY = 300
RECONNECT_MIN = 1.0
RECONNECT_MAX = 30.0
# Filters per SUBSCRIBE packet while cars come online.
FILTERS_PER_SUBSCRIBE = 300


class Connection:
    """Cars sharing one client; ``take`` hands their requests to the fleet."""

    def __init__(
        self,
        options: Options,
        loop: asyncio.AbstractEventLoop,
        cars: list[Car],
        *,
        take: Callable[[Connection, Car, Request], None],
        presence: Callable[[Car, str], str],
        online: Callable[[Connection, list[Car]], None],
        lost: Callable[[Connection], None],
    ) -> None:
        self.options = options
        self.loop = loop
        self.cars = {car.vin: car for car in cars}
        self.order = cars
        self._take = take
        self._presence = presence
        self._online = online
        self._lost = lost
        self.v5 = options.protocol == "5"
        self.client_id = f"{options.client_prefix}-{cars[0].vin}"
        self.single = len(cars) == 1
        self.unacked = 0
        self.waiting = 0
        """Requests of its cars waiting to be carried out (bounded by --connection-queue)."""
        self.connected = False
        self.stopping = False
        self.hold_until = 0.0
        """No reconnect before this (a churned single-car connection stays away)."""
        self._next_attempt = 0.0
        self._delay = RECONNECT_MIN
        self._cleared: set[str] = set()
        self._ramp: list[Car] = []
        self._ramp_waiting = False
        self._drained: asyncio.Future[None] | None = None
        self.client = self._new_client()

    # -- client ---------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        protocol = mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=None if self.v5 else True,
        )
        if self.options.username:
            client.username_pw_set(self.options.username, self.options.password)
        # Unlimited in flight: a ramp of 1,000 cars is 3,000 retained messages at once.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        # A defect in a callback is logged by paho ("Caught exception in ...", ERROR) instead
        # of ending the loop's turn. A logger, not on_log: paho formats a line for on_log
        # for every packet, a logger only when its level is on.
        client.suppress_exceptions = True
        client.enable_logger(_paho_log)
        if self.single:
            # A car of its own: the connection's Will is the car's offline presence.
            car = self.order[0]
            will_topic = f"vehicle/{car.vin}/status"
            will = self._presence(car, "offline")
        else:
            # A shared connection cannot mark each car offline; its Will says which cars
            # it carried, on a topic of the simulator's own.
            will_topic = self.status_topic
            will = json.dumps(self._status("offline"))
        client.will_set(will_topic, will, qos=QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        return client

    @property
    def status_topic(self) -> str:
        return f"fleet-sim/{self.client_id}/status"

    def _status(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "cars": len(self.order),
            "first_vin": self.order[0].vin,
            "last_vin": self.order[-1].vin,
        }

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_reader(sock, self._read)

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, self._write)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _read(self) -> None:
        self.client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()

    # -- connecting -------------------------------------------------------------------------

    def connect(self) -> None:
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY
        self.client.connect_async(
            self.options.host,
            self.options.port,
            keepalive=self.options.keepalive,
            clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY if self.v5 else True,
            properties=properties,
        )
        self._attempt(time.monotonic())

    def _attempt(self, now: float) -> None:
        self._next_attempt = now + self._delay
        self._delay = min(self._delay * 2, RECONNECT_MAX)
        try:
            self.client.reconnect()
        except OSError as e:  # refused, unreachable: again later
            log.debug("connection %s: %s", self.client_id, e)
        except Exception:
            log.exception("connection %s: connecting failed", self.client_id)

    def tick(self, now: float) -> None:
        """Housekeeping, about once a second: keepalive, reconnects."""
        if self.client.socket() is None:
            if not self.stopping and now >= max(self._next_attempt, self.hold_until):
                self._attempt(now)
            return
        self.client.loop_misc()

    def drop(self) -> None:
        """Ends the connection without a DISCONNECT, as a car that loses its network: the
        broker publishes the Will."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("connection %s refused: %s", self.client_id, reason)
            return
        self.connected = True
        self._delay = RECONNECT_MIN
        if not self.single:
            self.publish(self.status_topic, json.dumps(self._status("online")), retain=True)
        # Every connect subscribes again and says online again: a broker that lost the
        # session lost the subscriptions, and presence may say offline (the Will).
        self._ramp = list(self.order)
        self._ramp_waiting = False
        self.loop.call_soon(self._ramp_step)

    def _ramp_step(self) -> None:
        if not self.connected or self.stopping:
            return
        step, self._ramp = self._ramp[: self.options.ramp], self._ramp[self.options.ramp :]
        filters = [f for car in step for f in subscriptions(car.vin)]
        for i in range(0, len(filters), FILTERS_PER_SUBSCRIBE):
            chunk = filters[i : i + FILTERS_PER_SUBSCRIBE]
            if self.v5:
                options = SubscribeOptions(qos=QOS, noLocal=True, retainAsPublished=True)
                self.client.subscribe([(f, options) for f in chunk])
            else:
                self.client.subscribe([(f, QOS) for f in chunk])
        self._online(self, step)
        if not self._ramp:
            return
        if self.unacked < self.options.connection_backlog:
            self.loop.call_soon(self._ramp_step)
        else:
            self._ramp_waiting = True

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            # An ACL that does not let the simulator read its cars' request topics: those
            # cars never hear a request, which a load test must not take for silence.
            log.warning(
                "connection %s: the broker refused %d subscriptions (%s)",
                self.client_id,
                len(refused),
                refused[0],
            )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was = self.connected
        self.connected = False
        self.unacked = 0
        self._next_attempt = max(self._next_attempt, time.monotonic() + self._delay)
        if was and not self.stopping:
            self._lost(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        info = self.client.publish(topic, payload, qos=QOS, retain=retain, properties=properties)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.unacked += 1

    def answer(self, request: Request, payload: str, topic: str | None = None) -> None:
        """A message for a request on its reply topic, with its correlation data and trace
        context (MQTT 5), as the connector sends them."""
        properties = None
        if self.v5:
            trace = [(k, v) for k, v in request.user_properties if k in TRACE_PROPERTIES]
            if request.correlation is not None or trace:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                if request.correlation is not None:
                    properties.CorrelationData = request.correlation
                if trace:
                    properties.UserProperty = trace
        self.publish(topic or request.reply_topic, payload, properties=properties)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        self.unacked = max(0, self.unacked - 1)
        if self._ramp_waiting and self.unacked < self.options.connection_backlog // 2:
            self._ramp_waiting = False
            self.loop.call_soon(self._ramp_step)
        if self.unacked == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self, timeout: float) -> None:
        """Waits until the broker has acknowledged everything published so far."""
        if self.unacked == 0 or not self.connected:
            return
        self._drained = self.loop.create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained, timeout)

    @property
    def ramping(self) -> bool:
        return bool(self._ramp)

    async def close(self, timeout: float) -> None:
        """Offline presence goes out (the caller published it); then a clean DISCONNECT,
        so the broker sends no Will."""
        await self.drain(timeout)
        self.stopping = True
        if self.client.socket() is None:
            return
        if not self.single:
            self.publish(self.status_topic, json.dumps(self._status("offline")), retain=True)
            await self.drain(timeout)
        self._drained = self.loop.create_future()
        self.client.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained, timeout)

    # -- requests -----------------------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        car = self.cars.get(parsed.vin) if parsed is not None else None
        if parsed is None or car is None:
            return
        payload = bytes(msg.payload)
        if not payload and (msg.retain or msg.topic in self._cleared):
            self._cleared.discard(msg.topic)  # a retained request being cleared
            return
        props = msg.properties if self.v5 else None
        correlation = getattr(props, "CorrelationData", None)
        reply_to = getattr(props, "ResponseTopic", None)
        expiry = getattr(props, "MessageExpiryInterval", None)
        request = Request(
            vin=car.vin,
            operation=parsed.operation,
            request_id=parsed.request_id,
            topic=msg.topic,
            reply_topic=response_topic(car.vin, parsed.operation, parsed.request_id),
            payload=payload,
            follow=parsed.follow,
            correlation=correlation,
            user_properties=list(getattr(props, "UserProperty", None) or []),
            cancel=parsed.cancel,
            expires=time.time() + expiry if expiry is not None else None,
        )
        if parsed.cancel:
            if not msg.retain:
                self._take(self, car, request)
            return
        if msg.retain:
            request.problem = SimError(
                INVALID_REQUEST, "retained requests are not carried out; publish without -r"
            )
            if not self.v5:
                if len(self._cleared) > 1000:
                    self._cleared.clear()
                self._cleared.add(msg.topic)
            self.publish(msg.topic, b"", retain=True)
        if len((parsed.request_id or "").encode()) > MAX_REQUEST_ID_BYTES:
            request.reply_topic = response_topic(car.vin, parsed.operation, None)
            request.problem = SimError(
                INVALID_REQUEST, f"the request id has more than {MAX_REQUEST_ID_BYTES} bytes"
            )
        elif reply_to is not None:
            if owns(car.vin, reply_to):
                request.reply_topic = reply_to
            else:
                request.problem = SimError(
                    INVALID_REQUEST, f"response topic {reply_to!r} is not under vehicle/{car.vin}/"
                )
        if request.problem is None and len(payload) > self.options.max_payload:
            request.problem = SimError(
                POLICY_DENIED,
                f"the payload has {len(payload)} bytes; the limit is "
                f"{self.options.max_payload} (policy rule maxPayloadSize)",
            )
        self._take(self, car, request)
