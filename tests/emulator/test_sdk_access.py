"""controlInterfaceAccess enforcement: every rule shape of the notes, seen by the SDK."""

from __future__ import annotations

from typing import Any

import pytest
from ankaios_sdk import Ankaios, AnkaiosResponseError, Manifest
from ankaios_sdk._protos import _ank_base as ank_base
from emulator.ci_client import MakeEmulator

from ankaios_emulator import Emulator

STATE = """\
apiVersion: v1
workloads:
  ivi_updater:
    runtime: podman
    agent: agent_A
    tags: {owner: ivi}
    runtimeConfig: "image: updater"
  nginx:
    runtime: podman
    agent: agent_A
    tags: {owner: web}
    runtimeConfig: "image: nginx"
"""
NEW = """\
apiVersion: v1
workloads:
  fresh:
    runtime: podman
    agent: agent_A
    runtimeConfig: "image: fresh"
"""


def rule(operation: str, *masks: str) -> dict[str, Any]:
    return {"type": "StateRule", "operation": operation, "filterMasks": list(masks)}


def allowed_read(ank: Ankaios, masks: list[str] | None) -> bool:
    try:
        ank.get_state(masks)
    except AnkaiosResponseError as error:
        # get_state (unlike the update calls) raises with the bare message.
        assert str(error) == "Access denied"
        return False
    return True


def allowed_apply(ank: Ankaios, emu: Emulator) -> bool:
    before = emu.complete_state(["desiredState"])
    try:
        ank.apply_manifest(Manifest.from_string(NEW))
    except AnkaiosResponseError as error:
        assert str(error) == "Received error: Access denied"
        # A denied request never reaches the server.
        assert emu.complete_state(["desiredState"]) == before
        return False
    return True


CASES = [
    # (access, read masks -> allowed?, apply allowed?)
    ({"allowRules": [rule("ReadWrite", "*")]}, {None: True, ("agents",): True}, True),
    ({"allowRules": [rule("Read", "*")]}, {None: True, ("workloadStates",): True}, False),
    ({"allowRules": [rule("Write", "*")]}, {None: False, ("agents",): False}, True),
    ({"allowRules": [rule("Nothing", "*")]}, {None: False}, False),
    (
        {"allowRules": [rule("ReadWrite", "desiredState.workloads")]},
        {
            None: False,
            ("desiredState.workloads",): True,
            ("desiredState.workloads.nginx.agent",): True,
            ("desiredState",): False,
            ("agents",): False,
        },
        True,
    ),
    (
        {"allowRules": [rule("Read", "desiredState.workloads.*.tags")]},
        {
            ("desiredState.workloads.nginx.tags",): True,
            ("desiredState.workloads.nginx.tags.owner",): True,
            ("desiredState.workloads.nginx",): False,
            ("desiredState.workloads.nginx.tags", "agents"): False,
        },
        False,
    ),
    (
        {
            "allowRules": [rule("ReadWrite", "*")],
            "denyRules": [rule("ReadWrite", "desiredState.workloads.ivi_updater")],
        },
        {
            ("desiredState.workloads.nginx",): True,
            ("desiredState.workloads.ivi_updater",): False,
            ("desiredState.workloads.ivi_updater.tags",): False,
            ("desiredState.workloads",): False,  # a prefix of the denied path
            None: False,
            ("agents",): True,
        },
        True,
    ),
    (
        {"allowRules": [{"type": "StateRule", "operation": "Read", "filterMask": ["agents"]}]},
        {("agents",): True, ("agents.agent_A",): True, None: False},
        False,
    ),
]


@pytest.mark.parametrize(("access", "reads", "apply"), CASES)
def test_access_rules(
    make_emulator: MakeEmulator,
    access: dict[str, Any],
    reads: dict[tuple[str, ...] | None, bool],
    apply: bool,
) -> None:
    emu = make_emulator(access=access, state=STATE)
    with Ankaios() as ank:
        for masks, expected in reads.items():
            assert allowed_read(ank, list(masks) if masks else None) is expected, masks
        assert allowed_apply(ank, emu) is apply


def test_denied_answer_keeps_the_request_id(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(access={"allowRules": [rule("Read", "agents")]})
    with Ankaios() as ank, pytest.raises(AnkaiosResponseError):
        ank.get_state(["workloadStates"])
    sent = emu.requests[-1].request.requestId
    assert sent  # the SDK matched the Error by this id, or it would have timed out


def log_request(*workloads: str) -> ank_base.Request:
    return ank_base.Request(
        requestId="logs",
        logsRequest=ank_base.LogsRequest(
            workloadNames=[
                ank_base.WorkloadInstanceName(workloadName=w, agentName="agent_A", id="1")
                for w in workloads
            ]
        ),
    )


def test_log_rules() -> None:
    from ankaios_emulator.authorizer import Authorizer

    auth = Authorizer.from_tree(
        {
            "allowRules": [{"type": "LogRule", "workloadNames": ["ivi_*"]}],
            "denyRules": [{"type": "LogRule", "workloadNames": ["ivi_secret"]}],
        }
    )
    assert auth.authorize(log_request("ivi_updater"))
    assert not auth.authorize(log_request("nginx"))
    assert not auth.authorize(log_request("ivi_updater", "ivi_secret"))
    cancel = ank_base.Request(requestId="logs", logsCancelRequest=ank_base.LogsCancelRequest())
    assert auth.authorize(cancel)
