"""fleetctl on live states: --wait running on the followed outcome, get workloads, watch,
logs; against a car whose workloads really run (the emulator's process runtime)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Broker
from testkit.live import ALL_LOGS, manifest

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings

IMAGES = {
    "ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0": [
        sys.executable,
        "-m",
        "vehicle_data_sender",
    ],
    "steady:1": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; exec sleep 300"],
    "ticker:1": ["sh", "-c", "while :; do echo tick; sleep 0.1; done"],
}
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@pytest.fixture(scope="module")
def car(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A car of its own on the session's broker (not the fleet's, whose cars other tests
    count); yields its VIN."""
    vin = f"LIVE{uuid.uuid4().hex[:6].upper()}"
    directory = tmp_path_factory.mktemp("live-car")
    emulator = Emulator(
        control_interface=directory / "ci",
        runtime="process",
        image_map=IMAGES,
        access=ALL_LOGS,
        pace_frames=False,
    ).start()
    connector = Connector(
        Config(
            vin=vin,
            broker=BrokerSettings(host=broker.host, port=broker.port),
            control_interface=emulator.control_interface,
        )
    )
    connector.start()
    assert connector.control_interface.wait_connected(20)
    assert connector.mqtt.wait_subscribed(20)
    assert connector.live.synced.wait(20)
    try:
        yield vin
    finally:
        connector.stop()
        emulator.stop()


@pytest.fixture
def ctl(fleetctl: Any, broker: Broker) -> Any:
    """fleetctl against the live car's broker."""
    return lambda *argv: fleetctl(*argv, env=broker.env())


def sender(broker: Broker, tmp_path: Path, vin: str, interval: str) -> Path:
    text = (MANIFESTS / "vehicle-data-sender.yaml").read_text()
    text = text.replace('value: "1883"', f'value: "{broker.port}"')
    text = text.replace("value: localhost", f"value: {broker.host}")
    text = text.replace("vehicle/1/", f"vehicle/{vin}/").replace(
        'value: "1"', f'value: "{interval}"'
    )
    path = tmp_path / "sender.yaml"
    path.write_text(text)
    return path


def test_wait_running_fails_a_sender_that_exits_at_once(
    broker: Broker, ctl: Any, car: str, tmp_path: Path
) -> None:
    # The example: INTERVAL=abc makes the sender exit 0.1 s after it started.
    path = sender(broker, tmp_path, car, "abc")
    run = ctl("apply", str(path), "--vin", car, "--wait", "running", "-o", "json")
    assert run.code == 1, run.out
    [result] = json.loads(run.out)["cars"]
    assert result["status"] == "failed"
    assert result["error"]["code"] == "NOT_RUNNING"
    assert "vehicle-data-sender: failed (ExecFailed): Exit code: '2'" in result["error"]["message"]
    assert "INTERVAL" in " ".join(result["logs"]["vehicle-data-sender"])
    ctl("delete", str(path), "--vin", car)


def test_wait_running_with_settle_succeeds_for_a_steady_workload(
    ctl: Any, car: str, tmp_path: Path
) -> None:
    path = tmp_path / "steady.yaml"
    path.write_text(manifest("steady", image="steady:1"))
    run = ctl("apply", str(path), "--vin", car, "--wait", "running", "--settle", "0.5")
    assert run.code == 0, run.out
    assert f"{car}  ok" in run.out

    table = ctl("get", "workloads", "--vins", car)
    assert table.code == 0
    header, *rows = table.out.splitlines()
    assert header.split()[:5] == ["VIN", "WORKLOAD", "STATE", "SUBSTATE", "AGENT"]
    assert any(row.split()[:5] == [car, "steady", "running", "Ok", "agent_A"] for row in rows)

    logs = ctl("logs", "--vin", car, "-n", "2", "steady")
    assert logs.code == 0, logs.err
    assert logs.out.splitlines() == ["line 4", "line 5"]


def test_logs_of_an_unknown_workload_exit_1_with_the_reason(ctl: Any, car: str) -> None:
    run = ctl("logs", "--vin", car, "nobody")
    assert run.code == 1
    assert "INVALID_REQUEST: unknown workloads: nobody" in run.err


def test_logs_needs_exactly_one_car(ctl: Any) -> None:
    run = ctl("logs", "--vins", "A,B", "steady")
    assert run.code == 2
    assert "one car" in run.err


def test_watch_workloads_prints_timestamped_states(ctl: Any, car: str) -> None:
    run = ctl("watch", "--workloads", "--vin", car, "--count", "1")
    assert run.code == 0
    [line] = run.out.splitlines()
    assert STAMP.match(line), line
    assert f" vehicle/{car}/" in line


def test_logs_follow_ends_cleanly_on_sigterm(broker: Broker, car: str, tmp_path: Path) -> None:
    path = tmp_path / "ticker.yaml"
    path.write_text(manifest("ticker", image="ticker:1"))
    env = {**os.environ, **broker.env(), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "fleetctl"]
    applied = subprocess.run(
        [*command, "apply", str(path), "--vin", car, "--wait", "running", "--settle", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    follower = subprocess.Popen(
        [*command, "logs", "--vin", car, "-f", "-n", "0", "ticker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killer = threading.Timer(30, follower.kill)
    killer.start()
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "tick\n"
        follower.send_signal(signal.SIGTERM)
        assert follower.wait(10) == 0
    finally:
        killer.cancel()
        follower.kill()
        follower.wait()
