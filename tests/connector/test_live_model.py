"""The live model's reading of Ankaios's execution states, in Ankaios's own spelling."""

from __future__ import annotations

import pytest
from ankaios_sdk._protos import _ank_base

from fleet_connector.observe.live_model import LiveModel, execution_state, public_state


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("pending", _ank_base.PENDING_INITIAL, ("Pending", "Initial")),
        ("pending", _ank_base.PENDING_WAITING_TO_START, ("Pending", "WaitingToStart")),
        ("pending", _ank_base.PENDING_STARTING_FAILED, ("Pending", "StartingFailed")),
        ("running", _ank_base.RUNNING_OK, ("Running", "Ok")),
        ("stopping", _ank_base.STOPPING, ("Stopping", "Stopping")),
        ("stopping", _ank_base.STOPPING_REQUESTED_AT_RUNTIME, ("Stopping", "RequestedAtRuntime")),
        ("succeeded", _ank_base.SUCCEEDED_OK, ("Succeeded", "Ok")),
        ("failed", _ank_base.FAILED_EXEC_FAILED, ("Failed", "ExecFailed")),
        ("failed", _ank_base.FAILED_LOST, ("Failed", "Lost")),
        ("notScheduled", _ank_base.NOT_SCHEDULED, ("NotScheduled", "NotScheduled")),
        (
            "agentDisconnected",
            _ank_base.AGENT_DISCONNECTED,
            ("AgentDisconnected", "AgentDisconnected"),
        ),
        ("removed", _ank_base.REMOVED, ("Removed", "Removed")),
    ],
)
def test_execution_states_read_as_ankaios_spells_them(
    field: str, value: int, expected: tuple[str, str]
) -> None:
    state = _ank_base.ExecutionState(**{field: value})
    assert execution_state(state) == expected


def test_an_execution_state_without_a_state_is_none() -> None:
    assert execution_state(_ank_base.ExecutionState(additionalInfo="only info")) is None


@pytest.mark.parametrize(
    ("state", "public"),
    [
        ("Pending", "pending"),
        ("Running", "running"),
        ("NotScheduled", "not_scheduled"),
        ("AgentDisconnected", "agent_disconnected"),
    ],
)
def test_topic_states_are_lower_case_with_underscores(state: str, public: str) -> None:
    assert public_state(state) == public


def _complete(*instances: tuple[str, str, str, int]) -> _ank_base.CompleteState:
    state = _ank_base.CompleteState()
    for agent, workload, instance_id, running in instances:
        per_id = state.workloadStates.agentStateMap[agent].wlNameStateMap[workload].idStateMap
        per_id[instance_id].CopyFrom(_ank_base.ExecutionState(running=running, additionalInfo=""))
    return state


def test_removals_at_any_level_and_resyncs_that_keep_since() -> None:
    model = LiveModel()
    both = _complete(
        ("agent_A", "w1", "id1", _ank_base.RUNNING_OK),
        ("agent_A", "w2", "id2", _ank_base.RUNNING_OK),
        ("agent_B", "w3", "id3", _ank_base.RUNNING_OK),
    )
    assert model.replace_all(both, now=1.0) == {"w1", "w2", "w3"}
    # The same complete state again: nothing changed, so "since" stays.
    assert model.replace_all(both, now=2.0) == set()
    current = model.current("w1")
    assert current is not None and current.since == 1.0

    removed = _ank_base.AlteredFields(removedFields=["workloadStates.agent_A.w1"])
    assert model.apply_event(_ank_base.CompleteState(), removed, now=3.0) == {"w1"}
    assert model.current("w1") is None
    whole_agent = _ank_base.AlteredFields(removedFields=["workloadStates.agent_B"])
    assert model.apply_event(_ank_base.CompleteState(), whole_agent, now=4.0) == {"w3"}
    assert model.workloads() == {"w2"}
