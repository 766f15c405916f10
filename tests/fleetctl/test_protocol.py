"""Broker connection: MQTT 5, 3.1.1, automatic fallback, unreachable broker."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from testkit.proxy import Mqtt311OnlyProxy


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
