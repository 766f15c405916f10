"""fleetctl as a program in a pipeline and under Ctrl-C: quiet, with the shell's codes.

A reader that goes away (``| head``) ends fleetctl with 141 and nothing on stderr, as
SIGPIPE ends other programs; Ctrl-C ends it with 130, saying only what a user must know.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from testkit import MANIFESTS

FLEETCTL = [sys.executable, "-m", "fleetctl"]


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FLEETCTL, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Exit code and stderr; a stuck process fails the test instead of hanging it."""
    try:
        code = process.wait(30)
    finally:
        process.kill()
    assert process.stderr is not None
    return code, process.stderr.read()


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "workloads", "-o", "json", "--listen", "0.3"],
        ["history", "--vins", "CAR01-CAR03", "-o", "yaml"],
    ],
    ids=["get-workloads", "history"],
)
def test_a_reader_that_went_away_ends_it_quietly(fleet: Any, argv: list[str]) -> None:
    process = start(argv, fleet.env())
    assert process.stdout is not None
    process.stdout.close()  # as `| head` does once it has its lines
    code, err = finish(process)
    assert (code, err) == (141, "")


def test_watch_into_head_ends_quietly(fleet: Any, fleetctl: Any) -> None:
    process = start(["watch", "--raw", "--vin", "CAR04"], fleet.env())
    assert process.stdout is not None
    assert process.stdout.readline().startswith("vehicle/CAR04/")
    process.stdout.close()
    # A request and its reply under the car's topics: the next lines watch writes.
    assert fleetctl("state", "workloadStates", "--vin", "CAR04").code == 0
    code, err = finish(process)
    assert (code, err) == (141, "")


def test_ctrl_c_ends_watch_with_130(fleet: Any) -> None:
    process = start(["watch", "--raw", "--vin", "CAR04"], fleet.env())
    assert process.stdout is not None
    assert process.stdout.readline().startswith("vehicle/CAR04/")
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert (code, err) == (130, "")


@pytest.fixture
def silent_broker() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """Accepts connections and never answers: fleetctl is still connecting when it is
    interrupted."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(20)
        env = {"MQTT_BROKER_ADDR": "127.0.0.1", "MQTT_BROKER_PORT": str(server.getsockname()[1])}
        yield server, env


@pytest.mark.parametrize(
    ("argv", "expected_err"),
    [
        (["watch"], ""),
        (["state", "--vin", "A"], ""),
        (
            ["apply", str(MANIFESTS / "vehicle-data-sender.yaml"), "--vin", "A"],
            "fleetctl: interrupted; requests already sent may still be carried out\n",
        ),
    ],
    ids=["watch", "state", "apply"],
)
def test_early_ctrl_c_exits_130(
    silent_broker: tuple[socket.socket, dict[str, str]], argv: list[str], expected_err: str
) -> None:
    server, env = silent_broker
    process = start(argv, env)
    connection, _ = server.accept()
    with connection:
        process.send_signal(signal.SIGINT)
        code, err = finish(process)
    # Only a command that changes cars warns about requests that may be on their way.
    assert (code, err) == (130, expected_err)
