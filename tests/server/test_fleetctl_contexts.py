"""fleetctl contexts (#21 item 10): kept in the XDG config directory, and commands through a
running fleet-server against real connector cars, with label selectors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server.conftest import IMAGES
from testkit import Broker, MqttProbe
from testkit.live import ALL_LOGS, manifest, retained
from testkit.server import RunningServer, make_token, wait_until

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleetctl.cli import main as fleetctl


@pytest.fixture
def environ(tmp_path: Path, broker: Broker) -> dict[str, str]:
    """fleetctl's environment: a config directory of the test's own, and the broker."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path), **broker.env()}


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs fleetctl in this process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = fleetctl(list(argv), environ)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_contexts_live_in_the_xdg_config_file(cli: Cli, tmp_path: Path) -> None:
    token_file = tmp_path / "prod.token"
    token_file.write_text("fst_secret\n")
    assert cli("config", "current-context")[0] == 1  # none yet

    code, out, _ = cli(
        "config",
        "set-context",
        "prod",
        "--server",
        "http://127.0.0.1:9",
        "--token-file",
        str(token_file),
    )
    assert code == 0, out
    assert cli("config", "set-context", "lab")[0] == 0  # the broker
    assert cli("config", "use-context", "prod")[0] == 0
    assert cli("config", "current-context")[1] == "prod\n"

    path = tmp_path / "config" / "fleetctl" / "config.yaml"
    text = path.read_text()
    assert "fst_secret" not in text  # the token's file, never the token
    assert "current-context: prod" in text

    listed = json.loads(cli("config", "get-contexts", "-o", "json")[1])
    assert listed["contexts"] == [
        {"name": "lab", "current": False, "server": None, "token_file": None},
        {
            "name": "prod",
            "current": True,
            "server": "http://127.0.0.1:9",
            "token_file": str(token_file),
        },
    ]
    # Only the fields given change.
    cli("config", "set-context", "prod", "--server", "http://127.0.0.1:10")
    listed = json.loads(cli("config", "get-contexts", "-o", "json")[1])
    assert listed["contexts"][1]["token_file"] == str(token_file)

    # The current context's server is used; --context picks another for one command.
    code, _, err = cli("status")
    assert code == 1 and "cannot reach fleet-server at http://127.0.0.1:10" in err
    code, _, err = cli("--context", "nope", "status")
    assert code == 2 and "no context named 'nope'" in err
    code, _, err = cli("status", "--context", "lab", "-l", "a=b")
    assert code == 2 and "-l/--selector needs a context with a fleet-server" in err
    # The dashboard is fleet-server's own page there.
    code, out, _ = cli("dashboard")
    assert code == 0 and "open http://127.0.0.1:10/" in out
    # A command the API does not offer says so before anything is sent.
    code, _, err = cli("watch")
    assert code == 2 and "works on the broker only" in err
    assert cli("config", "use-context", "nope")[0] == 2
    assert cli("config", "set-context", "bad", "--server", "ftp://x")[0] == 2

    assert cli("config", "delete-context", "prod")[0] == 0
    assert cli("config", "current-context")[0] == 1


@pytest.fixture
def make_real_car(tmp_path: Path, broker: Broker) -> Iterator[Callable[[str], Connector]]:
    """Cars: an emulated Ankaios running workloads as processes and a real connector."""
    made: list[tuple[str, Emulator, Connector]] = []

    def make(vin: str) -> Connector:
        emulator = Emulator(
            control_interface=tmp_path / vin / "ci",
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
                client_id=f"fleet-connector-{vin}",
                state_dir=tmp_path / vin / "state",
            )
        )
        connector.start()
        made.append((vin, emulator, connector))
        assert connector.control_interface.wait_connected(10), "control interface not connected"
        assert connector.mqtt.wait_subscribed(10), "MQTT not subscribed"
        return connector

    yield make
    probe = MqttProbe(broker)
    for vin, emulator, connector in made:
        connector.stop()
        emulator.stop()
        for topic in [*retained(probe, f"vehicle/{vin}/#"), f"vehicle/{vin}/status"]:
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    probe.close()


@pytest.fixture
def through_server(
    cli: Cli, tmp_path: Path, sqlite_url: str, make_server: Callable[..., RunningServer]
) -> RunningServer:
    """A fleet-server, and the current context pointing at it with an operator's token."""
    server = make_server(sqlite_url)
    token_file = tmp_path / "ops.token"
    token_file.write_text(make_token(sqlite_url, "ops", "operator") + "\n")
    cli(
        "config",
        "set-context",
        "fleet",
        "--server",
        server.url,
        "--token-file",
        str(token_file),
    )
    cli("config", "set-context", "broker")
    cli("config", "use-context", "fleet")
    return server


def test_commands_go_through_the_server_and_choose_cars_by_label(
    cli: Cli,
    through_server: RunningServer,
    make_real_car: Callable[[str], Connector],
    vin: str,
    tmp_path: Path,
) -> None:
    server = through_server
    eu, us = f"{vin}EU", f"{vin}US"
    # A label key of this test's own: the session's broker keeps other tests' cars, with
    # labels of their own (a region among them).
    key = f"region-{vin.lower()}"[:63]
    make_real_car(eu)
    make_real_car(us)
    admin = make_token(server.config.database, "labeller", "operator")
    for car, region in ((eu, "eu"), (us, "us")):
        wait_until(lambda car=car: server.get(f"/api/v1/cars/{car}", admin).status_code == 200)
        response = server.request("PATCH", f"/api/v1/cars/{car}/labels", admin, json={key: region})
        assert response.status_code == 200, response.text

    code, out, err = cli("status", "-l", f"{key}=eu", "-o", "json")
    assert code == 0, err
    cars = json.loads(out)["cars"]
    assert [(c["vin"], c["online"], c["labels"]) for c in cars] == [(eu, True, {key: "eu"})]
    code, out, _ = cli("status", "-l", f"{key} in (eu,us)")
    assert code == 0 and eu in out and us in out and f"{key}=us" in out

    file = tmp_path / "sim.yaml"
    file.write_text(manifest("sim"))
    code, out, err = cli("apply", "-l", f"{key}=eu", str(file), "-o", "json")
    assert code == 0, (out, err)
    result = json.loads(out)
    assert result["server"] == server.url
    assert [(c["vin"], c["status"]) for c in result["cars"]] == [(eu, "ok")]
    assert [w["workload_name"] for w in result["cars"][0]["reply"]["added_workloads"]] == ["sim"]
    # Sent by the server, as the context's token: in its audit trail.
    audit = server.get(f"/api/v1/cars/{eu}/audit", admin).json()["items"]
    actions = [(e["actor"], e["action"]) for e in audit]
    assert ("ops", "car.manifest.apply") in actions and (
        "ops",
        "car.manifest.apply.reply",
    ) in actions
    assert (
        server.get(f"/api/v1/cars/{us}/audit", admin).json()["items"][-1]["action"] == "car.labels"
    )

    def running() -> bool:
        code, out, _ = cli("get", "workloads", "-l", key, "-o", "json")
        rows = json.loads(out)["workloads"]
        return code == 0 and [(r["vin"], r["workload"], r["state"]) for r in rows] == [
            (eu, "sim", "running")
        ]

    wait_until(running)
    code, out, err = cli("state", "--vin", eu, "workloadStates", "-o", "json")
    assert code == 0, err
    states = json.loads(out)["cars"][0]["reply"]
    assert "sim" in json.dumps(states)

    code, out, err = cli("history", "-l", f"{key}=eu", "-o", "json")
    assert code == 0, err
    code, out, err = cli("rollback", "--vin", eu, "-o", "json")
    assert code == 0, (out, err)
    # A car the selector does not match is not touched; none matching is exit 1.
    code, _, err = cli("apply", "-l", f"{key}=mars", str(file))
    assert code == 1 and "no car matches" in err
    # The same commands on the broker, with a context that names none.
    code, out, err = cli("--context", "broker", "status", "--vin", us, "-o", "json")
    assert code == 0, err
    assert json.loads(out)["cars"][0]["status"] == "online"


def test_logs_through_the_server(
    cli: Cli,
    through_server: RunningServer,
    make_real_car: Callable[[str], Connector],
    vin: str,
    tmp_path: Path,
) -> None:
    make_real_car(vin)
    file = tmp_path / "talker.yaml"
    file.write_text(manifest("talker", image="talker:1"))
    wait_until(lambda: cli("status", "--vin", vin)[0] == 0)
    assert cli("apply", "--vin", vin, str(file))[0] == 0

    def five_lines() -> Any:
        code, out, _ = cli("logs", "--vin", vin, "talker")
        return code == 0 and out.splitlines()[-1:] == ["line 5"] and out

    assert wait_until(five_lines).splitlines() == [f"line {n}" for n in range(1, 6)]


def test_a_token_the_server_does_not_know_is_exit_1(
    cli: Cli, through_server: RunningServer, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.token"
    bad.write_text("fst_unknown")
    cli("config", "set-context", "fleet", "--token-file", str(bad))
    code, _, err = cli("status")
    assert code == 1
    assert "UNAUTHENTICATED" in err
