"""Manifests as Ankaios 1.0 reads them, without the SDK parser's defects."""

from __future__ import annotations

from pathlib import Path

import pytest
from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.manifest import MAX_NODES, parse_manifest
from fleet_connector.errors import ErrorCode, RequestError

MANIFESTS = Path(__file__).parents[2] / "manifests"


def invalid(payload: str | bytes) -> str:
    with pytest.raises(RequestError) as info:
        parse_manifest(payload.encode() if isinstance(payload, str) else payload)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    return info.value.message


def test_tutorial_manifest_gives_the_sdk_masks() -> None:
    manifest = parse_manifest((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
    assert manifest.api_version == "v0.1"
    assert manifest.masks == [
        "desiredState.workloads.vehicle-data-sender",
        "desiredState.configs.vehicle-data-sender-config",
    ]
    workload = manifest.workloads["vehicle-data-sender"]
    assert workload.agent == "agent_A"
    assert workload.runtime == "podman"
    assert "{{#each c.env}}" in workload.runtimeConfig
    assert dict(workload.configs.configs) == {"c": "vehicle-data-sender-config"}
    env = manifest.configs["vehicle-data-sender-config"].object.fields["env"].array.values
    assert [(e.object.fields["key"].String, e.object.fields["value"].String) for e in env] == [
        ("MQTT_BROKER_ADDR", "localhost"),
        ("MQTT_BROKER_PORT", "1883"),
        ("TOPIC", "vehicle/1/sensors/speed"),
        ("INTERVAL", "1"),
    ]


def test_config_only_manifest() -> None:
    manifest = parse_manifest((MANIFESTS / "config.yaml").read_bytes())
    assert manifest.masks == ["desiredState.configs.vehicle-data-sender-config"]
    state = manifest.apply_state()
    assert not state.desiredState.workloads.workloads


def test_v1_syntax_the_sdk_parser_rejects() -> None:
    manifest = parse_manifest(
        b"""
apiVersion: v1
workloads:
  tool:
    runtime: podman
    agent: agent_A
    runtimeConfig: "image: x"
    tags: {owner: fleet}
    dependencies: {db: ADD_COND_RUNNING}
    controlInterfaceAccess:
      allowRules:
        - type: StateRule
          operation: Read
          filterMasks: ["workloadStates"]
        - type: LogRule
          workloadNames: ["tool_*"]
      denyRules:
        - type: StateRule
          operation: Write
          filterMasks: ["desiredState.workloads.fleetconnector"]
    files:
      - mountPoint: /etc/tool.conf
        data: "x = 1"
      - mountPoint: /etc/blob
        binaryData: AAEC
"""
    )
    w = manifest.workloads["tool"]
    allow = w.controlInterfaceAccess.allowRules
    assert allow[0].stateRule.operation == _ank_base.RW_READ
    assert list(allow[0].stateRule.filterMasks) == ["workloadStates"]
    assert list(allow[1].logRule.workloadNames) == ["tool_*"]
    assert w.controlInterfaceAccess.denyRules[0].stateRule.operation == _ank_base.RW_WRITE
    assert [(f.mountPoint, f.data, f.binaryData) for f in w.files.files] == [
        ("/etc/tool.conf", "x = 1", ""),
        ("/etc/blob", "", "AAEC"),
    ]
    assert dict(w.tags.tags) == {"owner": "fleet"}
    assert dict(w.dependencies.dependencies) == {"db": _ank_base.ADD_COND_RUNNING}


def test_v01_tags_are_a_list_and_filter_mask_singular() -> None:
    manifest = parse_manifest(
        b"""
apiVersion: v0.1
workloads:
  a:
    tags: [{key: owner, value: fleet}]
    controlInterfaceAccess:
      allowRules: [{type: StateRule, operation: ReadWrite, filterMask: ["*"]}]
"""
    )
    w = manifest.workloads["a"]
    assert dict(w.tags.tags) == {"owner": "fleet"}
    assert w.controlInterfaceAccess.allowRules[0].stateRule.operation == _ank_base.RW_READ_WRITE


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("apiVersion: [", "not valid YAML"),
        ("- a\n- b", "must be a YAML mapping"),
        ("just text", "must be a YAML mapping"),
        ("workloads: {a: {agent: x}}", "no apiVersion"),
        ("apiVersion: v2\nworkloads: {a: {}}", "'v2' is not supported"),
        ("apiVersion: 1\nworkloads: {a: {}}", "apiVersion must be a string"),
        ("apiVersion: v1", "neither workloads nor configs"),
        ("apiVersion: v1\nworkloads: {}", "neither workloads nor configs"),
        (
            "apiVersion: v1\nworkload: {a: {}}",
            "neither workloads nor configs (unknown key 'workload' at the top level is ignored "
            "by Ankaios; did you mean 'workloads'?)",
        ),
        ("apiVersion: v1\nworkloads: [a]", "workloads must be a mapping, not a list"),
        ("apiVersion: v1\nworkloads: {a.b: {}}", "may only contain"),
        ("apiVersion: v1\nworkloads: {a: {agent: 7}}", "workloads.a.agent must be a string"),
        (
            "apiVersion: v1\nworkloads: {a: {runtime: p, runtimeconfig: x}}",
            "'runtimeConfig' is a required property",
        ),
        ("apiVersion: v1\nworkloads: {a: {restartPolicy: SOMETIMES}}", "must be one of NEVER"),
        ("apiVersion: v1\nworkloads: {a: {tags: [{key: a, value: b}]}}", "must be a mapping"),
        ("apiVersion: v0.1\nworkloads: {a: {tags: {a: b}}}", "must be a list"),
        ("apiVersion: v1\nconfigs: {c: {port: 1883}}", 'quote it: "1883"'),
        ("apiVersion: v1\nconfigs: {c: true}", "must be a string, not a boolean"),
        ("apiVersion: v1\nconfigs: {c: null}", "must be a string, not null"),
        (
            "apiVersion: v1\nworkloads: {a: {controlInterfaceAccess: {allowRules: [{type: X}]}}}",
            "StateRule or LogRule",
        ),
        (
            "apiVersion: v1\nworkloads: {a: {controlInterfaceAccess: "
            "{allowRules: [{type: StateRule, operation: Read}]}}}",
            "needs filterMasks",
        ),
        ("apiVersion: v1\nworkloads: {a: {files: [{mountPoint: /x}]}}", "exactly one of data"),
        ("!!python/object:os.system {}", "not valid YAML"),
    ],
)
def test_bad_manifests_say_what_is_wrong(payload: str, expected: str) -> None:
    assert expected in invalid(payload)


def test_invalid_utf8() -> None:
    assert "not UTF-8" in invalid(b"apiVersion: v1\xff\xfe")


def test_alias_bomb_is_bounded() -> None:
    bomb = "apiVersion: v1\nconfigs:\n  a0: &r0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  a{i}: &r{i} [{', '.join([f'*r{i - 1}'] * 10)}]\n" for i in range(1, 10)
    )
    assert f"more than {MAX_NODES} values" in invalid(bomb)


def test_recursive_alias_is_refused() -> None:
    assert "refers to itself" in invalid("apiVersion: v1\nconfigs:\n  a: &x [1, *x]\n")


def test_deep_nesting_is_refused() -> None:
    deep = "apiVersion: v1\nconfigs:\n  c: " + "[" * 5000 + "]" * 5000
    message = invalid(deep)
    assert "nested" in message or "not valid YAML" in message
