"""apply, delete and state against 20 cars: replies, errors, time-outs, output formats."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

# Cars that carry out anything they are asked.
GOOD = "CAR01-CAR19"


def cars_by_vin(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {car["vin"]: car for car in document["cars"]}


def test_apply_and_delete_on_19_cars(
    fleet: Any, fleetctl: Any, manifest: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path, [name] = manifest("agent_A")
    started = time.monotonic()
    run = fleetctl("apply", str(path), "--vins", GOOD)
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\napply to 19 cars: {elapsed:.3f}s (fleet started in {fleet.startup_seconds:.2f}s)")
    assert run.code == 0, run.out + run.err
    rows = [line for line in run.out.splitlines() if line.startswith("CAR")]
    assert len(rows) == 19
    assert all(f"ok      added: {name}; deleted: -" in row for row in rows), rows
    assert run.out.splitlines()[-1] == "19 car(s): 19 ok"
    assert run.err == ""  # no progress bar when stderr is not a terminal
    assert name in fleet.desired_workloads("CAR07")

    run = fleetctl("delete", str(path), "--vins", GOOD, "-o", "json")
    assert run.code == 0, run.out + run.err
    result = json.loads(run.out)
    assert result["summary"]["ok"] == 19
    for car in result["cars"]:
        assert [w["workload_name"] for w in car["reply"]["deleted_workloads"]] == [name]
    assert name not in fleet.desired_workloads("CAR07")


def test_denied_offline_and_unknown_cars(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    path, [name] = manifest("agent_A")
    run = fleetctl("apply", str(path), "--vins", "CAR01-CAR22", "--timeout", "1.5", "-o", "json")
    assert run.code == 1
    result = json.loads(run.out)
    assert result["summary"] == {
        "total": 22,
        "ok": 19,
        "failed": 2,
        "timeout": 1,
        "not_attempted": 0,
    }
    cars = cars_by_vin(result)
    assert cars[fleet.read_only]["status"] == "failed"
    assert cars[fleet.read_only]["error"]["code"] == "ACCESS_DENIED"
    assert cars[fleet.offline]["status"] == "timeout"
    assert cars[fleet.offline]["error"]["code"] == "NO_REPLY"
    assert "offline since" in cars[fleet.offline]["error"]["message"]
    # Nobody holds requests for a car that never connected: the broker's PUBACK says so.
    assert cars[fleet.unknown]["status"] == "failed"
    assert cars[fleet.unknown]["error"]["code"] == "NOT_DELIVERED"
    assert "never connected" in cars[fleet.unknown]["error"]["message"]
    added = cars["CAR03"]["reply"]["added_workloads"]
    assert [(w["agent_name"], w["workload_name"]) for w in added] == [("agent_A", name)]
    assert len({car["request_id"] for car in result["cars"]}) == 22
    assert result["mqtt_protocol"] == "5"


def test_state_as_yaml_and_table(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    path, [name] = manifest("agent_A")
    assert fleetctl("apply", str(path), "--vins", "CAR01-CAR03", "--wait", "running").code == 0
    run = fleetctl("state", "workloadStates", "--vins", "CAR01-CAR03", "-o", "yaml")
    assert run.code == 0, run.out + run.err
    result = yaml.safe_load(run.out)
    assert result["masks"] == ["workloadStates"]
    for car in result["cars"]:
        [(iid, state)] = car["reply"]["workload_states"]["agent_A"][name].items()
        assert state["state"] == "RUNNING"
        assert state["substate"] == "RUNNING_OK"

    run = fleetctl("state", "--vin", "CAR02")
    assert run.code == 0
    assert f"{name} on agent_A ({iid[:12]}): RUNNING (RUNNING_OK)" in run.out


def test_state_of_the_read_only_car_works(fleet: Any, fleetctl: Any) -> None:
    run = fleetctl("state", "desiredState", "--vin", fleet.read_only, "-o", "json")
    assert run.code == 0, run.out
    assert "desired_state" in json.loads(run.out)["cars"][0]["reply"]
