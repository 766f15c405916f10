"""What users of kubectl and ank expect: delete by name, -f -, directories of manifests."""

from __future__ import annotations

import io
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
