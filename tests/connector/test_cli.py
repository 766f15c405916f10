"""The ``fleet-connector`` program as an operator runs it: configuration, signals, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import Broker, MqttProbe, Requester

from ankaios_emulator import Emulator
from fleet_connector.mqtt.topics import Operation


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_connector", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, (), "VIN is required"),
        ({"VIN": ""}, (), "VIN is required"),
        ({"VIN": "car/1"}, (), "contains '/'"),
        ({"VIN": "car+"}, (), "contains '+'"),
        ({"VIN": "#"}, (), "contains '#'"),
        ({"VIN": "1", "MQTT_BROKER_PORT": "abc"}, (), "MQTT_BROKER_PORT"),
        ({"VIN": "1", "MQTT_BROKER_PORT": "70000"}, (), "port number"),
        ({"VIN": "1"}, ("--broker-port", "x"), "--broker-port"),
        ({"VIN": "1"}, ("--no-such-flag",), "unrecognized arguments"),
        ({"VIN": "1", "REQUEST_TIMEOUT": "-1"}, (), "REQUEST_TIMEOUT"),
        ({"VIN": "1", "MQTT_TLS_CA_FILE": "/no/such/ca.pem"}, (), "cannot read CA file"),
        ({"VIN": "1", "MQTT_PASSWORD": "p"}, (), "needs a user name"),
        ({"VIN": "1", "LABELS": "region"}, (), "'region' is not key=value"),
        ({"VIN": "1", "LABELS": "region=<b>eu</b>"}, (), "the value '<b>eu</b>'"),
        ({"VIN": "1", "LABELS": "-x=1"}, (), "label key '-x'"),
        ({"VIN": "1", "LABELS": "a=1,a=2"}, (), "'a' is given twice"),
    ],
)
def test_invalid_configuration_exits_2_with_one_line(
    env: dict[str, str], args: tuple[str, ...], expected: str
) -> None:
    clean = {
        k: "" for k in ("VIN", "MQTT_BROKER_PORT", "MQTT_PASSWORD", "MQTT_TLS_CA_FILE", "LABELS")
    }
    result = run({**clean, **env}, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_labels_are_carried_in_presence(broker: Broker, probe: MqttProbe, tmp_path: Path) -> None:
    with Emulator(control_interface=tmp_path / "ci") as emu:
        env = {
            "VIN": "LBL1",
            "MQTT_BROKER_ADDR": broker.host,
            "MQTT_BROKER_PORT": str(broker.port),
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(emu.control_interface),
            "LABELS": "region=eu, example.com/model=x,beta=",
        }
        with connector_process(env):
            status = Requester(probe, "LBL1").wait_online()
    assert status["labels"] == {"region": "eu", "example.com/model": "x", "beta": ""}


def test_help_documents_every_option() -> None:
    result = run({}, "--help")
    assert result.returncode == 0
    for word in ("VIN", "MQTT_BROKER_ADDR", "MQTT_BROKER_PORT", "ANKAIOS_CONTROL_INTERFACE_PATH"):
        assert word in result.stdout


def test_flag_overrides_environment(broker: Broker, probe: MqttProbe, tmp_path: Path) -> None:
    with Emulator(control_interface=tmp_path / "ci") as emu:
        env = {
            "VIN": "from-env",
            "MQTT_BROKER_ADDR": broker.host,
            "MQTT_BROKER_PORT": "1",  # wrong on purpose: the flag must win
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(emu.control_interface),
        }
        with connector_process(env, "--vin", "FLAGVIN", "--broker-port", str(broker.port)) as proc:
            requester = Requester(probe, "FLAGVIN")
            requester.wait_online()
            reply = requester.call(Operation.STATE, '["workloadStates"]')
            assert "workload_states" in reply
            assert proc.poll() is None


class connector_process:
    """The connector as a child process, stopped with SIGTERM on exit."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_connector", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def __enter__(self) -> subprocess.Popen[str]:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def running(
    broker: Broker, vin: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], Emulator]]:
    with Emulator(control_interface=tmp_path / "ci") as emu:
        env = {
            **broker.env(),
            "VIN": vin,
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(emu.control_interface),
        }
        with connector_process(env) as proc:
            yield proc, emu


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_within_2_seconds(
    running: tuple[subprocess.Popen[str], Emulator], probe: MqttProbe, vin: str, sig: int
) -> None:
    proc, _ = running
    requester = Requester(probe, vin)
    online = requester.wait_online()
    assert online["vin"] == vin
    started = time.monotonic()
    proc.send_signal(sig)
    assert proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 2.0
    output = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in output
    offline = requester.wait_status("offline")
    assert offline["started_at"] == online["started_at"]


def test_one_log_line_per_request_without_payload(
    running: tuple[subprocess.Popen[str], Emulator], probe: MqttProbe, vin: str
) -> None:
    proc, _ = running
    requester = Requester(probe, vin)
    requester.wait_online()
    secret = "s3cr3t-value-in-payload"
    requester.call(Operation.STATE, json.dumps([f"desiredState.configs.{secret}"]), "rid-42")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=5)
    lines = [line for line in output.splitlines() if "request id=" in line]
    assert len(lines) == 1
    assert "id=rid-42" in lines[0]
    assert f"topic=vehicle/{vin}/state/req/rid-42" in lines[0]
    assert "outcome=OK" in lines[0]
    assert "duration_ms=" in lines[0]
    assert secret not in output


def test_starts_before_the_broker_and_connects_when_it_comes_up(
    make_broker,
    tmp_path: Path,
    vin: str,  # type: ignore[no-untyped-def]
) -> None:
    from testkit import free_port

    port = free_port()
    with Emulator(control_interface=tmp_path / "ci") as emu:
        env = {
            "VIN": vin,
            "MQTT_BROKER_ADDR": "127.0.0.1",
            "MQTT_BROKER_PORT": str(port),
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(emu.control_interface),
        }
        with connector_process(env) as proc:
            assert emu.wait_for(lambda e: e.connected, timeout=10) is None
            late = make_broker(port=port)
            probe = MqttProbe(late)
            try:
                requester = Requester(probe, vin)
                requester.wait_online()
                reply = requester.call(Operation.STATE, '["workloadStates"]')
                assert "workload_states" in reply
            finally:
                probe.close()
            assert proc.poll() is None


def test_sigterm_while_a_request_waits_for_ankaios_on_boot(
    broker: Broker, probe: MqttProbe, vin: str, tmp_path: Path
) -> None:
    control_interface = tmp_path / "ci"
    env = {
        **broker.env(),
        "VIN": vin,
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(control_interface),
        "REQUEST_TIMEOUT": "30",
    }
    requester = Requester(probe, vin)
    probe.subscribe(requester.topics.status)
    with connector_process(env) as proc:
        requester.wait_status("online")
        probe.publish(requester.topics.request(Operation.STATE, "waits"), '["workloadStates"]')
        probe.expect_nothing(0.5)  # waiting for Ankaios, which is not there
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.0
    # Not answered, so not acknowledged: the next start, with Ankaios there, answers it.
    with Emulator(control_interface=control_interface), connector_process(env):
        reply = probe.expect(requester.topics.response(Operation.STATE, "waits"))
        assert "workload_states" in json.loads(reply.payload)
