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
    # What the issue saw in a workload's output: an OSC 52 clipboard write, a title change
    # (each ended by BEL), a colour, a right-to-left override (U+202E) and a carriage return.
    "hostile:1": [
        "sh",
        "-c",
        "printf 'a\\033]52;c;ZXZpbA==\\007b\\033]0;pwned\\007c\\033[31m"
        "d\\342\\200\\256e\\rf\\tg\\n'; exec sleep 300",
    ],
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


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 0), (signal.SIGINT, 130)],
    ids=["sigterm-exits-0", "ctrl-c-exits-130"],
)
def test_logs_follow_ends_cleanly_on_a_signal(
    broker: Broker, car: str, tmp_path: Path, signum: int, code: int
) -> None:
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
        follower.send_signal(signum)
        # The cancel is sent and the stream ended by the car, quietly, either way.
        assert follower.wait(10) == code
        assert follower.stderr is not None
        assert follower.stderr.read() == ""
    finally:
        killer.cancel()
        follower.kill()
        follower.wait()


def test_logs_show_a_workloads_control_characters_escaped(
    ctl: Any, car: str, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(manifest("hostile", image="hostile:1"))
    run = ctl("apply", str(path), "--vin", car, "--wait", "running", "--settle", "0")
    assert run.code == 0, run.out
    try:
        logs = ctl("logs", "--vin", car, "hostile")
        assert logs.code == 0, logs.err
        # The line as the terminal gets it: every control shown, none obeyed; a tab stays.
        assert (
            logs.out == "a\\x1b]52;c;ZXZpbA==\\x07b\\x1b]0;pwned\\x07c\\x1b[31md\\u202ee\\rf\tg\n"
        )
        # (stderr also holds what the emulator's processes print, in this same process)
        ours = [line for line in logs.err.splitlines() if line.startswith("fleetctl")]
        assert not set("\x1b\x07\r\u202e") & set(logs.out + "".join(ours))
    finally:
        ctl("delete", str(path), "--vin", car)
