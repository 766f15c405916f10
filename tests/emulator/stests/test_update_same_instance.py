"""An update that keeps the instance name restarts the workload (Ankaios v1.0.1 stests
``workloads/workload_files.robot`` and ``manifests/apply_manifests.robot``).

Only ``runtimeConfig`` decides the instance id, so a change of a workload's files (here
through a config rendered into them) or of its access rules keeps the name. The server
still lists the workload as deleted and added; the agent updates it: the old instance
stops and is removed, the new one starts under the same name
(``workload_control_loop.rs`` ``update_workload_on_runtime``).
"""

from __future__ import annotations

from ankaios_sdk import Ankaios
from emulator.ci_client import MakeEmulator
from emulator.state_log import REMOVED, StateLog
from emulator.stests.stest_data import manifest, manifest_text, state_subset

from ankaios_emulator import Emulator

TEXT_FILE = "podman_workload_with_mounted_text_file"
CONTAINERD_TEXT_FILE = "containerd_workload_with_mounted_text_file"
KUBE = "kube_workload_with_unsupported_files"

RESTART = [
    ("RUNNING_OK", ""),
    ("STOPPING_REQUESTED_AT_RUNTIME", ""),
    (REMOVED, ""),
    ("PENDING_STARTING", "Triggered at runtime."),
    ("RUNNING_OK", ""),
]


def running(emu: Emulator, workload: str) -> str:
    """Wait until ``workload`` runs on agent_A; its instance id."""
    emu.wait_for(
        lambda e: any(
            s.get("state") == "Running"
            for s in e.complete_state()["workloadStates"]
            .get("agent_A", {})
            .get(workload, {})
            .values()
        )
    )
    [name] = emu.instance_names(workload)
    return name.split(".")[1]


def test_file_content_update_restarts_the_instance(make_emulator: MakeEmulator) -> None:
    # "Test Ankaios updates a workload upon update of its workload file content"
    emu = make_emulator(state=manifest_text("manifest_with_workload_files"))
    text_id = running(emu, TEXT_FILE)
    containerd_id = running(emu, CONTAINERD_TEXT_FILE)
    # agent_B is not connected: its workload stays Pending(Initial).
    [kube] = emu.instance_names(KUBE)
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        # ank set state desiredState.workloads.<text file> desiredState.configs.web_server_config
        result = ank.apply_manifest(
            state_subset(
                "update_state_workload_files",
                workloads=[TEXT_FILE],
                configs=["web_server_config"],
            )
        )
        # Three workloads render web_server_config into a file: all are updated, and
        # no runtimeConfig changed, so the ids stay.
        expected = sorted(
            [
                (TEXT_FILE, text_id),
                (CONTAINERD_TEXT_FILE, containerd_id),
                (KUBE, kube.split(".")[1]),
            ]
        )
        assert sorted((w.workload_name, w.workload_id) for w in result.added_workloads) == expected
        assert sorted((w.workload_name, w.workload_id) for w in result.deleted_workloads) == (
            expected
        )
        log.wait_for(lambda s: s.of(TEXT_FILE) == RESTART and s.of(CONTAINERD_TEXT_FILE) == RESTART)
        # The desired state keeps the template; the rendered file has the new config.
        [file] = ank.get_workload(TEXT_FILE)[0].get_files()
        assert file.to_dict()["content"]["data"] == "{{nginx_conf}}"
        configs = ank.get_state(["desiredState.configs.web_server_config"]).get_configs()
        assert "location /update" in configs["web_server_config"]
    assert emu.start_count(TEXT_FILE) == 2
    # The one running instance is the new one.
    assert emu.instance_names(TEXT_FILE) == [f"{TEXT_FILE}.{text_id}.agent_A"]


def test_v01_startup_then_v1_apply_restarts_the_changed_workload(
    make_emulator: MakeEmulator,
) -> None:
    # "Test Ankaios Podman Update workload with current API version": the v1 manifest's
    # sleepy has no controlInterfaceAccess any more; everything else is the same.
    emu = make_emulator(state=manifest_text("default_deprecated_api"))
    sleepy_id = running(emu, "sleepy")
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        result = ank.apply_manifest(manifest("default"))
        assert [(w.workload_name, w.workload_id) for w in result.added_workloads] == [
            ("sleepy", sleepy_id)
        ]
        assert [(w.workload_name, w.workload_id) for w in result.deleted_workloads] == [
            ("sleepy", sleepy_id)
        ]
        log.wait_for(lambda s: s.of("sleepy") == RESTART)
        [state] = ank.get_workload_states_for_name("sleepy").get_as_list()
        assert state.workload_instance_name.workload_id == sleepy_id
    assert emu.start_count("sleepy") == 2
