"""fleetctl plan / apply --dry-run, validate, keys, sign and --sign-key, against real cars."""

from __future__ import annotations

import json
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import MANIFESTS, Broker, MqttProbe

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings

SENDER = "vehicle-data-sender"


def test_plan_shows_each_cars_changes_and_changes_nothing(
    fleet: Any, fleetctl: Any, manifest: Any
) -> None:
    path, [name] = manifest("agent_A")
    run = fleetctl("plan", str(path), "--vins", "CAR01-CAR03")
    assert run.code == 0, run.out + run.err
    rows = [line for line in run.out.splitlines() if line.startswith("CAR")]
    assert rows == [
        f"{vin}  ok      workload {name}: create on agent_A" for vin in ("CAR01", "CAR02", "CAR03")
    ]
    assert name not in fleet.desired_workloads("CAR01")

    # The same as apply --dry-run, and a real apply then makes it unchanged.
    dry = fleetctl("apply", str(path), "--vin", "CAR01", "--dry-run", "-o", "json")
    assert dry.code == 0
    [car] = json.loads(dry.out)["cars"]
    assert car["reply"]["workloads"] == {name: {"action": "create", "agent": "agent_A"}}
    assert json.loads(dry.out)["command"] == "plan"
    assert fleetctl("apply", str(path), "--vin", "CAR01").code == 0
    run = fleetctl("plan", str(path), "--vin", "CAR01", "--vin", "CAR02")
    assert f"CAR01  ok      workload {name}: unchanged on agent_A" in run.out
    assert f"CAR02  ok      workload {name}: create on agent_A" in run.out

    # Planning the delete, with plan --delete and with delete --dry-run.
    for argv in (("plan", "--delete"), ("delete", "--dry-run")):
        run = fleetctl(*argv, str(path), "--vin", "CAR01")
        assert f"CAR01  ok      workload {name}: delete on agent_A" in run.out, run.out
    assert name in fleet.desired_workloads("CAR01")
    assert fleetctl("delete", str(path), "--vin", "CAR01").code == 0


def test_plan_of_a_re_render(fleet: Any, fleetctl: Any, sender_manifest: Path) -> None:
    assert fleetctl("apply", str(sender_manifest), "--vin", "CAR04").code == 0
    try:
        run = fleetctl("plan", str(MANIFESTS / "config.yaml"), "--vin", "CAR04")
        assert run.code == 0, run.out
        assert (
            f"CAR04  ok      workload {SENDER}: replace on agent_A (runtimeConfig differ; "
            "re-rendered from config vehicle-data-sender-config)"
        ) in run.out
        assert "CAR04  ok      config vehicle-data-sender-config: replace" in run.out
    finally:
        fleetctl("delete", str(sender_manifest), "--vin", "CAR04")


def test_plan_that_would_be_rejected_exits_1(
    fleet: Any, fleetctl: Any, tmp_path: Path, sender_manifest: Path
) -> None:
    document = yaml.safe_load(sender_manifest.read_text())
    del document["configs"]
    path = tmp_path / "no-config.yaml"
    path.write_text(yaml.safe_dump(document))
    run = fleetctl("plan", str(path), "--vin", "CAR05", "-o", "json")
    assert run.code == 1
    [car] = json.loads(run.out)["cars"]
    assert car["status"] == "failed"
    assert car["error"]["code"] == "WOULD_BE_REJECTED"
    assert "references config key" in car["error"]["message"]
    assert car["reply"]["ankaios"]["verdict"] == "rejected"


def test_validate_exit_codes(fleetctl: Any, tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "apiVersion: v1\nworkloads:\n  a:\n    runtime: podman\n    agent: agent_A\n"
        "    runtimeConfig: x\n    restartpolicy: ALWAYS\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(typo.read_text().replace("agent: agent_A", "agent: a.b"))
    good = MANIFESTS / "v1" / "vehicle-data-sender.yaml"

    run = fleetctl("validate", str(good), str(typo), env={})
    assert run.code == 0
    assert f"{good}: valid" in run.out
    assert "warning: unknown key 'restartpolicy' at workloads.a" in run.out
    assert fleetctl("validate", "--strict", str(typo), env={}).code == 1
    run = fleetctl("validate", str(bad), "-o", "json", env={})
    assert run.code == 1
    [result] = json.loads(run.out)
    assert result["valid"] is False
    assert "Manifest schema validation failed: workloads.a.agent" in result["errors"][0]
    run = fleetctl("validate", str(tmp_path / "missing.yaml"), env={})
    assert run.code == 2
    assert "cannot read manifest" in run.err


# -- signed requests ----------------------------------------------------------------------------


@pytest.fixture
def signing_key(fleetctl: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.chdir(tmp_path)
    run = fleetctl("keys", "generate", "fleet-ops", env={})
    assert run.code == 0, run.err
    key = tmp_path / "fleet-ops.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    line = run.out.strip()
    assert line.startswith("fleet-ops ed25519 ")
    assert fleetctl("keys", "public", str(key), env={}).out.strip() == line
    again = fleetctl("keys", "generate", "fleet-ops", env={})
    assert again.code == 2
    assert "File exists" in again.err
    return key, line


@pytest.fixture
def signed_cars(
    broker: Broker, signing_key: tuple[Path, str], tmp_path: Path
) -> Iterator[dict[str, Emulator]]:
    """Two cars that take only signed apply and delete requests.

    On the session's broker, not the fleet's: their presence would count in fleet tests.
    """
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(signing_key[1] + "\n")
    cars: dict[str, Emulator] = {}
    connectors: list[Connector] = []
    tag = uuid.uuid4().hex[:6].upper()
    try:
        for n in (1, 2):
            vin = f"SIGNED{tag}{n}"
            emulator = Emulator(control_interface=tmp_path / vin).start()
            config = Config(
                vin=vin,
                broker=BrokerSettings(host=broker.host, port=broker.port),
                control_interface=emulator.control_interface,
                client_id=f"fleet-connector-{vin}",
                state_dir=tmp_path / f"state-{vin}",
                trusted_keys=trusted,
                require_signed=True,
            )
            connector = Connector(config)
            connector.start()
            cars[vin] = emulator
            connectors.append(connector)
        for connector in connectors:
            assert connector.control_interface.wait_connected(20)
            assert connector.mqtt.wait_subscribed(20)
        yield cars
    finally:
        for connector in connectors:
            connector.stop()
        for emulator in cars.values():
            emulator.stop()


def desired(emulator: Emulator) -> dict[str, Any]:
    state = emulator.complete_state(["desiredState"])["desiredState"]
    workloads: dict[str, Any] = state.get("workloads", {})
    return workloads


def test_apply_and_delete_signed_per_car(
    fleetctl: Any,
    broker: Broker,
    signed_cars: dict[str, Emulator],
    signing_key: tuple[Path, str],
    sender_manifest: Path,
) -> None:
    key = str(signing_key[0])
    first, second = signed_cars
    vins = f"{first},{second}"
    env = broker.env()
    run = fleetctl("apply", str(sender_manifest), "--vins", vins, "-o", "json", env=env)
    assert run.code == 1
    assert {c["error"]["code"] for c in json.loads(run.out)["cars"]} == {"SIGNATURE_INVALID"}

    run = fleetctl("apply", str(sender_manifest), "--vins", vins, "--sign-key", key, env=env)
    assert run.code == 0, run.out + run.err
    assert all(SENDER in desired(emulator) for emulator in signed_cars.values())
    # A rollback changes the car too: unsigned it is refused, signed it is carried out.
    run = fleetctl("rollback", "--vins", vins, "-o", "json", env=env)
    assert {c["error"]["code"] for c in json.loads(run.out)["cars"]} == {"SIGNATURE_INVALID"}
    run = fleetctl("rollback", "--vins", vins, "--sign-key", key, env=env)
    assert run.code == 0, run.out + run.err
    assert not any(SENDER in desired(emulator) for emulator in signed_cars.values())
    run = fleetctl("apply", str(sender_manifest), "--vins", vins, "--sign-key", key, env=env)
    assert run.code == 0, run.out + run.err
    # A second run signs with a higher counter by itself.
    run = fleetctl("plan", str(sender_manifest), "--vins", vins, "--sign-key", key, env=env)
    assert run.code == 0, run.out
    run = fleetctl("delete", str(sender_manifest), "--vins", vins, "--sign-key", key, env=env)
    assert run.code == 0, run.out + run.err
    assert not any(SENDER in desired(emulator) for emulator in signed_cars.values())


def test_sign_writes_a_file_for_mosquitto_pub(
    broker: Broker,
    fleetctl: Any,
    *,
    signed_cars: dict[str, Emulator],
    signing_key: tuple[Path, str],
    sender_manifest: Path,
    tmp_path: Path,
) -> None:
    first, second = signed_cars
    run = fleetctl(
        "sign", str(sender_manifest), "--sign-key", str(signing_key[0]), "--vin", first, env={}
    )
    assert run.code == 0, run.err
    signed = tmp_path / "signed.txt"
    signed.write_text(run.out)
    probe = MqttProbe(broker)
    try:
        probe.subscribe("vehicle/+/manifest/apply/resp/by-file")
        replies = {}
        for vin in (second, first):
            subprocess.run(
                [
                    *("mosquitto_pub", "-h", broker.host, "-p", str(broker.port)),
                    *("-q", "1", "-t", f"vehicle/{vin}/manifest/apply/req/by-file"),
                    *("-f", str(signed)),
                ],
                check=True,
                timeout=10,
            )
            reply = probe.expect(f"vehicle/{vin}/manifest/apply/resp/by-file")
            replies[vin] = json.loads(reply.payload)
    finally:
        probe.close()
    # Car 2 refused (the signature is for car 1), car 1 carried it out.
    assert replies[second]["error"]["code"] == "SIGNATURE_INVALID"
    assert f"made for VIN {first}, not {second}" in replies[second]["error"]["message"]
    assert [w["workload_name"] for w in replies[first]["added_workloads"]] == [SENDER]
    assert SENDER in desired(signed_cars[first])
    assert SENDER not in desired(signed_cars[second])
