"""`make fleet CARS=2`: a local fleet on which logs, history, rollback and rollouts work
from the README alone, stopped with everything it started by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from emulator.test_demo import alive, command, descendants

from fleetctl.cli import main

ROOT = Path(__file__).resolve().parents[2]
# Two cars starting (emulator, connector) on a busy machine, and the sender on each.
pytestmark = pytest.mark.timeout(300)


def fleetctl(env: dict[str, str], capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    code = main(list(argv), env)
    out = capsys.readouterr().out
    return code, out


def test_make_fleet_gives_cars_with_logs_and_a_journal(capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    make = subprocess.Popen(
        ["make", "-s", "fleet", "CARS=2", "PORT=0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # a terminal's foreground job, for Ctrl-C
    )
    watchdog = threading.Timer(240, lambda: os.killpg(make.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert make.stdout is not None
        told: dict[str, str] = {}
        seen = []
        for line in make.stdout:
            seen.append(line)
            if line.startswith("MQTT_BROKER_PORT="):
                told = dict(part.split("=", 1) for part in line.split())
            if line == "ready\n":
                break
        assert told, "".join(seen)
        assert "fleetctl logs --vin 1 -n 5 vehicle-data-sender\n" in seen
        cars = {"MQTT_BROKER_ADDR": "127.0.0.1", "MQTT_BROKER_PORT": told["MQTT_BROKER_PORT"]}
        sender = str(Path(told["MANIFESTS"]) / "vehicle-data-sender.yaml")

        code, out = fleetctl(cars, capsys, "status")
        assert code == 0, out
        assert out.splitlines()[-1] == "2 car(s): 2 online"
        code, out = fleetctl(cars, capsys, "apply", sender, "--vins", "1-2", "--wait", "running")
        assert code == 0, out
        # The sender logs once it has connected: its logs reach fleetctl through the LogRule.
        code, out = fleetctl(cars, capsys, "logs", "--vin", "1", "-n", "50", "vehicle-data-sender")
        assert code == 0
        assert "vehicle-data-sender: starting" in out
        code, out = fleetctl(cars, capsys, "history", "--vin", "2")
        assert code == 0, out
        assert " apply OK " in out.splitlines()[1]
        code, out = fleetctl(cars, capsys, "rollback", "--vin", "2")
        assert code == 0, out
        assert "deleted: vehicle-data-sender" in out

        started = descendants(make.pid)
        assert len(started) >= 6, started  # make, fleet, mosquitto, 2 emulators, 2 connectors
        os.killpg(make.pid, signal.SIGINT)
        rest = make.stdout.read()
        make.wait(60)
    finally:
        watchdog.cancel()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {pid: command(pid) for pid in started if alive(pid)}
    assert "everything it started is stopped" in rest
    assert "Traceback" not in rest
