"""Delete conditions: a workload others depend on with ADD_COND_RUNNING stops last.

What the SDK sees through its event queue when Ankaios 1.0.1 holds a deletion back
(server/src/ankaios_server/delete_graph.rs, agent/src/workload_scheduler/scheduler.rs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from ankaios_sdk import Ankaios, Manifest
from emulator.ci_client import MakeEmulator
from emulator.state_log import REMOVED, StateLog

from ankaios_emulator import Emulator
from ankaios_emulator.dependencies import (
    DEL_COND_NOT_PENDING_NOR_RUNNING,
    DeleteGraph,
    add_condition_met,
    delete_condition_met,
)
from ankaios_model.state import DesiredState

HEADER = "apiVersion: v1\nworkloads:\n"
A = """\
  A:
    runtime: podman
    agent: agent_A
    runtimeConfig: |
      image: a
      commandArgs: ["{version}"]
"""
B = """\
  B:
    runtime: podman
    agent: agent_A
    dependencies:
      A: {condition}
    runtimeConfig: |
      image: b
"""
HOLD = 0.3  # long enough for the emulator to have gone on, were nothing holding it


def manifest(*names: str, version: str = "1", condition: str = "ADD_COND_RUNNING") -> Manifest:
    parts = {"A": A.format(version=version), "B": B.format(condition=condition)}
    return Manifest.from_string(HEADER + "".join(parts[n] for n in names))


def apply_and_wait(ank: Ankaios, log: StateLog, manifest: Manifest, state: str) -> dict[str, str]:
    """Apply ``manifest``, wait until all its workloads reach ``state``; name -> id."""
    ids = {w.workload_name: w.workload_id for w in ank.apply_manifest(manifest).added_workloads}
    log.wait_for(lambda s: all(s.last(n, i) == state for n, i in ids.items()))
    return ids


def stays(log: StateLog) -> None:
    """Nothing more happens for a while (the held-back state is stable)."""
    seen = len(log.seen)
    with pytest.raises(TimeoutError):
        log.wait_for(lambda s: len(s.seen) > seen, timeout=HOLD)


@pytest.fixture
def emu(make_emulator: MakeEmulator) -> Emulator:
    return make_emulator(step_delay=0.01)


def test_deleting_both_stops_the_dependency_after_the_dependent(emu: Emulator) -> None:
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        ids = apply_and_wait(ank, log, manifest("A", "B"), "RUNNING_OK")
        result = ank.delete_manifest(manifest("A", "B"))
        assert sorted(w.workload_name for w in result.deleted_workloads) == ["A", "B"]
        log.wait_for(lambda s: all(s.last(n, i) == REMOVED for n, i in ids.items()))

    a, b = ("A", ids["A"]), ("B", ids["B"])
    assert log.states_of(*a)[-4:] == [
        "RUNNING_OK",
        "STOPPING_WAITING_TO_STOP",
        "STOPPING_REQUESTED_AT_RUNTIME",
        REMOVED,
    ]
    assert log.states_of(*b)[-3:] == ["RUNNING_OK", "STOPPING_REQUESTED_AT_RUNTIME", REMOVED]
    # A is held back while B is running; B's Stopping already releases it.
    assert (
        log.index(*a, "STOPPING_WAITING_TO_STOP")
        < log.index(*b, "STOPPING_REQUESTED_AT_RUNTIME")
        < log.index(*a, "STOPPING_REQUESTED_AT_RUNTIME")
    )
    assert ("STOPPING_WAITING_TO_STOP", "") in log.of("A")  # no additionalInfo


def test_deleting_the_dependency_alone_waits_for_the_dependent(emu: Emulator) -> None:
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        ids = apply_and_wait(ank, log, manifest("A", "B"), "RUNNING_OK")
        [deleted] = ank.delete_manifest(manifest("A")).deleted_workloads
        assert deleted.workload_id == ids["A"]
        log.wait_for(lambda s: s.last("A", ids["A"]) == "STOPPING_WAITING_TO_STOP")
        stays(log)
        assert log.last("B", ids["B"]) == "RUNNING_OK"
        assert "A" not in emu.complete_state()["desiredState"]["workloads"]
        state = ank.get_execution_state_for_instance_name(deleted)
        assert state.substate.name == "STOPPING_WAITING_TO_STOP"

        ank.delete_manifest(manifest("B"))
        log.wait_for(lambda s: s.last("A", ids["A"]) == REMOVED == s.last("B", ids["B"]))
    assert log.index("B", ids["B"], "STOPPING_REQUESTED_AT_RUNTIME") < log.index(
        "A", ids["A"], "STOPPING_REQUESTED_AT_RUNTIME"
    )
    assert emu.complete_state()["workloadStates"] == {}


def test_updating_the_dependency_replaces_it_after_the_dependent_stopped(emu: Emulator) -> None:
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        ids = apply_and_wait(ank, log, manifest("A", "B"), "RUNNING_OK")
        result = ank.apply_manifest(manifest("A", version="2"))
        [old] = result.deleted_workloads
        [new] = result.added_workloads
        assert (old.workload_id, new.workload_name) == (ids["A"], "A")

        log.wait_for(lambda s: s.last("A", old.workload_id) == "STOPPING_WAITING_TO_STOP")
        stays(log)
        # The whole update waits: the new instance is not even WaitingToStart.
        assert log.states_of("A", new.workload_id) == ["PENDING_INITIAL"]
        assert log.last("B", ids["B"]) == "RUNNING_OK"

        ank.delete_manifest(manifest("B"))
        log.wait_for(lambda s: s.last("A", new.workload_id) == "RUNNING_OK")
    assert log.states_of("A", old.workload_id)[-3:] == [
        "STOPPING_WAITING_TO_STOP",
        "STOPPING_REQUESTED_AT_RUNTIME",
        REMOVED,
    ]
    assert log.states_of("A", new.workload_id) == [
        "PENDING_INITIAL",
        "PENDING_STARTING",
        "RUNNING_OK",
    ]
    assert log.index("B", ids["B"], "STOPPING_REQUESTED_AT_RUNTIME") < log.index(
        "A", old.workload_id, "STOPPING_REQUESTED_AT_RUNTIME"
    )
    # Delete, then add: the new instance starts once the old one is gone.
    assert log.index("A", old.workload_id, REMOVED) < log.index(
        "A", new.workload_id, "PENDING_STARTING"
    )


def test_a_dependent_waiting_to_start_does_not_hold_the_deletion(emu: Emulator) -> None:
    # B also needs C, which does not exist: B stays Pending(WaitingToStart) for good.
    waiting_b = B.replace(
        "      A: {condition}\n", "      A: ADD_COND_RUNNING\n      C: ADD_COND_RUNNING\n"
    )
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        ids = {
            w.workload_name: w.workload_id
            for w in ank.apply_manifest(
                Manifest.from_string(HEADER + A.format(version="1") + waiting_b)
            ).added_workloads
        }
        log.wait_for(
            lambda s: (
                (s.last("A", ids["A"]), s.last("B", ids["B"]))
                == ("RUNNING_OK", "PENDING_WAITING_TO_START")
            )
        )
        ank.delete_manifest(manifest("A"))
        log.wait_for(lambda s: s.last("A", ids["A"]) == REMOVED)
    assert "STOPPING_WAITING_TO_STOP" not in log.states_of("A", ids["A"])


# -- the process runtime ----------------------------------------------------------------

SLEEPER = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("up", sys.argv[1:], flush=True)
time.sleep(60)
"""


@pytest.fixture
def proc_emu(make_emulator: MakeEmulator, tmp_path: Path) -> Emulator:
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(SLEEPER)
    return make_emulator(
        runtime="process",
        image_map={
            "a": [sys.executable, str(sleeper)],
            "b": [sys.executable, str(sleeper)],
            "done": [sys.executable, "-c", "pass"],
        },
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_process_runtime_keeps_the_old_process_until_the_dependent_stopped(
    proc_emu: Emulator,
) -> None:
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        ids = apply_and_wait(ank, log, manifest("A", "B"), "RUNNING_OK")
        old_name = f"A.{ids['A']}.agent_A"
        old_pid = proc_emu.process_ids()[old_name]
        result = ank.apply_manifest(manifest("A", version="2"))
        [new] = result.added_workloads
        log.wait_for(lambda s: s.last("A", ids["A"]) == "STOPPING_WAITING_TO_STOP")
        stays(log)
        assert alive(old_pid)
        assert log.states_of("A", new.workload_id) == ["PENDING_INITIAL"]

        ank.delete_manifest(manifest("B"))
        log.wait_for(lambda s: s.last("A", new.workload_id) == "RUNNING_OK")
        assert not alive(old_pid)
        new_name = f"A.{new.workload_id}.agent_A"
        proc_emu.wait_for(lambda e: e.logs(new_name) == ["up ['2']"])
        assert list(proc_emu.process_ids()) == [new_name]


def test_other_add_conditions_create_no_delete_condition(proc_emu: Emulator) -> None:
    """ADD_COND_SUCCEEDED: Ankaios lets A go at once although B is running."""
    succeeded_a = A.replace("image: a", "image: done")
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        text = HEADER + succeeded_a.format(version="1") + B.format(condition="ADD_COND_SUCCEEDED")
        added = ank.apply_manifest(Manifest.from_string(text)).added_workloads
        ids = {w.workload_name: w.workload_id for w in added}
        log.wait_for(
            lambda s: (
                (s.last("A", ids["A"]), s.last("B", ids["B"])) == ("SUCCEEDED_OK", "RUNNING_OK")
            )
        )
        ank.delete_manifest(Manifest.from_string(HEADER + succeeded_a.format(version="1")))
        log.wait_for(lambda s: s.last("A", ids["A"]) == REMOVED)
        assert log.states_of("A", ids["A"])[-2:] == ["STOPPING_REQUESTED_AT_RUNTIME", REMOVED]
        assert log.last("B", ids["B"]) == "RUNNING_OK"


# -- the rules themselves ---------------------------------------------------------------


def state(name: str, sub: str) -> dict[str, str]:
    return {"state": name, "subState": sub}


def test_delete_graph_keeps_only_running_conditions_and_forgets_on_removal() -> None:
    text = HEADER + A.format(version="1") + B.format(condition="ADD_COND_RUNNING")
    text += B.replace("  B:", "  C:").format(condition="ADD_COND_FAILED")
    graph = DeleteGraph()
    graph.insert(list(DesiredState.from_manifest(text).rendered().values()))
    assert graph.as_dict() == {"A": {"B": DEL_COND_NOT_PENDING_NOR_RUNNING}}
    assert graph.conditions_for("A") == {"B": DEL_COND_NOT_PENDING_NOR_RUNNING}
    assert graph.conditions_for("B") == {}
    # Any Removed instance of A drops the entry (also an update's old one), as in Ankaios.
    graph.removed("A")
    assert graph.conditions_for("A") == {}


@pytest.mark.parametrize(
    ("states", "met"),
    [
        ([], True),  # no instance of the dependent: nothing to wait for
        ([state("Pending", "WaitingToStart")], True),
        ([state("Stopping", "RequestedAtRuntime")], True),
        ([state("Succeeded", "Ok"), state("Failed", "ExecFailed")], True),
        ([state("Pending", "Initial")], False),
        ([state("Pending", "Starting")], False),
        ([state("Pending", "StartingFailed")], False),
        ([state("Running", "Ok")], False),
        ([state("Stopping", "WaitingToStop"), state("Running", "Ok")], False),  # all must allow
    ],
)
def test_delete_condition_not_pending_nor_running(states: list[dict[str, str]], met: bool) -> None:
    assert delete_condition_met(DEL_COND_NOT_PENDING_NOR_RUNNING, states) is met


def test_add_conditions_need_one_instance_in_the_exact_state() -> None:
    assert add_condition_met(
        "ADD_COND_RUNNING", [state("Pending", "Initial"), state("Running", "Ok")]
    )
    assert not add_condition_met("ADD_COND_FAILED", [state("Failed", "Lost")])
    assert add_condition_met("ADD_COND_SUCCEEDED", [state("Succeeded", "Ok")])
    assert not add_condition_met("ADD_COND_RUNNING", [])
