"""The process runtime: real local processes, their environment, exits, restarts and logs."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ankaios_sdk import Ankaios, LogEntry, LogsStopResponse, Manifest
from emulator.ci_client import MakeEmulator

from ankaios_emulator import Emulator
from ankaios_emulator.runtimes.process import env_from_options

IMAGE = "test/worker:1"
WORKER = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("args", sys.argv[1:], flush=True)
for key in ("GREETING", "B", "C", "D", "ANKAIOS_CONTROL_INTERFACE_PATH"):
    print(key, os.environ.get(key), flush=True)
mode = os.environ.get("MODE", "run")
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
if mode == "sdk":
    from ankaios_sdk import Ankaios
    from ankaios_sdk._components.control_interface import ControlInterface
    path = os.environ["ANKAIOS_CONTROL_INTERFACE_PATH"]
    ControlInterface.ANKAIOS_CONTROL_INTERFACE_BASE_PATH = path
    with Ankaios() as ank:
        print("agents", sorted(ank.get_agents()), flush=True)
    sys.exit(0)
while True:
    time.sleep(0.05)
    if os.path.exists(os.environ.get("SAY_FILE", "/nonexistent")):
        print(open(os.environ["SAY_FILE"]).read().strip(), flush=True)
        os.unlink(os.environ["SAY_FILE"])
"""


# Logs need a LogRule; a StateRule on "*" does not cover them.
ACCESS = {
    "allowRules": [
        {"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]},
        {"type": "LogRule", "workloadNames": ["*"]},
    ]
}


def manifest(
    options: list[str],
    *,
    name: str = "worker",
    args: list[str] | None = None,
    policy: str = "NEVER",
) -> str:
    config = {"image": IMAGE, "commandOptions": options, "commandArgs": args or []}
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        workloads:
          {name}:
            runtime: podman
            agent: agent_A
            restartPolicy: {policy}
            runtimeConfig: '{json.dumps(config)}'
        """
    )


@pytest.fixture
def proc_emu(make_emulator: MakeEmulator, tmp_path: Path) -> Emulator:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return make_emulator(
        runtime="process", image_map={IMAGE: [sys.executable, str(script)]}, access=ACCESS
    )


def name_of(instance: Any) -> str:
    return f"{instance.workload_name}.{instance.workload_id}.{instance.agent_name}"


def instance_state(emu: Emulator, name: str) -> dict[str, tuple[str, str, str]]:
    tree = emu.complete_state()["workloadStates"]
    return {
        iid: (s["state"], s["subState"], s.get("additionalInfo", ""))
        for per_agent in tree.values()
        for iid, s in per_agent.get(name, {}).items()
    }


def collect_logs(ank: Ankaios, instance: Any, **options: Any) -> list[str]:
    campaign = ank.request_logs([instance], **options)
    assert [n.workload_id for n in campaign.accepted_workload_names] == [instance.workload_id]
    lines: list[str] = []
    while True:
        item = campaign.queue.get(timeout=5)
        if isinstance(item, LogsStopResponse):
            return lines
        assert isinstance(item, LogEntry)
        assert item.workload_instance_name.workload_id == instance.workload_id
        lines.append(item.message)


def test_env_options_forms() -> None:
    options = ["--net=host", "-e", "A=1", "--env", "B=2", "-eC=3", "--env=D=4", "-p", "80:80"]
    assert env_from_options(options) == {"A": "1", "B": "2", "C": "3", "D": "4"}


def test_process_gets_env_and_args_and_serves_logs(proc_emu: Emulator) -> None:
    options = ["-e", "GREETING=hi", "--env", "B=2", "-eC=3", "--env=D=4"]
    with Ankaios() as ank:
        added = ank.apply_manifest(Manifest.from_string(manifest(options, args=["x", "y"])))
        instance = added.added_workloads[0]
        proc_emu.wait_for(lambda e: "ANKAIOS" in " ".join(e.logs(name_of(instance))), 10)
        lines = collect_logs(ank, instance)
    assert lines[0] == "args ['x', 'y']"
    assert lines[1:5] == ["GREETING hi", "B 2", "C 3", "D 4"]
    assert lines[5] == "ANKAIOS_CONTROL_INTERFACE_PATH None"
    assert next(iter(instance_state(proc_emu, "worker").values()))[:2] == ("Running", "Ok")


def test_logs_tail_follow_and_cancel(proc_emu: Emulator, tmp_path: Path) -> None:
    say = tmp_path / "say"
    options = ["-e", f"SAY_FILE={say}"]
    with Ankaios() as ank:
        instance = ank.apply_manifest(Manifest.from_string(manifest(options))).added_workloads[0]
        proc_emu.wait_for(lambda e: len(e.logs(name_of(instance))) >= 6, 10)
        assert collect_logs(ank, instance, tail=1) == ["ANKAIOS_CONTROL_INTERFACE_PATH None"]

        campaign = ank.request_logs([instance], follow=True)
        say.write_text("hello later")
        messages: list[str] = []
        while "hello later" not in messages:
            item = campaign.queue.get(timeout=5)
            assert isinstance(item, LogEntry)
            messages.append(item.message)
        assert messages[0] == "args []"
        ank.stop_receiving_logs(campaign)

        following = ank.request_logs([instance], follow=True, tail=0)
        ank.delete_manifest(Manifest.from_string(manifest(options)))
        stop = following.queue.get(timeout=10)
        assert isinstance(stop, LogsStopResponse)


def test_logs_of_unknown_instances_are_not_accepted(proc_emu: Emulator) -> None:
    from ankaios_sdk import WorkloadInstanceName

    with Ankaios() as ank:
        campaign = ank.request_logs([WorkloadInstanceName("agent_A", "ghost", "0" * 64)])
        assert campaign.accepted_workload_names == []


def test_config_change_restarts_the_process(proc_emu: Emulator) -> None:
    with Ankaios() as ank:
        first = ank.apply_manifest(Manifest.from_string(manifest(["-e", "GREETING=one"])))
        old = first.added_workloads[0]
        proc_emu.wait_for(lambda e: old.workload_id in str(e.process_ids()), 10)
        old_pid = next(iter(proc_emu.process_ids().values()))

        second = ank.apply_manifest(Manifest.from_string(manifest(["-e", "GREETING=two"])))
        assert [w.workload_id for w in second.deleted_workloads] == [old.workload_id]
        new = second.added_workloads[0]
        assert new.workload_id != old.workload_id
        proc_emu.wait_for(
            lambda e: (
                list(instance_state(e, "worker")) == [new.workload_id]
                and new.workload_id in str(e.process_ids())
            ),
            10,
        )
        new_pid = next(iter(proc_emu.process_ids().values()))
    assert new_pid != old_pid
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("exit0", ("Succeeded", "Ok", "")), ("exit3", ("Failed", "ExecFailed", "Exit code: '3'"))],
)
def test_exit_is_reported(proc_emu: Emulator, mode: str, expected: tuple[str, str, str]) -> None:
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(manifest(["-e", f"MODE={mode}"])))
        proc_emu.wait_for(lambda e: list(instance_state(e, "worker").values()) == [expected], 10)


def test_restart_policy_always_starts_again(proc_emu: Emulator) -> None:
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(manifest(["-e", "MODE=exit0"], policy="ALWAYS")))
        proc_emu.wait_for(lambda e: e.start_count("worker") >= 3, 10)


def test_unknown_image_is_retried(proc_emu: Emulator) -> None:
    # An image the map does not know stands for one podman cannot pull: a create
    # error, which Ankaios' agent retries (details in stests/test_retry_creation.py).
    text = manifest([]).replace(IMAGE, "not/mapped:1")
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(text))
        proc_emu.wait_for(
            lambda e: (
                [s[:2] for s in instance_state(e, "worker").values()] == [("Pending", "Starting")]
                and retry_number(next(iter(instance_state(e, "worker").values()))[2]) >= 2
            ),
            10,
        )
    # (a further retry may have come meanwhile: the backoff is random)
    [(_, _, info)] = instance_state(proc_emu, "worker").values()
    assert retry_number(info) >= 2
    assert info.partition(": ")[2] == "image 'not/mapped:1' is not in the image map"


def retry_number(info: str) -> int:
    """n of an additional info ``Retry <n>: ...``; 0 for any other."""
    match = re.match(r"Retry (\d+): ", info)
    return int(match.group(1)) if match else 0


def test_unreadable_runtime_config_fails_to_start_without_retry(proc_emu: Emulator) -> None:
    # RuntimeError::Unsupported: Pending(StartingFailed) and no retry.
    text = manifest([]).replace("runtimeConfig: '", "runtimeConfig: 'commandArgs: 1 #")
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(text))
        proc_emu.wait_for(
            lambda e: (
                [s[:2] for s in instance_state(e, "worker").values()]
                == [("Pending", "StartingFailed")]
            ),
            10,
        )


def test_workload_with_access_gets_its_own_control_interface(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    state = manifest(["-e", "MODE=sdk"]).replace(
        "    restartPolicy: NEVER\n",
        "    restartPolicy: NEVER\n"
        "    controlInterfaceAccess:\n"
        "      allowRules: [{type: StateRule, operation: Read, filterMasks: ['agents']}]\n",
    )
    emu = make_emulator(
        runtime="process",
        run_dir=tmp_path / "run",
        state=state,
        image_map={IMAGE: [sys.executable, str(script)]},
    )
    directory = emu.control_interface_of("worker")
    assert directory == tmp_path / "run" / "worker" / "control_interface"
    emu.wait_for(
        lambda e: [s[:2] for s in instance_state(e, "worker").values()] == [("Succeeded", "Ok")],
        15,
    )
    [iid] = instance_state(emu, "worker")
    lines = emu.logs(f"worker.{iid}.agent_A")
    assert f"ANKAIOS_CONTROL_INTERFACE_PATH {directory}" in lines
    assert "agents ['agent_A']" in lines
