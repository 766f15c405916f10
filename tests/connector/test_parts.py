"""The connector stands on its own: it imports nothing of the emulator, fleetctl or bench.

A car's image carries the connector and the model of Ankaios (``ankaios_model``), not the
emulator the tests drive it with. So the connector must work where the emulator cannot
be imported, and the model must not lean on either side.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import MANIFESTS, Broker, Requester

from ankaios_emulator import Emulator
from fleet_connector.mqtt.topics import Operation

REPO = Path(__file__).resolve().parents[2]
# What each package of the car may not import (the rest of the repository): the cloud's
# tools and service, the load simulator, the benchmarks and the tests.
NOT_IN_A_CAR = {"ankaios_emulator", "fleetctl", "fleet_server", "fleet_sim", "bench", "tests"}
FORBIDDEN = {
    "fleet_connector": NOT_IN_A_CAR | {"vehicle_data_sender"},
    "ankaios_model": NOT_IN_A_CAR | {"fleet_connector", "vehicle_data_sender"},
    "vehicle_data_sender": NOT_IN_A_CAR,
}
CAR = ("ankaios_model", "fleet_connector", "vehicle_data_sender")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def imported_names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every absolute module an import statement names, wherever it stands (top, function,
    TYPE_CHECKING), and every dotted string (``importlib.import_module`` targets)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and _DOTTED.fullmatch(node.value)
        ):
            yield node.lineno, node.value


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_of_what_the_car_does_not_carry(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, package
    found = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in files
        for line, name in imported_names(ast.parse(path.read_text(), str(path)))
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert found == []


def test_the_car_distribution_is_the_car_part_of_the_whole() -> None:
    """car/pyproject.toml (what the images install, docs/containers.md) agrees with the whole."""
    with (REPO / "pyproject.toml").open("rb") as f:
        whole = tomllib.load(f)
    with (REPO / "car" / "pyproject.toml").open("rb") as f:
        car = tomllib.load(f)
    for key in ("name", "version", "requires-python", "dependencies"):
        assert car["project"][key] == whole["project"][key], key
    scripts = whole["project"]["scripts"]
    assert car["project"]["scripts"] == {
        name: target for name, target in scripts.items() if target.split(".")[0] in CAR
    }
    assert car["tool"]["setuptools"]["packages"]["find"]["include"] == [f"{p}*" for p in CAR]
    assert set(whole["tool"]["setuptools"]["packages"]["find"]["include"]) >= set(
        car["tool"]["setuptools"]["packages"]["find"]["include"]
    )
    package_data = car["tool"]["setuptools"]["package-data"]
    assert package_data == {
        name: files
        for name, files in whole["tool"]["setuptools"]["package-data"].items()
        if name.split(".")[0] in CAR
    }
    for package in CAR:
        assert (REPO / "car" / package).resolve() == REPO / package


# Run as `python -c`: refuses (and reports) any import of what a car does not carry, then
# runs the connector's own entry point, as the image's `fleet-connector` does.
_WITHOUT_EMULATOR = """
import sys
BLOCKED = {"ankaios_emulator", "fleetctl", "fleet_server", "fleet_sim", "bench",
           "vehicle_data_sender"}
already = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
if already:
    sys.exit(f"loaded before the connector: {already}")

class NotInTheCar:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            print(f"BLOCKED IMPORT {name}", file=sys.stderr, flush=True)
            raise ModuleNotFoundError(f"No module named {name!r} (not in the car)", name=name)
        return None

sys.meta_path.insert(0, NotInTheCar())
from fleet_connector.__main__ import main
sys.exit(main())
"""

SENDER = "vehicle-data-sender"
TUTORIAL = (MANIFESTS / "vehicle-data-sender.yaml").read_text()
OTHER_REGISTRY = TUTORIAL.replace("ghcr.io/eclipse-ankaios/", "registry.other.example/")


@pytest.fixture
def car_without_emulator(
    broker: Broker, vin: str, emulator: Emulator, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    policy = tmp_path / "policy.yaml"
    # A rule on images: every apply is judged on the workloads rendered by the server model.
    policy.write_text("allowedImagePrefixes: [ghcr.io/eclipse-ankaios/]\n")
    env = {
        **os.environ,
        **broker.env(),
        "VIN": vin,
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(emulator.control_interface),
        "POLICY_FILE": str(policy),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", _WITHOUT_EMULATOR],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def test_plan_and_policy_checked_apply_without_the_emulator(
    car_without_emulator: subprocess.Popen[str], emulator: Emulator, requester: Requester
) -> None:
    requester.wait_online()
    plan = requester.call(Operation.PLAN, TUTORIAL)
    assert plan["ankaios"] == {"verdict": "accepted"}, plan
    assert plan["policy"] == {"verdict": "allowed"}, plan
    assert plan["workloads"] == {SENDER: {"action": "create", "agent": "agent_A"}}

    refused = requester.apply(OTHER_REGISTRY)
    assert refused["error"]["code"] == "POLICY_DENIED", refused
    assert "registry.other.example/vehicle-data-sender:0.1.0" in refused["error"]["message"]

    assert requester.apply(TUTORIAL)["added_workloads"]
    desired = emulator.complete_state(["desiredState.workloads"])["desiredState"]
    assert list(desired["workloads"]) == [SENDER]

    car_without_emulator.send_signal(signal.SIGTERM)
    output, _ = car_without_emulator.communicate(timeout=10)
    assert car_without_emulator.returncode == 0, output
    assert "BLOCKED IMPORT" not in output
