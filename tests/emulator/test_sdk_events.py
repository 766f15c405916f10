"""Event subscriptions (subscribeForEvents) with the SDK and on the wire."""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ankaios_sdk import Ankaios, Manifest
from ankaios_sdk._protos import _ank_base as ank_base
from ankaios_sdk._protos import _control_api as control_api
from emulator.ci_client import (
    NGINX_MANIFEST,
    MakeEmulator,
    RawClient,
    add_workload,
    connector_state,
)

from ankaios_emulator import Emulator
from ankaios_emulator.events import altered_fields, diff

MANIFEST = NGINX_MANIFEST


def next_event(events: Any, timeout: float = 5.0) -> Any:
    return events.get(timeout=timeout)


CONNECTOR = connector_state()


def test_sdk_event_queue_sees_initial_state_then_changes(make_emulator: MakeEmulator) -> None:
    # The connector itself runs on agent_A, as in the tutorial, so agent_A is already in
    # workloadStates and a new workload there is an added field of its own.
    emu = make_emulator(state=CONNECTOR)
    emu.wait_for(lambda e: "agent_A" in e.complete_state()["workloadStates"])
    with Ankaios() as ank:
        events = ank.register_event(["workloadStates.agent_A.nginx"])
        initial = next_event(events)
        assert (initial.added_fields, initial.updated_fields, initial.removed_fields) == (
            [],
            [],
            [],
        )

        added = ank.apply_manifest(Manifest.from_string(MANIFEST)).added_workloads[0]
        prefix = f"workloadStates.agent_A.nginx.{added.workload_id}"
        first = next_event(events)
        assert first.added_fields == ["workloadStates.agent_A.nginx"]
        starting = next_event(events)
        assert sorted(starting.updated_fields) == [f"{prefix}.additionalInfo", f"{prefix}.subState"]
        running = next_event(events)
        assert sorted(running.updated_fields) == [
            f"{prefix}.additionalInfo",
            f"{prefix}.state",
            f"{prefix}.subState",
        ]
        states = running.complete_state.get_workload_states().get_as_list()
        assert [(s.execution_state.state.name) for s in states] == ["RUNNING"]

        ank.unregister_event(events)
        ank.delete_manifest(Manifest.from_string(MANIFEST))
        emu.wait_for(lambda e: "nginx" not in e.complete_state()["workloadStates"]["agent_A"])
        try:
            late = events.get(timeout=0.3)
        except queue.Empty:
            late = None
        assert late is None


def test_event_frames_on_the_wire(emu: Emulator, raw_client: Callable[[Path], RawClient]) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    client.read()
    client.send(
        control_api.ToAnkaios(
            request=ank_base.Request(
                requestId="ev",
                completeStateRequest=ank_base.CompleteStateRequest(
                    fieldMask=["desiredState.workloads"], subscribeForEvents=True
                ),
            )
        )
    )
    first = client.read().response
    assert first.requestId == "ev"
    assert not first.completeStateResponse.HasField("alteredFields")

    client.send(add_workload("up", "nginx"))
    # Ankaios sends the event before UpdateStateSuccess.
    event = client.read().response
    assert event.requestId == "ev"
    altered = event.completeStateResponse.alteredFields
    assert list(altered.addedFields) == ["desiredState.workloads.nginx"]
    state = event.completeStateResponse.completeState
    assert list(state.desiredState.workloads.workloads) == ["nginx"]
    assert state.desiredState.apiVersion == "v1"
    assert not state.HasField("workloadStates") or not state.workloadStates.agentStateMap
    assert client.read().response.requestId == "up"

    client.send(
        control_api.ToAnkaios(
            request=ank_base.Request(
                requestId="ev", eventsCancelRequest=ank_base.EventsCancelRequest()
            )
        )
    )
    cancel = client.read().response
    assert (cancel.requestId, cancel.WhichOneof("ResponseContent")) == (
        "ev",
        "eventsCancelAccepted",
    )


def test_altered_fields_follow_the_masks() -> None:
    old = {"workloadStates": {"agent_A": {}}}
    new = {
        "workloadStates": {
            "agent_A": {"nginx": {"id1": {"state": "Pending", "subState": "Initial"}}}
        }
    }
    difference = diff(old, new)
    assert altered_fields(difference, []).added == ["workloadStates.agent_A.nginx"]
    assert altered_fields(difference, ["workloadStates"]).added == ["workloadStates.agent_A.nginx"]
    deep = altered_fields(difference, ["workloadStates.agent_A.nginx.*.state"])
    assert deep.added == ["workloadStates.agent_A.nginx.id1.state"]
    assert altered_fields(difference, ["desiredState"]).is_empty()

    changed = diff(
        new,
        {"workloadStates": {"agent_A": {"nginx": {"id1": {"state": "Running", "subState": "Ok"}}}}},
    )
    assert sorted(altered_fields(changed, ["workloadStates.*.nginx"]).updated) == [
        "workloadStates.agent_A.nginx.id1.state",
        "workloadStates.agent_A.nginx.id1.subState",
    ]
    # Ankaios quirk: a mask ending inside a newly added subtree (here the agent appeared
    # together with the workload) selects nothing, so no event is sent for it.
    assert altered_fields(difference, ["workloadStates.agent_A.nginx"]).is_empty() is False
    fresh = diff({"workloadStates": {}}, new)
    assert altered_fields(fresh, ["workloadStates.agent_A.nginx"]).is_empty()

    removed = diff(new, {"workloadStates": {}})
    assert altered_fields(removed, ["workloadStates"]).removed == ["workloadStates.agent_A"]


def test_update_without_workload_changes_answers_before_its_event(
    emu: Emulator, raw_client: Callable[[Path], RawClient]
) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    client.read()
    subscribe = ank_base.CompleteStateRequest(
        fieldMask=["desiredState.configs"], subscribeForEvents=True
    )
    client.send(
        control_api.ToAnkaios(
            request=ank_base.Request(requestId="ev", completeStateRequest=subscribe)
        )
    )
    assert client.read().response.requestId == "ev"

    new_state = ank_base.CompleteState(desiredState=ank_base.State(apiVersion="v1"))
    new_state.desiredState.configs.configs["c"].String = "v"
    update = ank_base.UpdateStateRequest(newState=new_state, updateMask=["desiredState.configs.c"])
    client.send(
        control_api.ToAnkaios(request=ank_base.Request(requestId="up", updateStateRequest=update))
    )
    # Ankaios' Ok(None) branch (no workload added or deleted): UpdateStateSuccess, then events.
    answer = client.read().response
    assert (answer.requestId, answer.WhichOneof("ResponseContent")) == ("up", "UpdateStateSuccess")
    assert list(answer.UpdateStateSuccess.addedWorkloads) == []
    event = client.read().response
    assert event.requestId == "ev"
    # The configs map itself is new (an empty map is omitted).
    assert list(event.completeStateResponse.alteredFields.addedFields) == ["desiredState.configs"]
