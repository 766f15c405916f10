"""Plans: what an apply or a delete would do in the car now, computed without changing it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import MANIFESTS, Requester

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.policy import Policy

SENDER = "vehicle-data-sender"
CONFIG = "vehicle-data-sender-config"
TUTORIAL = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()
RECONFIGURE = (MANIFESTS / "config.yaml").read_bytes()


def plan(requester: Requester, manifest: bytes | str) -> Any:
    return requester.call(Operation.PLAN, manifest)


def plan_delete(requester: Requester, manifest: bytes | str) -> Any:
    return requester.call(Operation.PLAN_DELETE, manifest)


def snapshot(emulator: Emulator) -> Any:
    """The desired state and the workload instances (their states move on by themselves)."""
    state = emulator.complete_state(["desiredState", "workloadStates"])
    instances = {
        (agent, name, instance)
        for agent, workloads in state.get("workloadStates", {}).items()
        for name, by_id in workloads.items()
        for instance in by_id
    }
    return state["desiredState"], instances


def test_plan_create_on_an_empty_car(
    connector: Connector, emulator: Emulator, requester: Requester
) -> None:
    before = snapshot(emulator)
    assert plan(requester, TUTORIAL) == {
        "operation": "apply",
        "ankaios": {"verdict": "accepted"},
        "policy": {"verdict": "allowed"},
        "workloads": {SENDER: {"action": "create", "agent": "agent_A"}},
        "configs": {CONFIG: {"action": "create"}},
    }
    assert snapshot(emulator) == before


def test_plan_unchanged_after_apply(connector: Connector, requester: Requester) -> None:
    requester.apply(TUTORIAL)
    reply = plan(requester, TUTORIAL)
    assert reply["workloads"] == {SENDER: {"action": "unchanged", "agent": "agent_A"}}
    assert reply["configs"] == {CONFIG: {"action": "unchanged"}}


def test_plan_config_change_re_renders_the_template(
    connector: Connector, emulator: Emulator, requester: Requester
) -> None:
    requester.apply(TUTORIAL)
    before = snapshot(emulator)
    reply = plan(requester, RECONFIGURE)
    assert reply["configs"] == {CONFIG: {"action": "replace"}}
    # config.yaml does not name the workload, yet Ankaios restarts it with the new render.
    sender = reply["workloads"][SENDER]
    assert sender["action"] == "replace"
    assert sender["configs"] == [CONFIG]
    assert list(sender["fields"]) == ["runtimeConfig"]
    change = sender["fields"]["runtimeConfig"]
    assert "INTERVAL=1" in change["from"]
    assert "INTERVAL=10" in change["to"]
    assert snapshot(emulator) == before

    # The plan matched what the apply then does.
    applied = requester.apply(RECONFIGURE)
    assert [w["workload_name"] for w in applied["added_workloads"]] == [SENDER]
    assert [w["workload_name"] for w in applied["deleted_workloads"]] == [SENDER]


def test_plan_replace_lists_the_fields_that_differ(
    connector: Connector, requester: Requester
) -> None:
    requester.apply(TUTORIAL)
    document = yaml.safe_load(TUTORIAL)
    document["workloads"][SENDER]["restartPolicy"] = "ALWAYS"
    document["workloads"][SENDER]["tags"] = [{"key": "owner", "value": "fleet"}]
    reply = plan(requester, yaml.safe_dump(document))
    sender = reply["workloads"][SENDER]
    assert sender["action"] == "replace"
    assert "configs" not in sender
    assert sender["fields"]["restartPolicy"] == {"from": "NEVER", "to": "ALWAYS"}
    assert sender["fields"]["tags"] == {"from": {}, "to": {"owner": "fleet"}}
    assert reply["configs"] == {CONFIG: {"action": "unchanged"}}


def test_plan_delete(connector: Connector, emulator: Emulator, requester: Requester) -> None:
    requester.apply(TUTORIAL)
    before = snapshot(emulator)
    reply = plan_delete(requester, TUTORIAL)
    assert reply["operation"] == "delete"
    assert reply["workloads"] == {SENDER: {"action": "delete", "agent": "agent_A"}}
    assert reply["configs"] == {CONFIG: {"action": "delete"}}
    assert snapshot(emulator) == before
    removed = requester.delete(TUTORIAL)
    assert [w["workload_name"] for w in removed["deleted_workloads"]] == [SENDER]
    assert plan_delete(requester, TUTORIAL)["workloads"] == {SENDER: {"action": "unchanged"}}


def test_plan_says_when_ankaios_would_reject(connector: Connector, requester: Requester) -> None:
    # A workload whose template names a config that does not exist.
    document = yaml.safe_load(TUTORIAL)
    del document["configs"]
    reply = plan(requester, yaml.safe_dump(document))
    assert reply["ankaios"]["verdict"] == "rejected"
    assert "references config key 'vehicle-data-sender-config'" in reply["ankaios"]["message"]
    assert reply["workloads"] == {SENDER: {"action": "unchanged"}}
    assert requester.apply(yaml.safe_dump(document))["error"]["code"] == "REJECTED"


def test_plan_carries_warnings_and_the_policy_verdict(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("allowedAgents: [agent_B]\n")
    policy = Policy.load(policy_file, protected=[], max_payload=None)
    start_connector(emulator.control_interface, policy=policy)
    document = yaml.safe_load(TUTORIAL)
    document["workloads"][SENDER]["restartpolicy"] = "ALWAYS"
    reply = plan(requester, yaml.safe_dump(document))
    assert reply["policy"]["verdict"] == "denied"
    assert reply["policy"]["code"] == "POLICY_DENIED"
    assert "allowedAgents" in reply["policy"]["message"]
    assert reply["warnings"] == [
        "unknown key 'restartpolicy' at workloads.vehicle-data-sender is ignored by Ankaios; "
        "did you mean 'restartPolicy'?"
    ]
    assert reply["workloads"][SENDER]["action"] == "create"


def test_plan_in_strict_mode_says_the_apply_would_be_refused(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, strict=True)
    document = yaml.safe_load(TUTORIAL)
    document["colour"] = "red"
    reply = plan(requester, yaml.safe_dump(document))
    assert reply["policy"]["verdict"] == "denied"
    assert reply["policy"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize("operation", [Operation.PLAN, Operation.PLAN_DELETE])
def test_plan_of_a_broken_manifest_is_an_error(
    connector: Connector, requester: Requester, operation: Operation
) -> None:
    reply = requester.call(operation, "apiVersion: [")
    assert reply["error"]["code"] == "INVALID_REQUEST"


def test_plan_with_request_id(connector: Connector, requester: Requester) -> None:
    reply = requester.send(Operation.PLAN, TUTORIAL, "p-1")
    assert reply.topic == requester.topics.response(Operation.PLAN, "p-1")
