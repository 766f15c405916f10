"""Waves with --batch-size and --max-failures, and --wait running."""

from __future__ import annotations

import json
from typing import Any


def test_max_failures_stops_after_the_failing_wave(
    fleet: Any, fleetctl: Any, manifest: Any
) -> None:
    path, [name] = manifest("agent_A")
    run = fleetctl(
        "apply",
        str(path),
        "--vin",
        fleet.read_only,
        "--vins",
        "CAR01-CAR05",
        "--batch-size",
        "2",
        "--max-failures",
        "1",
        "-o",
        "json",
    )
    assert run.code == 1
    result = json.loads(run.out)
    assert result["waves"] == 3
    assert result["stopped_after_wave"] == 1
    assert result["not_attempted"] == ["CAR02", "CAR03", "CAR04", "CAR05"]
    statuses = {car["vin"]: car["status"] for car in result["cars"]}
    assert statuses[fleet.read_only] == "failed"
    assert statuses["CAR01"] == "ok"
    assert name in fleet.desired_workloads("CAR01")
    assert name not in fleet.desired_workloads("CAR02")
    assert "--max-failures is 1" in result["cars"][-1]["error"]["message"]


def test_waves_go_on_below_max_failures(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    path, [name] = manifest("agent_A")
    run = fleetctl(
        "apply",
        str(path),
        "--vins",
        f"CAR01-CAR04,{fleet.read_only},CAR05",
        "--batch-size",
        "2",
        "--max-failures",
        "2",
    )
    assert run.code == 1
    assert "6 car(s): 5 ok, 1 failed" in run.out
    assert "not attempted" not in run.out
    assert name in fleet.desired_workloads("CAR05")


def test_table_names_the_cars_not_attempted(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    path, _ = manifest("agent_A")
    run = fleetctl(
        "apply",
        str(path),
        "--vin",
        fleet.read_only,
        "--vin",
        "CAR08",
        "--vin",
        "CAR09",
        "--batch-size",
        "1",
        "--max-failures",
        "1",
    )
    assert run.code == 1
    assert run.out.splitlines()[-1] == "stopped after wave 1 of 3; not attempted: CAR08, CAR09"
    assert "CAR08  not_attempted  the rollout stopped after wave 1 of 3" in run.out


def test_wait_running(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    path, [name] = manifest("agent_A")
    run = fleetctl("apply", str(path), "--vins", "CAR01-CAR18", "--wait", "running", "-o", "json")
    assert run.code == 0, run.out
    for car in json.loads(run.out)["cars"]:
        [workload] = car["workloads"]
        assert workload["workload_name"] == name
        assert workload["state"] == "running"
        assert workload["workload_id"] == car["reply"]["added_workloads"][0]["workload_id"]


def test_wait_reports_failed_and_late_workloads(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    # agent_B does not exist, so its workload stays pending; CAR19 cannot start anything.
    path, [here, elsewhere] = manifest("agent_A", "agent_B")
    run = fleetctl(
        "apply",
        str(path),
        "--vin",
        "CAR01",
        "--vin",
        fleet.failing_runtime,
        "--wait",
        "running",
        "--wait-timeout",
        "1",
        "-o",
        "json",
    )
    assert run.code == 1
    cars = {car["vin"]: car for car in json.loads(run.out)["cars"]}

    late = cars["CAR01"]
    assert late["status"] == "timeout"
    assert late["error"]["code"] == "WAIT_TIMEOUT"
    assert f"{elsewhere}: pending (Initial)" in late["error"]["message"]
    states = {w["workload_name"]: w["state"] for w in late["workloads"]}
    assert states == {here: "running", elsewhere: "pending"}

    failed = cars[fleet.failing_runtime]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "NOT_RUNNING"
    assert f"{here}: pending (StartingFailed)" in failed["error"]["message"]
    assert "Unsupported Runtime" in failed["error"]["message"]


def test_wait_table_explains_failures(fleet: Any, fleetctl: Any, manifest: Any) -> None:
    path, [name] = manifest("agent_A")
    run = fleetctl("apply", str(path), "--vin", fleet.failing_runtime, "--wait", "running")
    assert run.code == 1
    assert f"{fleet.failing_runtime}  failed  NOT_RUNNING: {name}: pending" in run.out
