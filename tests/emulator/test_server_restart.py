"""An Ankaios server restart: back to the startup state, the agent reconciles its workloads.

What Ankaios 1.0.1 does is in docs/emulator-semantics.md section 6; these tests drive the
emulator through the unmodified SDK (and a raw client where frames must be seen).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ankaios_sdk import Ankaios, ConnectionClosedException, ControlInterfaceException, Manifest
from ankaios_sdk._protos import _ank_base as ank_base
from ankaios_sdk._protos import _control_api as control_api
from emulator.ci_client import MakeEmulator, RawClient, add_workload

from ankaios_emulator import Emulator

IMAGE = "test/worker:1"
# Runs until stopped; MODE=exit0 ends at once.
WORKER = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("started", os.getpid(), flush=True)
if os.environ.get("MODE") == "exit0":
    sys.exit(0)
while True:
    time.sleep(0.05)
"""
ALL = {"allowRules": [{"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]}]}


def workload(options: list[str], access: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "runtime": "podman",
        "agent": "agent_A",
        "runtimeConfig": json.dumps({"image": IMAGE, "commandOptions": options}),
    }
    if access is not None:
        spec["controlInterfaceAccess"] = access
    return spec


STARTUP = {
    "apiVersion": "v1",
    "workloads": {
        # the client under test's own workload: has the control interface
        "keeper": workload(["-e", "ROLE=keeper"], ALL),
        "done": workload(["-e", "MODE=exit0"]),
        "changed": workload(["-e", "ROLE=changed"]),
        "dropped": workload(["-e", "ROLE=dropped"]),
    },
}


def manifest(workloads: dict[str, Any]) -> Manifest:
    return Manifest.from_dict({"apiVersion": "v1", "workloads": workloads})


def states(emu: Emulator, name: str) -> dict[str, tuple[str, str]]:
    return {
        iid: (s["state"], s["subState"])
        for per_agent in emu.complete_state()["workloadStates"].values()
        for iid, s in per_agent.get(name, {}).items()
    }


def running(emu: Emulator, *names: str) -> bool:
    return all(list(states(emu, n).values()) == [("Running", "Ok")] for n in names)


def pid_of(emu: Emulator, name: str) -> int:
    [pid] = [p for instance, p in emu.process_ids().items() if instance.startswith(f"{name}.")]
    return pid


@pytest.fixture
def proc_emu(make_emulator: MakeEmulator, tmp_path: Path) -> Emulator:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    emu = make_emulator(
        state=STARTUP,
        runtime="process",
        run_dir=tmp_path / "run",
        image_map={IMAGE: [sys.executable, str(script)]},
    )
    emu.wait_for(lambda e: running(e, "keeper", "changed", "dropped"), 60)
    emu.wait_for(lambda e: list(states(e, "done").values()) == [("Succeeded", "Ok")], 60)
    return emu


def test_workloads_after_a_server_restart(
    proc_emu: Emulator, sdk_path: Any, tmp_path: Path
) -> None:
    emu = proc_emu
    ci = emu.control_interface_of("keeper")
    sdk_path(ci)
    keeper_pid = pid_of(emu, "keeper")
    changed_pid = pid_of(emu, "changed")
    startup_changed = set(states(emu, "changed"))
    done_starts = emu.start_count("done")
    with Ankaios() as ank:
        ank.apply_manifest(manifest({"extra": workload(["-e", "ROLE=extra"])}))
        ank.apply_manifest(manifest({"changed": workload(["-e", "ROLE=changed2"])}))
        ank.delete_workload("dropped")
        ank.set_agent_tags("agent_A", {"zone": "b"})
        emu.wait_for(lambda e: running(e, "extra", "changed") and not states(e, "dropped"), 60)
        assert set(states(emu, "changed")) != startup_changed

        emu.restart_server(downtime=0.2)

        # Running and unchanged: resumed, the same process.
        assert pid_of(emu, "keeper") == keeper_pid
        # The control-interface instance is new: the SDK, which said Hello to the old one,
        # is closed on its next request, and the FIFO files are gone.
        with pytest.raises(ConnectionClosedException, match="Initial Hello missing!"):
            ank.get_state(["desiredState.apiVersion"])
    assert not (ci / "input").exists() and not (ci / "output").exists()
    with pytest.raises(ControlInterfaceException, match="input fifo does not exist"):
        Ankaios()

    emu.wait_for(
        lambda e: (
            running(e, "keeper", "changed", "dropped")
            and list(states(e, "done").values()) == [("Succeeded", "Ok")]
            and e.start_count("done") == done_starts + 1
            and not states(e, "extra")
        ),
        60,
    )
    desired = emu.complete_state()["desiredState"]["workloads"]
    assert sorted(desired) == ["changed", "done", "dropped", "keeper"]
    # Updated at runtime: replaced by its startup version (a new process).
    assert set(states(emu, "changed")) == startup_changed
    assert pid_of(emu, "changed") != changed_pid
    assert not any(name.startswith("extra.") for name in emu.process_ids())
    assert "tags" not in emu.complete_state()["agents"]["agent_A"]


def test_requests_during_the_downtime_reach_the_new_server(
    make_emulator: MakeEmulator, tmp_path: Path, raw_client: Any
) -> None:
    emu = make_emulator(state={"apiVersion": "v1", "workloads": {}})
    client: RawClient = raw_client(emu.control_interface)
    client.hello()
    assert client.read().WhichOneof("FromAnkaiosEnum") == "controlInterfaceAccepted"

    restart = threading.Thread(target=emu.restart_server, kwargs={"downtime": 0.5})
    restart.start()
    emu.wait_for(lambda e: not e.server_up)
    client.send(add_workload("during", "late"))
    restart.join(5)
    assert not restart.is_alive()
    emu.wait_for(lambda e: "late" in e.complete_state()["desiredState"]["workloads"])
    # The answer waits in the new control-interface instance until a Hello.
    client.hello()
    assert client.read().WhichOneof("FromAnkaiosEnum") == "controlInterfaceAccepted"
    answer = client.read().response
    assert answer.requestId == "during"
    [added] = answer.UpdateStateSuccess.addedWorkloads
    assert added.startswith("late.")


def test_a_client_that_says_hello_again_is_accepted(
    make_emulator: MakeEmulator, raw_client: Any
) -> None:
    emu = make_emulator()
    client: RawClient = raw_client(emu.control_interface)
    client.hello()
    assert client.read().WhichOneof("FromAnkaiosEnum") == "controlInterfaceAccepted"
    emu.restart_server(downtime=0.1)
    # The descriptors still reach the new instance, which takes a Hello as its first frame.
    client.hello()
    assert client.read().WhichOneof("FromAnkaiosEnum") == "controlInterfaceAccepted"
    client.send(
        control_api.ToAnkaios(
            request=ank_base.Request(
                requestId="r1",
                completeStateRequest=ank_base.CompleteStateRequest(
                    fieldMask=["desiredState.apiVersion"]
                ),
            )
        )
    )
    assert client.read().response.requestId == "r1"


def test_cli_restarts_the_server_on_sigrtmin(tmp_path: Path) -> None:
    ci = tmp_path / "ci"
    process = subprocess.Popen(
        [sys.executable, "-m", "ankaios_emulator", "--control-interface", str(ci)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        while process.stdout.readline().strip() != "ready":
            assert process.poll() is None
        os.kill(process.pid, signal.SIGRTMIN)
        # The old instance's FIFO files go with it.
        deadline = time.monotonic() + 30
        while (ci / "input").exists():
            assert time.monotonic() < deadline, "the server was not restarted"
            time.sleep(0.05)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "ServerHello to agent_A: resumed" in stderr
