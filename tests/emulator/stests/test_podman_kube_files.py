"""podman-kube refuses workload files (Ankaios v1.0.1 stest
``workloads/workload_files.robot`` "rejects unsupported workload files for workloads using
podman-kube runtime", manifest ``manifest_with_workload_files.yaml``).

``PodmanKubeRuntime::create_workload`` returns ``RuntimeError::Unsupported`` for a
workload with files, which the agent reports as ``Pending(StartingFailed)`` without retry
(``agent/src/runtime_connectors/podman_kube/podman_kube_runtime.rs``).
"""

from __future__ import annotations

import pytest
from ankaios_sdk import Ankaios
from emulator.ci_client import MakeEmulator
from emulator.state_log import REMOVED, StateLog
from emulator.stests.stest_data import manifest_text

KUBE = "kube_workload_with_unsupported_files"
REFUSAL = "Workload files are not supported for podman-kube runtime. Use ConfigMaps instead."


def test_podman_kube_workload_with_files_fails_to_start(make_emulator: MakeEmulator) -> None:
    # "When Ankaios agent is started with name agent_B"
    emu = make_emulator(state=manifest_text("manifest_with_workload_files"), agents=["agent_B"])
    [instance] = emu.instance_names(KUBE)
    kube_id = instance.split(".")[1]
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates.agent_B"]))
        log.wait_for(lambda s: s.last(KUBE, kube_id) == "PENDING_STARTING_FAILED", timeout=20)
        assert log.of(KUBE)[-1] == ("PENDING_STARTING_FAILED", REFUSAL)
        # Unsupported: no retry
        with pytest.raises(TimeoutError):
            log.wait_for(lambda s: s.last(KUBE, kube_id) != "PENDING_STARTING_FAILED", 0.5)
        # The podman workloads with files on agent_A run.
        assert {
            s.execution_state.substate.name
            for s in ank.get_workload_states_on_agent("agent_A").get_as_list()
        } <= {"PENDING_STARTING", "RUNNING_OK", "PENDING_INITIAL"}
        ank.delete_workload(KUBE)
        log.wait_for(lambda s: s.last(KUBE, kube_id) == REMOVED)
        assert log.of(KUBE)[-2:] == [("STOPPING_REQUESTED_AT_RUNTIME", ""), (REMOVED, "")]


def test_podman_kube_workload_without_files_runs(make_emulator: MakeEmulator) -> None:
    state = manifest_text("manifest_with_workload_files")
    # the same workload with its files and their config taken away
    head, kube = state.split(f"  {KUBE}:\n")
    kube = kube.replace(
        "    configs:\n      nginx_conf: web_server_config\n    files:\n"
        '      - mountPoint: "/etc/nginx/nginx.conf"\n        data: "{{nginx_conf}}"\n',
        "",
    )
    emu = make_emulator(state=f"{head}  {KUBE}:\n{kube}", agents=["agent_B"])
    emu.wait_for(
        lambda e: (
            [
                s["state"]
                for s in e.complete_state()["workloadStates"]
                .get("agent_B", {})
                .get(KUBE, {})
                .values()
            ]
            == ["Running"]
        )
    )
