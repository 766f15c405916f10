"""What a car says is shown, in the table too: warnings of an apply, the agents of a state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

WARNING = (
    "warning: unknown key 'restartpolicy' at workloads.{name} is ignored by Ankaios; "
    "did you mean 'restartPolicy'?"
)


def misspelt(manifest: Any) -> tuple[Path, str]:
    path, [name] = manifest("agent_A")
    path.write_text(path.read_text().replace("restartPolicy:", "restartpolicy:"))
    return path, name


def test_apply_shows_the_cars_warnings_in_the_table(
    fleetctl: Any, manifest: Any, request: pytest.FixtureRequest
) -> None:
    path, name = misspelt(manifest)
    request.addfinalizer(lambda: fleetctl("delete", str(path), "--vins", "CAR01,CAR02"))
    run = fleetctl("apply", str(path), "--vins", "CAR01,CAR02")
    assert run.code == 0, run.out + run.err
    assert run.out.splitlines() == [
        "VIN    RESULT  DETAIL",
        f"CAR01  ok      added: {name}; deleted: -",
        f"CAR01  ok      {WARNING.format(name=name)}",
        f"CAR02  ok      added: {name}; deleted: -",
        f"CAR02  ok      {WARNING.format(name=name)}",
        "2 car(s): 2 ok",
    ]


def test_apply_wait_shows_the_warnings_whether_it_runs_or_not(
    fleet: Any, fleetctl: Any, manifest: Any, request: pytest.FixtureRequest
) -> None:
    path, name = misspelt(manifest)
    cars = f"CAR03,{fleet.failing_runtime}"
    request.addfinalizer(lambda: fleetctl("delete", str(path), "--vins", cars))
    run = fleetctl(
        "apply",
        str(path),
        "--vins",
        f"CAR03,{fleet.failing_runtime}",
        "--wait",
        "running",
        "--settle",
        "0",
        "--wait-timeout",
        "20",
    )
    assert run.code == 1
    lines = run.out.splitlines()
    assert f"CAR03  ok      added: {name}; deleted: -; running" in lines
    warning = WARNING.format(name=name)
    assert f"CAR03  ok      {warning}" in lines
    # The car whose workload fails: its failure, then the warning that may explain it.
    failed = [line for line in lines if line.startswith(fleet.failing_runtime)]
    assert failed[0].split()[1:3] == ["failed", "NOT_RUNNING:"]
    assert failed[-1].endswith(warning)


def test_state_agents_lists_the_agents(fleetctl: Any) -> None:
    run = fleetctl("state", "agents", "--vin", "CAR04")
    assert run.code == 0
    [header, row, summary] = run.out.splitlines()
    assert header.split() == ["VIN", "RESULT", "DETAIL"]
    assert row.startswith("CAR04  ok      agent agent_A: cpu ")
    assert "free memory " in row
    assert "desired" not in run.out
    assert summary == "1 car(s): 1 ok"
    agents = json.loads(fleetctl("state", "agents", "--vin", "CAR04", "-o", "json").out)
    assert list(agents["cars"][0]["reply"]["agents"]) == ["agent_A"]
