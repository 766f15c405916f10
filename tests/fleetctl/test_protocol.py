"""Broker connection: MQTT 5, 3.1.1, automatic fallback, unreachable broker."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from testkit import Broker

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
            self.refused += 1
            client.sendall(REFUSE_PROTOCOL)
            client.close()
            return
        upstream = socket.create_connection((self.upstream.host, self.upstream.port))
        upstream.sendall(head)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

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


@pytest.fixture
def proxy(fleet: Any) -> Iterator[Mqtt311OnlyProxy]:
    p = Mqtt311OnlyProxy(fleet.broker)
    yield p
    p.close()


def test_explicit_mqtt_311(fleetctl: Any) -> None:
    run = fleetctl(
        "state", "agents", "--vins", "CAR01-CAR20", "--mqtt-protocol", "3.1.1", "-o", "json"
    )
    assert run.code == 0, run.out
    result = json.loads(run.out)
    assert result["mqtt_protocol"] == "3.1.1"
    assert result["summary"]["ok"] == 20


def test_falls_back_to_311_when_the_broker_refuses_5(
    fleet: Any, fleetctl: Any, proxy: Mqtt311OnlyProxy
) -> None:
    env = {"MQTT_BROKER_ADDR": "127.0.0.1", "MQTT_BROKER_PORT": str(proxy.port)}
    run = fleetctl("state", "agents", "--vins", "CAR01-CAR03", "-o", "json", env=env)
    assert run.code == 0, run.err
    assert json.loads(run.out)["mqtt_protocol"] == "3.1.1"
    assert proxy.refused == 1


def test_no_fallback_when_5_is_asked_for(
    fleet: Any, fleetctl: Any, proxy: Mqtt311OnlyProxy
) -> None:
    env = {
        "MQTT_BROKER_ADDR": "127.0.0.1",
        "MQTT_BROKER_PORT": str(proxy.port),
        "MQTT_PROTOCOL": "5",
    }
    run = fleetctl("state", "--vin", "CAR01", env=env)
    assert run.code == 1
    assert run.out == ""
    assert "refused the connection: Unsupported protocol version" in run.err


def test_unreachable_broker(fleetctl: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
    env = {"MQTT_BROKER_ADDR": "127.0.0.1", "MQTT_BROKER_PORT": str(port)}
    run = fleetctl("state", "--vin", "CAR01", env=env)
    assert run.code == 1
    assert run.err.startswith(f"fleetctl: cannot reach broker mqtt://127.0.0.1:{port}")
