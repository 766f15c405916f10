"""A prototype, for measurement only: the connector's request path in one thread, one loop.

``python -m bench.single_loop`` takes the connector's configuration (same flags and
environment). One ``selectors`` loop owns the MQTT socket (paho driven from outside with
``loop_read``/``loop_write``/``loop_misc``, no ``loop_start``) and the control interface's
input FIFO. A request is checked and written to Ankaios from paho's callback; the answer is
read when the FIFO is readable and published, and the request acknowledged, from the same
thread: no queue, no worker, no reader thread, so no hand-off between threads at all.

It does the same work per request as the connector, with the connector's own pieces
(topics, ``Request``, ``ReplyCache``, field-mask and manifest parsing, the policy,
``Ankaios._content``, the frame codec, one log line per request), so the difference in the
latency benchmark is what the threads cost. What it leaves out, because the benchmark
does not exercise it: reconnecting to Ankaios, the boot wait, ``BUSY`` (no queue to fill),
``EXPIRED``, presence updates, the 3.1.1 fallback, timeouts of lost answers. It is not a
product and nothing outside ``bench/`` uses it. The connector itself now runs on one loop
(fleet_connector/loop.py) with all of those; this prototype stays as the floor, what one
loop costs with almost none of the connector's checks.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import sys
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from ankaios_sdk import Response, ResponseType
from ankaios_sdk._protos import _ank_base, _control_api
from ankaios_sdk.utils import ANKAIOS_VERSION
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleet_connector import config as configuration
from fleet_connector.ankaios.client import Ankaios
from fleet_connector.ankaios.control_interface import decode_frames, encode_varint
from fleet_connector.ankaios.manifest import Manifest, parse_manifest
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.mqtt.replies import ReplyCache
from fleet_connector.mqtt.topics import Operation, Topics
from fleet_connector.requests.handler import Request, parse_field_masks

log = logging.getLogger("bench.single_loop")


class SingleLoop:
    def __init__(self, config: configuration.Config) -> None:
        self.config = config
        self.topics = Topics(config.vin)
        self.replies = ReplyCache()
        self.pending: dict[str, Request] = {}
        self.accepted = False
        self.buffer = bytearray()
        ci = config.control_interface
        self.in_fd = os.open(ci / "input", os.O_RDONLY | os.O_NONBLOCK)
        self.out_fd = os.open(ci / "output", os.O_WRONLY | os.O_NONBLOCK)
        self.out_buffer = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.in_fd, selectors.EVENT_READ, "fifo")
        hello = _control_api.ToAnkaios(hello=_control_api.Hello(protocolVersion=ANKAIOS_VERSION))
        self._write_frame(hello.SerializeToString())
        self.client = config.broker.make_client(config.client_id, clean=False)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.stopping = False

    # -- MQTT side ---------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics.subscriptions()])
        client.publish(self.topics.status, self._presence("online"), qos=1, retain=True)

    def _presence(self, status: str) -> str:
        return json.dumps(
            {
                "status": status,
                "vin": self.config.vin,
                "ankaios": "connected" if self.accepted else "disconnected",
            }
        )

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = self.topics.parse_request(msg.topic)
        if parsed is None:
            client.ack(msg.mid, msg.qos)
            return
        correlation = getattr(msg.properties, "CorrelationData", None)
        request = Request(
            operation=parsed.operation,
            payload=bytes(msg.payload),
            topic=msg.topic,
            reply_topic=self.topics.response(parsed.operation, parsed.request_id),
            request_id=parsed.request_id or "auto-" + uuid.uuid4().hex[:8],
            has_topic_id=parsed.request_id is not None,
            correlation_data=correlation,
            mid=msg.mid if msg.qos > 0 else None,
        )
        admitted = self.replies.admit(request)
        if admitted is False:
            client.ack(msg.mid, msg.qos)
            return
        if isinstance(admitted, str):
            self._reply(request, admitted, None)
            return
        try:
            self.config.policy.check_payload(request.payload)
            if request.operation is Operation.STATE:
                masks = parse_field_masks(request.payload)
                self.config.policy.check_field_masks(masks)
                ank = _ank_base.Request(
                    completeStateRequest=_ank_base.CompleteStateRequest(fieldMask=masks)
                )
            else:
                manifest = parse_manifest(request.payload)
                deleting = request.operation is Operation.DELETE
                self.config.policy.check_manifest(manifest, deleting=deleting)
                state = Manifest.delete_state() if deleting else manifest.apply_state()
                ank = _ank_base.Request(
                    updateStateRequest=_ank_base.UpdateStateRequest(
                        newState=state, updateMask=manifest.masks
                    )
                )
        except RequestError as e:
            self._reply(request, e.to_json(), e.code)
            return
        ank.requestId = str(uuid.uuid4())
        self.pending[ank.requestId] = request
        self._write_frame(_control_api.ToAnkaios(request=ank).SerializeToString())

    def _reply(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        self.replies.done(request, reply, code)
        properties = None
        if request.correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = request.correlation_data
        self.client.publish(request.reply_topic, reply, qos=1, properties=properties)
        if request.mid is not None:
            self.client.ack(request.mid, 1)
        log.info(
            "request id=%s topic=%s outcome=%s duration_ms=%.1f",
            request.request_id,
            request.topic,
            code or "OK",
            (time.monotonic() - request.received) * 1000,
        )

    # -- Ankaios side ------------------------------------------------------------------

    def _write_frame(self, payload: bytes) -> None:
        self.out_buffer += encode_varint(len(payload)) + payload
        self._flush()

    def _flush(self) -> None:
        # Never block on the FIFO: Ankaios may be waiting for us to read its answers.
        while self.out_buffer:
            try:
                written = os.write(self.out_fd, self.out_buffer)
            except BlockingIOError:
                break
            del self.out_buffer[:written]
        registered = "fifo_out" in (k.data for k in self.selector.get_map().values())
        if self.out_buffer and not registered:
            self.selector.register(self.out_fd, selectors.EVENT_WRITE, "fifo_out")
        elif not self.out_buffer and registered:
            self.selector.unregister(self.out_fd)

    def _fifo_readable(self) -> None:
        chunk = os.read(self.in_fd, 1 << 20)
        if not chunk:
            raise SystemExit("Ankaios closed the control interface")
        self.buffer.extend(chunk)
        for frame in decode_frames(self.buffer):
            response = Response(frame)
            if response.content_type == ResponseType.CONTROL_INTERFACE_ACCEPTED:
                self.accepted = True
                if self.client.is_connected():
                    self.client.publish(self.topics.status, self._presence("online"), qos=1)
                continue
            request = self.pending.pop(response.get_request_id(), None)
            if request is None:
                continue
            expected = (
                ResponseType.COMPLETE_STATE
                if request.operation is Operation.STATE
                else ResponseType.UPDATE_STATE_SUCCESS
            )
            try:
                reply = json.dumps(Ankaios._content(response, expected).to_dict())
                self._reply(request, reply, None)
            except RequestError as e:
                self._reply(request, e.to_json(), e.code)

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        settings = self.config.broker
        self.client.connect(settings.host, settings.port, keepalive=settings.keepalive)
        selector = self.selector
        sock = self.client.socket()
        assert sock is not None, "connect() opened the socket"
        selector.register(sock, selectors.EVENT_READ, "mqtt")
        last_misc = time.monotonic()
        while not self.stopping:
            if self.client.want_write():
                self.client.loop_write()
            for key, _ in selector.select(timeout=1.0):
                if key.data == "mqtt":
                    self.client.loop_read(max_packets=64)
                elif key.data == "fifo_out":
                    self._flush()
                else:
                    self._fifo_readable()
                if self.client.want_write():
                    self.client.loop_write()
            if time.monotonic() - last_misc >= 1.0:
                self.client.loop_misc()
                last_misc = time.monotonic()
        self.client.publish(self.topics.status, self._presence("offline"), qos=1, retain=True)
        self.client.loop_write()
        self.client.disconnect()


def main() -> int:
    config = configuration.load(sys.argv[1:], os.environ)
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loop = SingleLoop(config)

    def request_stop(signum: int, frame: Any) -> None:
        loop.stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
