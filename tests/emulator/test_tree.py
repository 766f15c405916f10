"""Tree <-> proto conversion and manifest parsing."""

from __future__ import annotations

from typing import Any

import pytest
from ankaios_sdk._protos import _ank_base as ank_base

from ankaios_model.tree import ManifestError, proto_to_tree, state_from_manifest, tree_to_proto

FULL_TREE: dict[str, Any] = {
    "desiredState": {
        "apiVersion": "v1",
        "workloads": {
            "nginx": {
                "agent": "agent_A",
                "restartPolicy": "ON_FAILURE",
                "dependencies": {"db": "ADD_COND_SUCCEEDED"},
                "tags": {"owner": "team"},
                "runtime": "podman",
                "runtimeConfig": "image: nginx",
                "controlInterfaceAccess": {
                    "allowRules": [
                        {"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]},
                        {"type": "LogRule", "workloadNames": ["ivi_*"]},
                    ],
                    "denyRules": [
                        {"type": "StateRule", "operation": "Nothing", "filterMasks": ["a.b"]}
                    ],
                },
                "configs": {"c": "cfg"},
                "files": [
                    {"mountPoint": "/a", "data": "text"},
                    {"mountPoint": "/b", "binaryData": "aGk="},
                ],
            }
        },
        "configs": {"cfg": {"list": ["1", {"k": "v"}], "s": "x"}},
    },
    "workloadStates": {
        "agent_A": {
            "nginx": {
                "id1": {"state": "Pending", "subState": "StartingFailed", "additionalInfo": "x"},
                "id2": {"state": "Stopping", "subState": "Stopping"},
                "id3": {"state": "Failed", "subState": "Lost"},
                "id4": {"state": "NotScheduled", "subState": "NotScheduled"},
            }
        }
    },
    "agents": {"agent_A": {"status": {"cpuUsage": 5, "freeMemory": 1024}, "tags": {"t": "1"}}},
}


def test_round_trip_tree_proto_tree() -> None:
    assert proto_to_tree(tree_to_proto(FULL_TREE)) == FULL_TREE


def test_round_trip_proto_tree_proto() -> None:
    cs = tree_to_proto(FULL_TREE)
    again = tree_to_proto(proto_to_tree(cs))
    assert again == cs
    assert again.desiredState.workloads.workloads["nginx"].restartPolicy == ank_base.ON_FAILURE
    rule = again.desiredState.workloads.workloads["nginx"].controlInterfaceAccess.allowRules[0]
    assert rule.stateRule.operation == ank_base.RW_READ_WRITE
    es = again.workloadStates.agentStateMap["agent_A"].wlNameStateMap["nginx"].idStateMap["id1"]
    assert es.pending == ank_base.PENDING_STARTING_FAILED


def test_presence_preserved() -> None:
    cs = ank_base.CompleteState()
    cs.desiredState.apiVersion = "v1"
    assert proto_to_tree(cs) == {"desiredState": {"apiVersion": "v1"}}
    cs.desiredState.workloads.SetInParent()
    assert proto_to_tree(cs) == {"desiredState": {"apiVersion": "v1", "workloads": {}}}
    assert proto_to_tree(ank_base.CompleteState()) == {}


def test_empty_config_item_is_null() -> None:
    cs = ank_base.CompleteState()
    cs.desiredState.configs.configs["port"].SetInParent()
    assert proto_to_tree(cs)["desiredState"]["configs"] == {"port": None}


V01 = """
apiVersion: v0.1
workloads:
  w:
    agent: agent_A
    runtime: podman
    runtimeConfig: "  image: x  \\n"
    tags:
      - key: owner
        value: me
    controlInterfaceAccess:
      allowRules:
        - type: StateRule
          operation: Read
          filterMask: ["desiredState"]
"""

V1 = """
apiVersion: v1
workloads:
  w:
    agent: agent_A
    runtime: podman
    runtimeConfig: "image: x"
    tags: {owner: me}
    controlInterfaceAccess:
      allowRules:
        - type: StateRule
          operation: Read
          filterMasks: ["desiredState"]
        - type: LogRule
          workloadNames: ["w"]
    files:
      - mountPoint: /etc/x
        data: hello
"""


def test_manifest_v01_and_v1() -> None:
    old = state_from_manifest(V01)
    wl = old["workloads"]["w"]
    assert wl["tags"] == {"owner": "me"}
    assert wl["runtimeConfig"] == "image: x"
    assert wl["restartPolicy"] == "NEVER"
    assert wl["controlInterfaceAccess"]["allowRules"][0]["filterMasks"] == ["desiredState"]
    new = state_from_manifest(V1)["workloads"]["w"]
    assert new["files"] == [{"mountPoint": "/etc/x", "data": "hello"}]
    assert new["controlInterfaceAccess"]["allowRules"][1] == {
        "type": "LogRule",
        "workloadNames": ["w"],
    }


def test_manifest_tags_form_per_api_version() -> None:
    with pytest.raises(ManifestError, match="tags must be specified as a mapping"):
        state_from_manifest(V1.replace("tags: {owner: me}", "tags: [{key: owner, value: me}]"))
    with pytest.raises(ManifestError, match="tags must be specified as a sequence"):
        state_from_manifest(
            V01.replace("apiVersion: v1", "x").replace(
                "tags:\n      - key: owner\n        value: me", "tags: {owner: me}"
            )
        )


@pytest.mark.parametrize("value", ["1883", "true", "null", "1.5"])
def test_manifest_non_string_config_scalars_rejected(value: str) -> None:
    with pytest.raises(ManifestError, match="untagged enum ConfigItemEnumSpec"):
        state_from_manifest(f"apiVersion: v1\nconfigs:\n  port: {value}\n")
    with pytest.raises(ManifestError, match=r"configs\.c\.env"):
        state_from_manifest(f"apiVersion: v1\nconfigs:\n  c:\n    env: [{value}]\n")


def test_manifest_errors() -> None:
    with pytest.raises(ManifestError, match="missing field `apiVersion`"):
        state_from_manifest("workloads: {}\n")
    with pytest.raises(ManifestError, match="unknown variant `SOMETIMES`"):
        state_from_manifest(
            "apiVersion: v1\nworkloads:\n  w: {agent: a, runtime: r, runtimeConfig: c, "
            "restartPolicy: SOMETIMES}\n"
        )
    with pytest.raises(ManifestError, match="Failed to parse YAML"):
        state_from_manifest("a: [")
    with pytest.raises(ManifestError, match="untagged enum FileContentSpec"):
        state_from_manifest(
            "apiVersion: v1\nworkloads:\n  w: {agent: a, runtime: r, runtimeConfig: c, "
            "files: [{mountPoint: /x}]}\n"
        )
    assert state_from_manifest({"apiVersion": "v1"}) == {
        "apiVersion": "v1",
        "workloads": {},
        "configs": {},
    }
