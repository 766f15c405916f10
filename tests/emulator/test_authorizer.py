"""Agent-side authorisation rules (allow prefix, deny both directions, log rules)."""

from __future__ import annotations

from typing import Any

import pytest
from ankaios_sdk._protos import _ank_base as ank_base

from ankaios_emulator.authorizer import Authorizer


def state_rule(op: str, *masks: str, key: str = "filterMasks") -> dict[str, Any]:
    return {"type": "StateRule", "operation": op, key: list(masks)}


def read(*masks: str) -> Any:
    return ank_base.Request(
        requestId="r", completeStateRequest=ank_base.CompleteStateRequest(fieldMask=list(masks))
    )


def write(*masks: str) -> Any:
    return ank_base.Request(
        requestId="r",
        updateStateRequest=ank_base.UpdateStateRequest(
            newState=ank_base.CompleteState(), updateMask=list(masks)
        ),
    )


def logs(*names: str) -> Any:
    return ank_base.Request(
        requestId="r",
        logsRequest=ank_base.LogsRequest(
            workloadNames=[
                ank_base.WorkloadInstanceName(workloadName=n, agentName="a", id="i") for n in names
            ]
        ),
    )


def auth(allow: list[Any], deny: list[Any] | None = None) -> Authorizer:
    return Authorizer.from_tree({"allowRules": allow, "denyRules": deny or []})


def test_default_deny() -> None:
    a = Authorizer.from_tree(None)
    assert not a.authorize(read("desiredState"))
    assert not a.authorize(write("desiredState"))
    assert not a.authorize(logs("w"))
    assert not a.authorize(ank_base.Request(requestId="r"))


def test_cancel_requests_always_allowed() -> None:
    a = Authorizer.from_tree({})
    assert a.authorize(ank_base.Request(requestId="r", logsCancelRequest={}))
    assert a.authorize(ank_base.Request(requestId="r", eventsCancelRequest={}))


def test_star_allows_everything_including_empty_mask() -> None:
    a = auth([state_rule("ReadWrite", "*")])
    assert a.authorize(read())
    assert a.authorize(write())
    assert a.authorize(read("desiredState.workloads.x", "agents"))


def test_prefix_rule_and_empty_mask() -> None:
    a = auth([state_rule("Read", "desiredState.workloads")])
    assert a.authorize(read("desiredState.workloads.x.agent"))
    assert a.authorize(read("desiredState.workloads"))
    assert not a.authorize(read("desiredState"))
    assert not a.authorize(read())  # only rules starting with * allow the empty path
    assert not a.authorize(write("desiredState.workloads.x"))  # Read is not Write


def test_wildcard_tags_rule() -> None:
    a = auth([state_rule("Write", "desiredState.workloads.*.tags")])
    assert a.authorize(write("desiredState.workloads.x.tags.owner"))
    assert a.authorize(write("desiredState.workloads.x.tags"))
    assert not a.authorize(write("desiredState.workloads.x"))
    assert not a.authorize(write("desiredState.workloads.x.agent"))


def test_every_mask_must_be_allowed() -> None:
    a = auth([state_rule("Read", "agents")])
    assert not a.authorize(read("agents", "workloadStates"))


def test_deny_matches_both_directions() -> None:
    a = auth(
        [state_rule("ReadWrite", "*")],
        [state_rule("Write", "desiredState.workloads.ivi_updater")],
    )
    assert not a.authorize(write("desiredState.workloads.ivi_updater.agent"))
    assert not a.authorize(write("desiredState.workloads"))
    assert not a.authorize(write())
    assert a.authorize(write("desiredState.workloads.other"))
    assert a.authorize(read("desiredState.workloads.ivi_updater"))  # deny is Write only


def test_nothing_operation_and_v01_filter_mask() -> None:
    assert not auth([state_rule("Nothing", "*")]).authorize(read("agents"))
    a = auth([state_rule("Read", "agents", key="filterMask")])
    assert a.authorize(read("agents.agent_A"))


def test_empty_filter_mask_rule_never_matches() -> None:
    assert not auth([state_rule("Read", "")]).authorize(read())
    a = auth([state_rule("Read", "*")], [state_rule("Read", "")])
    assert a.authorize(read("agents"))


@pytest.mark.parametrize(
    ("patterns", "name", "allowed"),
    [
        (["w1"], "w1", True),
        (["*"], "anything", True),
        (["ivi_*"], "ivi_app", True),
        (["*_app"], "ivi_app", True),
        (["ivi_*"], "other", False),
        (["ab*ba"], "aba", False),  # prefix and suffix must not overlap
        (["ivi_*", "other"], "other", False),  # first pattern with * decides
        (["other", "ivi_*"], "other", True),
    ],
)
def test_log_rules(patterns: list[str], name: str, allowed: bool) -> None:
    a = auth([{"type": "LogRule", "workloadNames": patterns}])
    assert a.authorize(logs(name)) is allowed


def test_log_deny_and_empty_list() -> None:
    a = auth(
        [{"type": "LogRule", "workloadNames": ["*"]}],
        [{"type": "LogRule", "workloadNames": ["secret"]}],
    )
    assert a.authorize(logs("w1", "w2"))
    assert not a.authorize(logs("w1", "secret"))
    assert a.authorize(logs())
