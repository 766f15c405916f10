"""Access rules added or removed by an update (Ankaios v1.0.1 stest
``control_interface/control_interface.robot``; ``apply_manifests.robot`` for v0.1 -> v1).

A workload without allow rules has no control interface. When an update takes its rules
away, the agent aborts the control-interface task and drops it, which removes the FIFOs
and their directory (``exchange_control_interface`` in ``agent/src/workload.rs``); a
client still connected gets nothing more through them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ankaios_sdk import Ankaios, AnkaiosResponseError, ControlInterfaceException
from emulator.ci_client import MakeEmulator, connector_state
from emulator.conftest import SdkPath
from emulator.state_log import StateLog
from emulator.stests.stest_data import manifest, manifest_text, sdk_manifest

from ankaios_emulator import Emulator

ALPINE = "ghcr.io/eclipse-ankaios/tests/alpine:latest"
# The alpine container runs its commandArgs (`echo Hello Ankaios`): Succeeded(Ok).
IMAGES = {ALPINE: ["env"]}
DYNAMIC_NGINX_STATES = "workloadStates.agent_A.dynamic_nginx"


def simple_emulator(make_emulator: MakeEmulator, tmp_path: Path, startup: str) -> Emulator:
    emu = make_emulator(
        state=manifest_text(startup),
        runtime="process",
        run_dir=tmp_path / "run",
        control_interface=tmp_path / "ci",
        image_map=IMAGES,
    )
    emu.wait_for(lambda e: e.start_count("simple") == 1 and succeeded(e), 10)
    return emu


def succeeded(emu: Emulator) -> bool:
    states = emu.complete_state()["workloadStates"].get("agent_A", {}).get("simple", {})
    return [s["state"] for s in states.values()] == ["Succeeded"]


def fifos(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*")) if directory.exists() else []


def test_update_without_access_closes_the_control_interface(
    make_emulator: MakeEmulator, tmp_path: Path, sdk_path: SdkPath
) -> None:
    # "Test Ankaios workload restart after update without a Control Interface access"
    emu = simple_emulator(make_emulator, tmp_path, "simple_with_control")
    simple_ci = tmp_path / "run" / "simple" / "control_interface"
    assert fifos(simple_ci) == ["input", "output"]
    sdk_path(simple_ci)
    with Ankaios() as workload_client:
        # The workload's rules: read the states of dynamic_nginx, nothing else.
        workload_client.get_state([DYNAMIC_NGINX_STATES])
        with pytest.raises(AnkaiosResponseError, match="Access denied"):
            workload_client.get_state(["desiredState"])
        sdk_path(tmp_path / "ci")
        with Ankaios() as operator:
            result = operator.apply_manifest(manifest("simple"))
            [(added, deleted)] = zip(result.added_workloads, result.deleted_workloads, strict=True)
            assert added.workload_id == deleted.workload_id
            emu.wait_for(lambda e: e.start_count("simple") == 2 and succeeded(e), 10)
        # "the mount point for the control interface has not been generated"
        assert not simple_ci.exists()
        # The connected client is cut off: its requests are not served any more.
        with pytest.raises(ControlInterfaceException):
            workload_client.get_state([DYNAMIC_NGINX_STATES], timeout=1)
    sdk_path(simple_ci)
    with pytest.raises(ControlInterfaceException, match="input fifo does not exist"):
        Ankaios()


def test_update_with_access_creates_the_control_interface(
    make_emulator: MakeEmulator, tmp_path: Path, sdk_path: SdkPath
) -> None:
    # "Test Ankaios workload restart after update with a Control Interface access"
    emu = simple_emulator(make_emulator, tmp_path, "simple")
    simple_ci = tmp_path / "run" / "simple" / "control_interface"
    assert fifos(simple_ci) == []
    with Ankaios() as operator:
        operator.apply_manifest(manifest("simple_with_control"))
        emu.wait_for(lambda e: e.start_count("simple") == 2 and succeeded(e), 10)
    # "the mount point for the control interface has been generated"
    assert fifos(simple_ci) == ["input", "output"]
    sdk_path(simple_ci)
    with Ankaios() as workload_client:
        workload_client.get_state([DYNAMIC_NGINX_STATES])
        with pytest.raises(AnkaiosResponseError, match="Access denied"):
            workload_client.get_state(["desiredState"])


def test_v1_apply_without_access_closes_the_v01_control_interface(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    # apply_manifests.robot: the v0.1 sleepy reads `*`; the v1 one has no rules.
    emu = make_emulator(
        state=manifest_text("default_deprecated_api"),
        run_dir=tmp_path / "run",
        control_interface=tmp_path / "ci",
    )
    sleepy_ci = tmp_path / "run" / "sleepy" / "control_interface"
    emu.wait_for(lambda e: fifos(sleepy_ci) == ["input", "output"])
    with Ankaios() as operator:
        log = StateLog(operator.register_event(["workloadStates.agent_A.sleepy"]))
        operator.apply_manifest(manifest("default"))
        log.wait_for(
            lambda s: [x for x, _ in s.of("sleepy")][-1:] == ["RUNNING_OK"] and len(s.seen) > 1
        )
    assert not sleepy_ci.exists()


def test_served_client_loses_its_control_interface_with_its_rules(
    make_emulator: MakeEmulator, tmp_path: Path, sdk_path: SdkPath
) -> None:
    # The client under test is the workload `fleetconnector`; an update of its workload
    # without rules (sent by another workload, `operator`) closes its control interface
    # as for any workload.
    operator_rules = "{type: StateRule, operation: ReadWrite, filterMasks: ['*']}"
    state = connector_state() + (
        "  operator:\n    runtime: podman\n    agent: agent_A\n"
        '    runtimeConfig: "image: operator"\n'
        f"    controlInterfaceAccess:\n      allowRules: [{operator_rules}]\n"
    )
    emu = make_emulator(state=state, run_dir=tmp_path / "run", control_interface=tmp_path / "ci")
    emu.wait_for(lambda e: fifos(tmp_path / "run" / "operator" / "control_interface") != [])
    served = Ankaios()
    try:
        served.get_state(["desiredState"])
        sdk_path(tmp_path / "run" / "operator" / "control_interface")
        without_rules = {
            "apiVersion": "v1",
            "workloads": {
                "fleetconnector": {
                    "runtime": "podman",
                    "agent": "agent_A",
                    "runtimeConfig": "image: connector",
                }
            },
        }
        with Ankaios() as operator:
            result = operator.apply_manifest(sdk_manifest(without_rules))
        assert [w.workload_name for w in result.added_workloads] == ["fleetconnector"]
        emu.wait_for(lambda e: not (tmp_path / "ci" / "input").exists())
        with pytest.raises(ControlInterfaceException):
            served.get_state(["desiredState"], timeout=1)
    finally:
        served._control_interface.disconnect()
