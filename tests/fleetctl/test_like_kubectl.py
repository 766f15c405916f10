"""What users of kubectl and ank expect: delete by name, -f -, directories of manifests."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def test_delete_workload_by_name_without_a_manifest(
    fleet: Any, fleetctl: Any, manifest: Any
) -> None:
    path, names = manifest("agent_A", "agent_A")
    assert fleetctl("apply", str(path), "--vin", "CAR06").code == 0
    run = fleetctl("delete", "workload", *names, "--vin", "CAR06")
    assert run.code == 0, run.out + run.err
    assert f"CAR06  ok      added: -; deleted: {', '.join(sorted(names))}" in run.out
    assert not set(names) & set(fleet.desired_workloads("CAR06"))
    # A dry run plans the same delete.
    run = fleetctl("delete", "workloads", "nothing-here", "--vin", "CAR06", "--dry-run")
    assert run.code == 0
    assert "CAR06  ok      workload nothing-here: unchanged" in run.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["delete", "workload", "a.b", "--vin", "A"], "workload a.b: "),
        (["delete", "a.yaml", "b.yaml", "--vin", "A"], "delete takes one FILE"),
        (["delete", "--vin", "A"], "the following arguments are required: FILE"),
        (["apply", "x.yaml", "-f", "y.yaml", "--vin", "A"], "name the manifest once"),
    ],
)
def test_bad_delete_and_file_arguments_are_usage_errors(
    fleetctl: Any, argv: list[str], message: str
) -> None:
    run = fleetctl(*argv)
    assert run.code == 2
    assert message in run.err


def test_apply_reads_stdin_with_dash(
    fleet: Any, fleetctl: Any, manifest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, [name] = manifest("agent_A")
    for argv in (("-f", "-"), ("-",)):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
        run = fleetctl("apply", *argv, "--vin", "CAR07")
        assert run.code == 0, run.err
        assert f"CAR07  ok      added: {name}; deleted: -" in run.out
        assert fleetctl("delete", "workload", name, "--vin", "CAR07").code == 0


def test_a_directory_is_applied_as_one_manifest(
    fleet: Any, fleetctl: Any, manifest: Any, tmp_path: Path
) -> None:
    directory = tmp_path / "manifests"
    directory.mkdir()
    first, [a] = manifest("agent_A")
    second, [b] = manifest("agent_A")
    first.rename(directory / "a.yaml")
    second.rename(directory / "b.yml")
    (directory / "notes.txt").write_text("not a manifest")
    run = fleetctl("apply", str(directory), "--vin", "CAR08")
    assert run.code == 0, run.err
    assert f"CAR08  ok      added: {', '.join(sorted([a, b]))}; deleted: -" in run.out
    validated = fleetctl("validate", str(directory), env={})
    assert validated.code == 0
    assert validated.out.splitlines() == [
        f"{directory / 'a.yaml'}: valid",
        f"{directory / 'b.yml'}: valid",
    ]
    assert fleetctl("delete", str(directory), "--vin", "CAR08").code == 0

    (directory / "c.yaml").write_text((directory / "a.yaml").read_text())
    run = fleetctl("apply", str(directory), "--vin", "CAR08")
    assert run.code == 2
    assert run.err == (
        f"fleetctl: error: {directory / 'c.yaml'}: workload {a} is also in {directory / 'a.yaml'}\n"
    )


def test_get_workload_by_name_singular_or_plural(
    fleetctl: Any, manifest: Any, request: pytest.FixtureRequest
) -> None:
    path, [name] = manifest("agent_A")
    assert fleetctl("apply", str(path), "--vins", "CAR09,CAR10", "--wait", "running").code == 0
    request.addfinalizer(lambda: fleetctl("delete", str(path), "--vins", "CAR09,CAR10"))
    for what in ("workload", "workloads"):
        run = fleetctl("get", what, name, "--vins", "CAR09-CAR10", "--listen", "0.3")
        assert run.code == 0
        *rows, summary = run.out.splitlines()[1:]
        assert [row.split()[:3] for row in rows] == [
            ["CAR09", name, "running"],
            ["CAR10", name, "running"],
        ]
        assert summary == "2 workload(s) on 2 car(s): 2 running"
    wide = fleetctl("get", "workload", name, "--vin", "CAR09", "-o", "wide", "--listen", "0.3")
    header, row = wide.out.splitlines()[:2]
    assert header.split() == [
        "VIN",
        "WORKLOAD",
        "STATE",
        "SUBSTATE",
        "AGENT",
        "INSTANCE",
        "SINCE",
        "INFO",
    ]
    assert len(row.split()[5]) >= 12  # the instance id


def test_get_agents_and_configs(fleetctl: Any, sender_manifest: Path) -> None:
    run = fleetctl("get", "agents", "--vins", "CAR11,CAR12", "--listen", "0.3")
    assert run.code == 0
    header, *rows = run.out.splitlines()
    assert header.split() == ["VIN", "AGENT", "CONNECTED", "LOAD", "TAGS", "SINCE"]
    assert [row.split()[:3] for row in rows] == [
        ["CAR11", "agent_A", "yes"],
        ["CAR12", "agent_A", "yes"],
    ]
    assert fleetctl("apply", str(sender_manifest), "--vin", "CAR11").code == 0
    try:
        run = fleetctl("get", "configs", "--vin", "CAR11")
        assert run.code == 0, run.out
        [line] = [row for row in run.out.splitlines() if row.startswith("CAR11")]
        assert line.startswith("CAR11  ok      config vehicle-data-sender-config: {")
        assert '{"key": "INTERVAL", "value": "1"}' in line
        run = fleetctl("get", "config", "nope", "--vin", "CAR11")
        assert "CAR11  ok      no configs" in run.out
        missing = fleetctl("get", "configs")
        assert missing.code == 2
        assert "get configs asks the cars" in missing.err
    finally:
        fleetctl("delete", str(sender_manifest), "--vin", "CAR11")


def test_describe_car(fleet: Any, fleetctl: Any) -> None:
    run = fleetctl("describe", "car", "CAR12", "--listen", "0.3")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "Car:       CAR12"
    assert lines[1].startswith("Status:    online since 20")
    assert lines[2] == "Ankaios:   connected"
    assert lines[3].startswith("Connector: ") and "(ankaios-sdk 1.0.1)" in lines[3]
    assert lines[4] == "Agents:"
    assert lines[6].split()[:3] == ["CAR12", "agent_A", "yes"]
    assert "Workloads:" in lines
    data = json.loads(fleetctl("describe", "car", "CAR12", "-o", "json", "--listen", "0.3").out)
    assert data["presence"]["status"] == "online"
    assert [a["agent"] for a in data["agents"]] == ["agent_A"]
    unknown = fleetctl("describe", "car", fleet.unknown, "--listen", "0.3")
    assert unknown.code == 1
    assert unknown.out == f"fleetctl: the broker holds nothing for car {fleet.unknown}\n"


def test_wide_output_and_colour_for_failed_rows(
    fleet: Any, fleetctl: Any, manifest: Any, request: pytest.FixtureRequest
) -> None:
    path, _ = manifest("agent_A")
    cars = f"CAR13,{fleet.read_only}"
    request.addfinalizer(lambda: fleetctl("delete", str(path), "--vin", "CAR13"))
    run = fleetctl("apply", str(path), "--vins", cars, "-o", "wide")
    assert run.code == 1
    header, ok, failed = run.out.splitlines()[:3]
    assert header.split() == ["VIN", "RESULT", "SECONDS", "REQUEST", "DETAIL"]
    assert ok.split()[:2] == ["CAR13", "ok"] and float(ok.split()[2]) > 0
    assert failed.split()[1] == "failed" and failed.split()[4] == "ACCESS_DENIED:"
    assert "\x1b" not in run.out  # not a terminal: no colour

    # At a terminal the failed row is red, unless NO_COLOR says otherwise.
    env = {**os.environ, **fleet.env()}
    argv = [sys.executable, "-m", "fleetctl", "state", "--vins", cars, "workloadStates"]
    assert f"{RED}{fleet.read_only}" not in at_a_terminal(argv, env)  # may read: all ok
    argv = [sys.executable, "-m", "fleetctl", "apply", str(path), "--vins", cars]
    coloured = at_a_terminal(argv, env)
    assert f"{RED}{fleet.read_only}  failed  ACCESS_DENIED:" in coloured
    assert f"{RED}CAR13" not in coloured
    assert "\x1b" not in at_a_terminal(argv, {**env, "NO_COLOR": "1"})


RED = "\x1b[31m"


def at_a_terminal(argv: list[str], env: dict[str, str]) -> str:
    """What a program writes to a terminal (a pseudo-terminal of its own)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdout=follower, stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            out += chunk
        process.wait(30)
    finally:
        process.kill()
        os.close(leader)
    return out.decode()
