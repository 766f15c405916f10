"""Manifests checked like `ank apply` 1.0.1 does, and warnings for keys Ankaios would ignore."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from testkit import MANIFESTS, Requester

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.requests.validation import schema

WORKLOAD = """\
apiVersion: {version}
workloads:
  tool:
    runtime: podman
    agent: agent_A
    runtimeConfig: "image: x"
{extra}"""


def warnings_of(text: str) -> tuple[str, ...]:
    return parse_manifest(text.encode()).warnings


def schema_error(text: str) -> str:
    with pytest.raises(RequestError) as info:
        parse_manifest(text.encode())
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.message.startswith("Manifest schema validation failed: ")
    return info.value.message


@pytest.mark.parametrize("version", ["v1", "v0.1"])
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "    restartpolicy: ALWAYS\n",
            "unknown key 'restartpolicy' at workloads.tool is ignored by Ankaios; "
            "did you mean 'restartPolicy'?",
        ),
        ("colour: red\n", "unknown key 'colour' at the top level is ignored by Ankaios; known: "),
        (
            "    controlInterfaceAccess: {allowRule: []}\n",
            "unknown key 'allowRule' at workloads.tool.controlInterfaceAccess is ignored by "
            "Ankaios; did you mean 'allowRules'?",
        ),
        (
            "    controlInterfaceAccess:\n      allowRules: [{type: StateRule, operation: Read,"
            " filterMasks: [a], opertion: Write}]\n",
            "unknown key 'opertion' at workloads.tool.controlInterfaceAccess.allowRules[0] is "
            "ignored by Ankaios; did you mean 'operation'?",
        ),
        (
            "    controlInterfaceAccess:\n      denyRules: [{type: LogRule, workloadNames: [a],"
            " names: [b]}]\n",
            "unknown key 'names' at workloads.tool.controlInterfaceAccess.denyRules[0] is "
            "ignored by Ankaios; known: type, workloadNames",
        ),
        (
            "    files: [{mountPoint: /a, data: x, mode: '0600'}]\n",
            "unknown key 'mode' at workloads.tool.files[0] is ignored by Ankaios; known: ",
        ),
    ],
)
def test_each_kind_of_unknown_key_is_a_warning(version: str, extra: str, expected: str) -> None:
    [warning] = warnings_of(WORKLOAD.format(version=version, extra=extra))
    assert warning.startswith(expected)


def test_v01_tag_entries_with_unknown_keys_warn() -> None:
    extra = "    tags: [{key: owner, value: fleet, colour: red}]\n"
    assert warnings_of(WORKLOAD.format(version="v0.1", extra=extra)) == (
        "unknown key 'colour' at workloads.tool.tags[0] is ignored by Ankaios; known: key, value",
    )


def test_the_tutorials_manifests_have_no_warnings() -> None:
    for path in [*MANIFESTS.glob("*.yaml"), *MANIFESTS.glob("v1/*.yaml")]:
        if path.name != "image-map.yaml":
            assert parse_manifest(path.read_bytes()).warnings == (), path


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("    agent: a.b\n", "workloads.tool.agent: 'a.b' does not match"),
        ("    configs: {c: x.y}\n", "workloads.tool.configs.c: 'x.y' does not match"),
        (
            "    controlInterfaceAccess:\n      allowRules: [{type: StateRule, operation: Read,"
            " filterMasks: ['desiredState..workloads']}]\n",
            "allowRules[0].filterMasks[0]: 'desiredState..workloads' does not match",
        ),
        (
            "    controlInterfaceAccess:\n      allowRules: [{type: LogRule, workloadNames:"
            " ['a*b*']}]\n",
            "allowRules[0].workloadNames[0]: 'a*b*' does not match",
        ),
        (
            "    controlInterfaceAccess:\n      allowRules: [{type: StateRule, operation: Read,"
            " filterMask: [a]}]\n",
            "'filterMasks' is a required property",
        ),
    ],
)
def test_v1_patterns_as_ank_apply_checks_them(extra: str, expected: str) -> None:
    text = WORKLOAD.format(version="v1", extra="").replace("    agent: agent_A\n", "") + extra
    if "agent:" not in extra:
        text += "    agent: agent_A\n"
    assert expected in schema_error(text)


def test_names_longer_than_63_characters_are_refused() -> None:
    name = "w" * 64
    text = WORKLOAD.format(version="v1", extra="").replace("tool:", f"{name}:")
    assert f"'{name}' is too long" in schema_error(text)


def test_templated_agent_matches_the_pattern() -> None:
    text = WORKLOAD.format(version="v1", extra="    configs: {c: cfg}\n").replace(
        "agent: agent_A", "agent: '{{c.agent}}'"
    )
    assert parse_manifest((text + "configs: {cfg: {agent: agent_A}}\n").encode()).warnings == ()


def test_v01_is_not_schema_checked_like_ankaios() -> None:
    extra = "    agent: a.b\n"
    text = WORKLOAD.format(version="v0.1", extra="").replace("    agent: agent_A\n", extra)
    assert parse_manifest(text.encode()).warnings == ()


def test_the_schema_ships_in_the_package() -> None:
    assert schema("v1")["properties"]["apiVersion"]["pattern"] == "^v1$"
    assert schema("v0.1")["properties"]["apiVersion"]["pattern"] == "^v0[.]1$"


TYPO = WORKLOAD.format(version="v0.1", extra="    restartpolicy: ALWAYS\n")


def test_apply_delete_replies_carry_warnings(connector: Connector, requester: Requester) -> None:
    applied = requester.apply(TYPO)
    assert [w["workload_name"] for w in applied["added_workloads"]] == ["tool"]
    assert applied["warnings"] == [
        "unknown key 'restartpolicy' at workloads.tool is ignored by Ankaios; "
        "did you mean 'restartPolicy'?"
    ]
    deleted = requester.delete(TYPO)
    assert [w["workload_name"] for w in deleted["deleted_workloads"]] == ["tool"]
    assert deleted["warnings"] == applied["warnings"]


def test_replies_without_warnings_have_no_warnings_key(
    connector: Connector, requester: Requester
) -> None:
    reply = requester.apply((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
    assert set(reply) == {"added_workloads", "deleted_workloads"}


def test_strict_mode_refuses_manifests_with_warnings(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, strict=True)
    reply = requester.apply(TYPO)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert reply["error"]["message"] == (
        "STRICT is on and the manifest has warnings: unknown key 'restartpolicy' at "
        "workloads.tool is ignored by Ankaios; did you mean 'restartPolicy'?"
    )
    assert "tool" not in emulator.complete_state(["desiredState"])["desiredState"].get(
        "workloads", {}
    )
    assert "added_workloads" in requester.apply(TYPO.replace("restartpolicy", "restartPolicy"))
