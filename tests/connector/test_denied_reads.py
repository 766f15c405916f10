"""A state request Ankaios refuses says which field masks the car may read."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from testkit import MANIFESTS, Broker

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleetctl.cli import main as fleetctl


def run(argv: list[str], broker: Broker) -> tuple[int, str]:
    """fleetctl's exit code and what it printed (its table)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fleetctl(argv, broker.env())
    return code, out.getvalue()


@pytest.mark.parametrize("startup", ["state-least-privilege.yaml", "v1/state-least-privilege.yaml"])
def test_state_under_least_privilege_names_the_readable_masks(
    tmp_path: Path,
    start_connector: Callable[..., Connector],
    broker: Broker,
    vin: str,
    startup: str,
) -> None:
    # The connector is the startup state's fleetconnector, with that workload's rules.
    with Emulator(control_interface=tmp_path / "ci", state=MANIFESTS / startup) as emu:
        start_connector(emu.control_interface)
        code, out = run(["state", "--vin", vin], broker)
        assert code == 1
        assert (
            f"{vin}  failed  ACCESS_DENIED: Access denied: the connector's "
            "controlInterfaceAccess does not allow this read; it may read workloadStates, "
            "desiredState.workloads, desiredState.configs, agents: ask for those field masks"
        ) in out.splitlines()
        assert run(["state", "workloadStates", "agents", "--vin", vin], broker)[0] == 0


def test_a_deny_rule_is_named_too(
    tmp_path: Path,
    start_connector: Callable[..., Connector],
    broker: Broker,
    vin: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    access = {
        "allowRules": [{"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]}],
        "denyRules": [{"type": "StateRule", "operation": "Read", "filterMasks": ["agents"]}],
    }
    state = {
        "apiVersion": "v1",
        "workloads": {
            "fleetconnector": {
                "runtime": "podman",
                "agent": "agent_A",
                "runtimeConfig": "image: ghcr.io/eclipse-ankaios/fleet-connector:1.0.0",
                "controlInterfaceAccess": access,
            }
        },
    }
    with Emulator(control_interface=tmp_path / "ci", state=state) as emu:
        start_connector(emu.control_interface)
        capsys.readouterr()
        assert fleetctl(["state", "agents", "--vin", vin], broker.env()) == 1
        out = capsys.readouterr().out
        assert (
            f"{vin}  failed  ACCESS_DENIED: Access denied: the connector's "
            "controlInterfaceAccess does not allow this read; it may read * (but not agents): "
            "ask for those field masks"
        ) in out.splitlines()
