"""Brokers that misbehave in one way, made from a real one: only MQTT 3.1.1 (protocol
fallback tests), or refusing subscriptions (a busy NATS cluster)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import BinaryIO

from testkit.broker import Broker

MQTT5 = 5
# CONNACK with the 3.1.1 return code 1, "unacceptable protocol version".
REFUSE_PROTOCOL = b"\x20\x02\x00\x01"


class _Proxy:
    """Accepts connections on a free loopback port and serves each on a thread of its own;
    counts what it refused."""

    def __init__(self, upstream: Broker) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused = 0
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _count_refusal(self) -> None:
        with self._changed:
            self.refused += 1
            self._changed.notify_all()

    def wait_refused(self, count: int, timeout: float = 10.0) -> bool:
        """Whether ``count`` refusals have happened within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.refused >= count, timeout)

    def close(self) -> None:
        self.listener.close()


class Mqtt311OnlyProxy(_Proxy):
    """Forwards to a real broker, but answers MQTT 5 CONNECTs as a 3.1.1-only broker does."""

    def _serve(self, client: socket.socket) -> None:
        head = b""
        # Fixed header (2-5 bytes), then 00 04 "MQTT" and the protocol level.
        while len(head) < 12:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        level = head[head.index(b"MQTT") + 4]
        if level == MQTT5:
            self._count_refusal()
            client.sendall(REFUSE_PROTOCOL)
            client.close()
            return
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        upstream.sendall(head)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, target: socket.socket, lock: threading.Lock | None = None) -> None:
    """Copies until either side closes; ``lock`` guards writes shared with another thread."""
    try:
        while data := source.recv(65536):
            with lock or contextlib.nullcontext():
                target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


SUBSCRIBE = 0x8
SUBACK = 0x90
UNSPECIFIED_FAILURE = 0x80


class SubscribeRefusingProxy(_Proxy):
    """Forwards to a real broker, but refuses (0x80 for every filter) the first ``refuse``
    SUBSCRIBE packets without passing them on, as a NATS cluster too busy to create the
    subscriptions' JetStream consumers does."""

    def __init__(self, upstream: Broker, refuse: int = 1) -> None:
        self.to_refuse = refuse
        super().__init__(upstream)

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        to_client = threading.Lock()
        threading.Thread(target=_pipe, args=(upstream, client, to_client), daemon=True).start()
        reader = client.makefile("rb")
        level = 4
        try:
            while packet := _read_packet(reader):
                kind = packet[0] >> 4
                if kind == 1:  # CONNECT: 00 04 "MQTT" level
                    body = packet[_header_length(packet) :]
                    level = body[6]
                if kind == SUBSCRIBE and self._take_refusal():
                    with to_client:
                        client.sendall(_refusal(packet, level))
                    continue
                upstream.sendall(packet)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _take_refusal(self) -> bool:
        with self._changed:
            if self.refused >= self.to_refuse:
                return False
            self.refused += 1
            self._changed.notify_all()
            return True


def _header_length(packet: bytes) -> int:
    i = 1
    while packet[i] & 0x80:
        i += 1
    return i + 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_packet(reader: BinaryIO) -> bytes:
    first = reader.read(1)
    if not first:
        return b""
    head, length, shift = bytearray(first), 0, 0
    while True:
        byte = reader.read(1)
        if not byte:
            return b""
        head += byte
        length += (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return bytes(head) + bytes(reader.read(length))


def _refusal(subscribe: bytes, level: int) -> bytes:
    """A SUBACK refusing every filter of ``subscribe``."""
    body = subscribe[_header_length(subscribe) :]
    packet_id, i = body[:2], 2
    if level == MQTT5:
        props, shift = 0, 0
        while True:
            props += (body[i] & 0x7F) << shift
            shift += 7
            i += 1
            if not body[i - 1] & 0x80:
                break
        i += props
    filters = 0
    while i < len(body):
        i += 2 + int.from_bytes(body[i : i + 2], "big") + 1
        filters += 1
    rest = packet_id + (b"\x00" if level == MQTT5 else b"") + bytes([UNSPECIFIED_FAILURE]) * filters
    return bytes([SUBACK]) + _varint(len(rest)) + rest
