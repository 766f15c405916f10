"""What the broker's acknowledgements tell fleetctl, and the expiry a request carries.

A car nobody serves (no matching subscribers) is in test_requests, with the fleet.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Broker, MqttProbe, free_port
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleetctl.cli import main


@pytest.fixture
def acl_broker(make_broker: Callable[..., Broker], tmp_path: Path) -> Broker:
    """car1 uses its own topics; the auditor may read every car's topics but write none."""
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    for user in ("car1", "auditor"):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, f"{user}-pw"], check=True)
    acl = tmp_path / "acl"
    acl.write_text("user auditor\ntopic read vehicle/#\n\npattern readwrite vehicle/%u/#\n")
    port = free_port()
    return make_broker(
        port=port,
        config_text=(
            "per_listener_settings false\npersistence false\nallow_anonymous false\n"
            f"password_file {passwd}\nacl_file {acl}\nlistener {port} 127.0.0.1\n"
        ),
    )


@pytest.fixture
def car1(acl_broker: Broker, tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(control_interface=tmp_path / "car1") as emulator:
        settings = BrokerSettings(
            host=acl_broker.host, port=acl_broker.port, username="car1", password="car1-pw"
        )
        connector = Connector(
            Config(vin="car1", broker=settings, control_interface=emulator.control_interface)
        )
        connector.start()
        try:
            assert connector.mqtt.wait_subscribed(10)
            yield emulator
        finally:
            connector.stop()


def fleetctl_json(broker: Broker, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    env = {**broker.env(), "MQTT_USERNAME": "auditor", "MQTT_PASSWORD": "auditor-pw"}
    code = main([*argv, "-o", "json"], env)
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("command", ["apply", "state"])
def test_request_the_broker_refuses_fails_at_once(
    acl_broker: Broker, car1: Emulator, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # A long --timeout: the refusal must come from the PUBACK, not from waiting.
    target = str(MANIFESTS / "vehicle-data-sender.yaml") if command == "apply" else "desiredState"
    code, result = fleetctl_json(
        acl_broker, capsys, command, target, "--vin", "car1", "--timeout", "60"
    )
    assert code == 1
    [car] = result["cars"]
    assert car["status"] == "failed"
    assert car["error"]["code"] == "BROKER_REFUSED"
    assert "Not authorized" in car["error"]["message"]
    assert update_requests(car1) == 0


def test_expiry_travels_with_the_request(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = MqttProbe(broker)
    try:
        listener.subscribe("vehicle/EXP1/state/req/+")
        code = main(
            ["state", "--vin", "EXP1", "--expiry", "30", "--timeout", "0.5", "-o", "json"],
            broker.env(),
        )
        assert code == 1  # nobody answers in this test
        message = listener.expect(timeout=5)
        assert message.topic.startswith("vehicle/EXP1/state/req/")
        assert message.properties is not None
        assert 0 < message.properties.MessageExpiryInterval <= 30
    finally:
        listener.close()
