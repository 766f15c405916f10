"""Usage errors exit 2 before anything is sent (the broker address here has no broker)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from testkit import MANIFESTS

from fleetctl.cli import main

SENDER = str(MANIFESTS / "vehicle-data-sender.yaml")


@pytest.fixture
def no_broker() -> dict[str, str]:
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]
    return {"MQTT_BROKER_ADDR": "127.0.0.1", "MQTT_BROKER_PORT": str(port)}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return str(path)


USAGE_ERRORS: list[tuple[list[str], str]] = [
    ([], "the following arguments are required: COMMAND"),
    (["launch", "--vin", "A"], "invalid choice: 'launch'"),
    (["apply", SENDER], "name the cars with --vin, --vins or --vins-file"),
    (["apply", "--vin", "A"], "the following arguments are required: FILE"),
    (["apply", "/no/such/file.yaml", "--vin", "A"], "cannot read manifest /no/such/file.yaml"),
    (["apply", SENDER, "--vins", "5-1"], "ends before it starts"),
    (["apply", SENDER, "--vins", "1-1000000"], "more than 100000 cars"),
    (["apply", SENDER, "--vin", "a/b"], "which MQTT topics reserve"),
    (["apply", SENDER, "--vin", "A", "--vin", "B#"], "which MQTT topics reserve"),
    (["apply", SENDER, "--vins-file", "/no/such/vins"], "cannot read VIN file"),
    (["apply", SENDER, "--vin", "A", "--wait", "ready"], "invalid choice: 'ready'"),
    (
        ["apply", SENDER, "--vin", "A", "--timeout", "0"],
        "'0' is not a number of seconds greater than 0",
    ),
    (
        ["apply", SENDER, "--vin", "A", "--batch-size", "x"],
        "'x' is not a whole number greater than 0",
    ),
    (["apply", SENDER, "--vin", "A", "-o", "xml"], "invalid choice: 'xml'"),
    (
        ["state", "--vin", "A", "--expiry", "4294967296"],
        "'4294967296' is not a whole number of seconds from 1 to 4294967295",
    ),
    (["delete", SENDER, "--vin", "A", "--wait", "running"], "unrecognized arguments: --wait"),
    (["state", "--vin", "A", ""], "a field mask must not be empty"),
    (["state", "--vin", "A", "--broker-port", "0"], "invalid value for --broker-port"),
    (["state", "--vin", "A", "--mqtt-protocol", "4"], "must be 5 or 3.1.1"),
    (["watch", "--count", "-1"], "'-1' is not a whole number greater than 0"),
]


@pytest.mark.parametrize(("argv", "message"), USAGE_ERRORS)
def test_usage_errors(
    argv: list[str], message: str, no_broker: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, no_broker) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("fleetctl: error: ")
    assert message in captured.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: [unclosed", "not valid YAML"),
        ("- a\n- b\n", "must be a YAML mapping"),
        ("workloads: {}\n", "apiVersion"),
        ("", "empty"),
        ("apiVersion: v1\nworkloads: {a: {agent: 1}}\n", "workloads.a.agent"),
    ],
)
def test_invalid_manifests(
    text: str,
    message: str,
    tmp_path: Path,
    no_broker: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, text)
    assert main(["apply", path, "--vin", "A"], no_broker) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fleetctl: error: {path}: ")
    assert message in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apply", "--help"], {}) == 0
    out = capsys.readouterr().out
    for flag in ("--wait", "--vins-file", "--max-failures", "--broker-addr", "--tls-ca-file"):
        assert flag in out


def test_environment_is_read(no_broker: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # Valid usage: the (missing) broker is what fails, with exit code 1.
    env = {**no_broker, "MQTT_PROTOCOL": "3.1.1"}
    assert main(["state", "--vin", "A"], env) == 1
    assert (
        f"mqtt://127.0.0.1:{no_broker['MQTT_BROKER_PORT']} (MQTT 3.1.1)" in capsys.readouterr().err
    )


def test_password_file(
    tmp_path: Path, no_broker: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**no_broker, "MQTT_USERNAME": "ops", "MQTT_PASSWORD_FILE": str(tmp_path / "missing")}
    assert main(["state", "--vin", "A"], env) == 2
    assert "cannot read password file" in capsys.readouterr().err
