"""Desired-state semantics of the emulator against Ankaios 1.0's server rules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from ankaios_sdk._protos import _ank_base as ank_base

from ankaios_model.state import DesiredState, UpdateError, filter_tree
from ankaios_model.tree import ManifestError, state_from_manifest, tree_to_proto

TUTORIAL = Path("/work/shared/tutorial-fleet-management.md")

SENDER_MANIFEST = """\
apiVersion: v0.1
workloads:
  vehicle-data-sender:
    runtime: podman
    restartPolicy: NEVER
    agent: agent_A
    configs:
      c: vehicle-data-sender-config
    runtimeConfig: |
      image: ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0
      commandOptions:
        - "--net=host"
        {{#each c.env}}
        - "-e"
        - "{{key}}={{value}}"
        {{/each}}
configs:
  vehicle-data-sender-config:
    env:
      - key: MQTT_BROKER_ADDR
        value: localhost
      - key: MQTT_BROKER_PORT
        value: "1883"
      - key: TOPIC
        value: vehicle/1/sensors/speed
      - key: INTERVAL
        value: "1"
"""

CONFIG_MANIFEST = "apiVersion: v0.1\n" + SENDER_MANIFEST[
    SENDER_MANIFEST.index("configs:\n  vehicle") :
].replace('value: "1"\n', 'value: "10"\n')

SENDER_MASKS = [
    "desiredState.workloads.vehicle-data-sender",
    "desiredState.configs.vehicle-data-sender-config",
]


def manifest_proto(text: str) -> Any:
    return tree_to_proto({"desiredState": state_from_manifest(text)})


def workload(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"agent": "agent_A", "runtime": "podman", "runtimeConfig": "image: x"}
    base.update(fields)
    return base


def state_with(workloads: dict[str, Any], configs: dict[str, Any] | None = None) -> Any:
    ds: dict[str, Any] = {"apiVersion": "v1", "workloads": workloads}
    if configs:
        ds["configs"] = configs
    return tree_to_proto({"desiredState": ds})


def apply(ds: DesiredState, workloads: dict[str, Any], **kw: Any) -> Any:
    masks = [f"desiredState.workloads.{n}" for n in workloads]
    return ds.update(state_with(workloads, **kw), masks)


def test_tutorial_manifests_are_the_ones_tested() -> None:
    text = TUTORIAL.read_text()
    assert '"{{key}}={{value}}"' in text
    assert 'value: "10"' in text


def test_tutorial_sender_rendering_and_config_change() -> None:
    ds = DesiredState()
    out = ds.update(manifest_proto(SENDER_MANIFEST), SENDER_MASKS)
    assert out.deleted == []
    [wl] = out.added
    assert wl.runtime_config == (
        "image: ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0\n"
        "commandOptions:\n"
        '  - "--net=host"\n'
        '  - "-e"\n  - "MQTT_BROKER_ADDR=localhost"\n'
        '  - "-e"\n  - "MQTT_BROKER_PORT=1883"\n'
        '  - "-e"\n  - "TOPIC=vehicle/1/sensors/speed"\n'
        '  - "-e"\n  - "INTERVAL=1"\n'
    )
    assert wl.instance_id == hashlib.sha256(wl.runtime_config.encode()).hexdigest()
    assert wl.instance_name == f"vehicle-data-sender.{wl.instance_id}.agent_A"
    assert wl.configs == {"c": "vehicle-data-sender-config"}

    again = ds.update(manifest_proto(SENDER_MANIFEST), SENDER_MASKS)
    assert (again.added, again.deleted) == ([], [])

    changed = ds.update(
        manifest_proto(CONFIG_MANIFEST), ["desiredState.configs.vehicle-data-sender-config"]
    )
    assert [w.name for w in changed.added] == ["vehicle-data-sender"]
    assert changed.deleted == [wl]
    assert changed.added[0].instance_id != wl.instance_id
    assert '"INTERVAL=10"' in changed.added[0].runtime_config

    # delete_manifest: empty state, same masks; twice
    empty = ank_base.CompleteState(desiredState=ank_base.State(apiVersion="v1"))
    gone = ds.update(empty, SENDER_MASKS)
    assert gone.added == [] and [w.name for w in gone.deleted] == ["vehicle-data-sender"]
    assert ds.rendered() == {}
    twice = ds.update(empty, SENDER_MASKS)
    assert (twice.added, twice.deleted) == ([], [])


def test_from_manifest_startup_and_apiversion_kept() -> None:
    ds = DesiredState.from_manifest(SENDER_MANIFEST)
    assert list(ds.rendered()) == ["vehicle-data-sender"]
    assert ds.to_tree()["apiVersion"] == "v0.1"
    assert DesiredState().to_tree() == {"apiVersion": "v1", "workloads": {}}


def test_from_manifest_errors() -> None:
    with pytest.raises(UpdateError, match=r"Unsupported API version\. Received 'v2'"):
        DesiredState.from_manifest("apiVersion: v2\n")
    with pytest.raises(ManifestError, match="missing field `runtime`"):
        DesiredState.from_manifest("apiVersion: v1\nworkloads:\n  a: {agent: x}\n")
    with pytest.raises(UpdateError) as err:
        DesiredState.from_manifest(
            "apiVersion: v1\nworkloads:\n  a: {agent: x, runtime: p, runtimeConfig: '{{c}}', "
            "configs: {c: missing}}\n"
        )
    assert str(err.value) == (
        "Resulting State is invalid, reason: "
        "'Workload references config key 'missing' that does not exist'"
    )


def test_add_replace_and_change_fields() -> None:
    ds = DesiredState()
    out = apply(ds, {"a": workload(), "b": workload(agent="")})
    assert [w.name for w in out.added] == ["a", "b"]
    assert ds.rendered()["b"].agent == ""
    out = apply(ds, {"a": workload(tags={"owner": "me"})})
    assert [w.name for w in out.added] == ["a"] and [w.name for w in out.deleted] == ["a"]
    assert out.added[0].instance_id == out.deleted[0].instance_id
    out = ds.update(
        state_with({"a": workload(restartPolicy="ALWAYS")}),
        ["desiredState.workloads.a.restartPolicy"],
    )
    assert ds.rendered()["a"].restart_policy == "ALWAYS"
    assert ds.rendered()["a"].tags == {"owner": "me"}
    # a sub-field mask whose value is absent in newState removes the field
    ds.update(state_with({}), ["desiredState.workloads.a.tags.owner"])
    assert ds.rendered()["a"].tags == {}


def test_remove_nonexistent_and_mask_outside_state() -> None:
    ds = DesiredState()
    out = ds.update(state_with({}), ["desiredState.workloads.nothing"])
    assert (out.added, out.deleted) == ([], [])
    out = ds.update(state_with({}), ["desiredState.unknownField"])
    assert (out.added, out.deleted) == ([], [])


@pytest.mark.parametrize(
    "mask", ["desiredState.workloads.a.b.c", "", "desiredState.workloads.a.runtime.x"]
)
def test_invalid_paths(mask: str) -> None:
    ds = DesiredState()
    with pytest.raises(UpdateError) as err:
        ds.update(state_with({}), [mask])
    assert str(err.value) == f"Update rejected: 'Could not find field {mask}'"


def test_set_into_missing_workload_fails_parsing() -> None:
    ds = DesiredState()
    with pytest.raises(UpdateError) as err:
        ds.update(state_with({"a": {"agent": "x"}}), ["desiredState.workloads.a.agent"])
    assert str(err.value) == (
        "Update rejected: 'Resulting State is invalid, reason: "
        "'Could not parse into CompleteState: 'missing field `runtime`'''"
    )


def test_no_new_state() -> None:
    with pytest.raises(UpdateError) as err:
        DesiredState().update(None, [])
    assert str(err.value) == "The UpdateStateRequest does not contain a new state"


def test_empty_mask_replaces_everything() -> None:
    ds = DesiredState()
    apply(ds, {"a": workload(), "b": workload()})
    out = ds.update(state_with({"c": workload()}), [])
    assert [w.name for w in out.added] == ["c"]
    assert [w.name for w in out.deleted] == ["a", "b"]


def test_empty_mask_without_workloads_map() -> None:
    ds = DesiredState()
    with pytest.raises(UpdateError) as err:
        ds.update(ank_base.CompleteState(desiredState=ank_base.State(apiVersion="v1")), [])
    assert str(err.value) == (
        "Update rejected: 'Resulting State is invalid, reason: 'Could not parse into "
        "CompleteState: 'Cannot convert field 'desired_state' to spec object: "
        "'Missing field 'workloads''.'''"
    )
    with pytest.raises(UpdateError, match="Missing field 'desired_state'"):
        ds.update(ank_base.CompleteState(), [])


def test_api_version_only_via_mask() -> None:
    ds = DesiredState()
    bad = ank_base.CompleteState(desiredState=ank_base.State(apiVersion="v7"))
    assert ds.update(bad, ["desiredState.workloads.x"]).added == []
    with pytest.raises(UpdateError) as err:
        ds.update(bad, ["desiredState.apiVersion"])
    assert str(err.value) == "Unsupported API version. Received 'v7', expected 'v1'"
    old = ank_base.CompleteState(desiredState=ank_base.State(apiVersion="v0.1"))
    ds.update(old, ["desiredState.apiVersion"])
    assert ds.api_version == "v0.1"


def test_atomic_on_error() -> None:
    ds = DesiredState()
    apply(ds, {"a": workload()})
    before = ds.spec()
    with pytest.raises(UpdateError):
        ds.update(state_with({"b": workload(agent="bad agent")}), ["desiredState.workloads.b"])
    assert ds.spec() == before


@pytest.mark.parametrize(
    ("workloads", "reason"),
    [
        ({"bad.name": workload()}, None),
        (
            {"a": workload(agent="agent A")},
            "Unsupported agent name 'agent A'. Only a-z, A-Z, 0-9 chars, underscore (_), "
            "and hyphen (-) allowed. Maximum length is 63 characters.",
        ),
        (
            {"x" * 64: workload()},
            f"Unsupported workload name '{'x' * 64}'. Length 64 exceeds the maximum limit "
            "of 63 characters.",
        ),
        (
            {
                "a": workload(
                    controlInterfaceAccess={
                        "allowRules": [
                            {"type": "StateRule", "operation": "Read", "filterMasks": [""]}
                        ]
                    }
                )
            },
            "Empty filter masks are not allowed in Control Interface access rules",
        ),
        (
            {
                "a": workload(
                    controlInterfaceAccess={
                        "denyRules": [
                            {"type": "StateRule", "operation": "Read", "filterMasks": ["a..b"]}
                        ]
                    }
                )
            },
            "Unsupported filter mask 'a..b'. Only \".\" separated sequences allowed where each "
            'part is either a wildcard "*" or chars in [a-zA-Z0-9_-]',
        ),
        (
            {
                "a": workload(
                    controlInterfaceAccess={
                        "allowRules": [{"type": "LogRule", "workloadNames": ["a*b*"]}]
                    }
                )
            },
            # Returned early in Ankaios, so without the "Log rule validation filed" prefix.
            "Expected at most one '*' symbol.",
        ),
        (
            {
                "a": workload(
                    controlInterfaceAccess={
                        "allowRules": [{"type": "LogRule", "workloadNames": ["\u00e9" * 32 + "*"]}]
                    }
                )
            },
            # Rust measures the UTF-8 length: 65 bytes, though only 33 characters.
            "Log rule validation filed: Unsupported workload name filter with wildcard '"
            + "\u00e9" * 32
            + "*'. Filter length 65 exceeds the maximum limit of 64 characters.",
        ),
        # Rust's regex `$` does not match before a trailing newline (Python's re.match does).
        (
            {"nginx\n": workload()},
            "Unsupported workload name 'nginx\n'. Expected to have characters in [a-zA-Z0-9_-].",
        ),
        (
            {"a": workload(agent="agent_A\n")},
            "Unsupported agent name 'agent_A\n'. Only a-z, A-Z, 0-9 chars, underscore (_), "
            "and hyphen (-) allowed. Maximum length is 63 characters.",
        ),
        (
            {
                "a": workload(
                    controlInterfaceAccess={
                        "allowRules": [
                            {
                                "type": "StateRule",
                                "operation": "Read",
                                "filterMasks": ["desiredState\n"],
                            }
                        ]
                    }
                )
            },
            "Unsupported filter mask 'desiredState\n'. Only \".\" separated sequences allowed "
            'where each part is either a wildcard "*" or chars in [a-zA-Z0-9_-]',
        ),
        (
            {
                "a": workload(
                    controlInterfaceAccess={
                        "allowRules": [{"type": "LogRule", "workloadNames": ["a*b\n"]}]
                    }
                )
            },
            "Log rule validation filed: Unsupported workload name filter with wildcard "
            "'a*b\n'. Expected to have characters in [a-zA-Z0-9_-].",
        ),
        (
            {"a": workload(runtimeConfig="{{c.x}}", configs={"c": "nope"})},
            "Workload references config key 'nope' that does not exist",
        ),
    ],
)
def test_resulting_state_invalid(workloads: dict[str, Any], reason: str | None) -> None:
    ds = DesiredState()
    masks = [f"desiredState.workloads.{n}" for n in workloads]
    if reason is None:  # a dotted name cannot even be addressed by a mask
        with pytest.raises(UpdateError):
            ds.update(state_with(workloads), masks)
        return
    with pytest.raises(UpdateError) as err:
        ds.update(state_with(workloads), masks)
    assert str(err.value) == f"Update rejected: 'Resulting State is invalid, reason: '{reason}''"


def test_config_key_with_trailing_newline_is_rejected() -> None:
    ds = DesiredState()
    with pytest.raises(UpdateError) as err:
        ds.update(state_with({}, configs={"k\n": "v"}), ["desiredState.configs.k\n"])
    # validate_pre_rendering: no "Update rejected" prefix.
    assert str(err.value) == (
        "Unsupported config item key 'k\n'. Only a-z, A-Z, 0-9 chars, underscore (_), "
        "and hyphen (-) allowed. Maximum length is 63 characters."
    )


def test_runtime_config_is_trimmed_like_rust() -> None:
    """serde's trim_string uses Rust's trim(): Unicode White_Space only."""
    ds = DesiredState()
    out = apply(ds, {"a": workload(runtimeConfig=" \u3000\x1cimage: x\x1f\n\t")})
    [wl] = out.added
    # U+001C..U+001F are not White_Space for Rust (Python's strip() would remove them).
    assert wl.runtime_config == "\x1cimage: x\x1f"
    assert wl.instance_id == hashlib.sha256(b"\x1cimage: x\x1f").hexdigest()


def test_invalid_workload_name_with_empty_mask() -> None:
    with pytest.raises(UpdateError) as err:
        DesiredState().update(state_with({"bad%name": workload()}), [])
    assert "Unsupported workload name 'bad%name'. Expected to have characters in" in str(err.value)


def test_render_error_message() -> None:
    ds = DesiredState()
    with pytest.raises(UpdateError) as err:
        ds.update(
            state_with(
                {"a": workload(runtimeConfig="x: {{c.missing}}", configs={"c": "cfg"})},
                configs={"cfg": {"SetInParent": "y"}},
            ),
            ["desiredState.workloads.a", "desiredState.configs.cfg"],
        )
    assert str(err.value) == (
        "Update rejected: 'Resulting State is invalid, reason: 'Failed to render field "
        "'runtimeConfig': 'Error rendering \"Unnamed template\" line 1, col 4: Failed to "
        "access variable in strict mode Some(\"c.missing\")'''"
    )


def test_delete_config_still_referenced() -> None:
    ds = DesiredState()
    ds.update(manifest_proto(SENDER_MANIFEST), SENDER_MASKS)
    with pytest.raises(UpdateError) as err:
        ds.update(state_with({}), ["desiredState.configs.vehicle-data-sender-config"])
    assert str(err.value) == (
        "Update rejected: 'Resulting State is invalid, reason: 'Workload references config "
        "key 'vehicle-data-sender-config' that does not exist''"
    )


def test_config_key_validation_has_no_prefix() -> None:
    with pytest.raises(UpdateError) as err:
        DesiredState().update(state_with({}, configs={"bad%key": "v"}), ["desiredState.configs"])
    assert str(err.value).startswith("Unsupported config item key 'bad%key'.")


def test_non_string_config_item_rejected() -> None:
    cs = state_with({})
    cs.desiredState.configs.configs["port"].SetInParent()  # what the SDK makes of 1883
    with pytest.raises(UpdateError) as err:
        DesiredState().update(cs, ["desiredState.configs.port"])
    assert "data did not match any variant of untagged enum ConfigItemEnumSpec" in str(err.value)


def test_dependency_cycle_and_unknown_dependency() -> None:
    ds = DesiredState()
    out = apply(ds, {"a": workload(dependencies={"ghost": "ADD_COND_RUNNING"})})
    assert [w.name for w in out.added] == ["a"]
    with pytest.raises(UpdateError) as err:
        apply(
            ds,
            {
                "x": workload(dependencies={"y": "ADD_COND_RUNNING"}),
                "y": workload(dependencies={"x": "ADD_COND_SUCCEEDED"}),
            },
        )
    assert str(err.value) == "Update rejected: 'workload dependency 'x' is part of a cycle.'"


def test_agent_tags_via_mask() -> None:
    cs = ank_base.CompleteState()
    cs.agents.agents["agent_A"].tags.tags["zone"] = "eu"
    out = DesiredState().update(cs, ["agents.agent_A.tags"])
    assert out.agent_tags == {"agent_A": {"zone": "eu"}}
    assert (out.added, out.deleted) == ([], [])


def test_mask_replaces_whole_configs() -> None:
    ds = DesiredState()
    ds.update(state_with({}, configs={"a": "1", "b": "2"}), ["desiredState.configs"])
    ds.update(state_with({}, configs={"c": "3"}), ["desiredState.configs"])
    assert ds.spec()["configs"] == {"c": "3"}


COMPLETE = {
    "desiredState": {"apiVersion": "v1", "workloads": {"a": {"agent": "x", "tags": {"k": "v"}}}},
    "workloadStates": {
        "agent_A": {"a": {"id1": {"state": "Running", "subState": "Ok", "additionalInfo": ""}}}
    },
    "agents": {"agent_A": {"status": {"cpuUsage": 3}, "tags": {"t": "1"}}},
}


def test_filter_tree() -> None:
    assert filter_tree(COMPLETE, []) == COMPLETE
    assert filter_tree(COMPLETE, ["desiredState.workloads.a.agent"]) == {
        "desiredState": {"apiVersion": "v1", "workloads": {"a": {"agent": "x"}}}
    }
    assert filter_tree(COMPLETE, ["desiredState.workloads.*.tags"]) == {
        "desiredState": {"apiVersion": "v1", "workloads": {"a": {"tags": {"k": "v"}}}}
    }
    assert filter_tree(COMPLETE, ["workloadStates.agent_A.a.id1.state"]) == {
        "workloadStates": {"agent_A": {"a": {"id1": {"state": "Running", "subState": "Ok"}}}}
    }
    assert filter_tree(COMPLETE, ["workloadStates.*.*.*.subState"]) == {
        "workloadStates": {"agent_A": {"a": {"id1": {"state": "Running", "subState": "Ok"}}}}
    }
    assert filter_tree(COMPLETE, ["agents.nope", "workloadStates.x"]) == {}
    assert filter_tree(COMPLETE, ["agents.agent_A.tags"]) == {
        "agents": {"agent_A": {"tags": {"t": "1"}}}
    }
    assert filter_tree(COMPLETE, [""]) == {}
