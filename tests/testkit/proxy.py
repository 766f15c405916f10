"""A broker that speaks only MQTT 3.1.1, made from a real one, for protocol fallback tests."""

from __future__ import annotations

import contextlib
import socket
import threading

from testkit.broker import Broker

MQTT5 = 5
# CONNACK with the 3.1.1 return code 1, "unacceptable protocol version".
REFUSE_PROTOCOL = b"\x20\x02\x00\x01"


class Mqtt311OnlyProxy:
    """Forwards to a real broker, but answers MQTT 5 CONNECTs as a 3.1.1-only broker does."""

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
            with self._changed:
                self.refused += 1
                self._changed.notify_all()
            client.sendall(REFUSE_PROTOCOL)
            client.close()
            return
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        upstream.sendall(head)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def wait_refused(self, count: int, timeout: float = 10.0) -> bool:
        """Whether ``count`` MQTT 5 connections have been refused within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.refused >= count, timeout)

    def close(self) -> None:
        self.listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
