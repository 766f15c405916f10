"""Every failure is answered on the request's resp topic with a code and a message."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, MqttProbe, Requester

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.policy import Policy


def error_of(reply: Any) -> tuple[str, str]:
    assert set(reply) == {"error"}, reply
    return reply["error"]["code"], reply["error"]["message"]


SENDER_MANIFEST = (MANIFESTS / "vehicle-data-sender.yaml").read_text()

BAD_PAYLOADS: list[tuple[Operation, bytes]] = [
    (Operation.APPLY, b"apiVersion: [unclosed"),
    (Operation.APPLY, b"\xff\xfe\x00garbage"),
    (Operation.APPLY, b"[1, 2, 3]"),
    (Operation.APPLY, b"apiVersion: v1"),
    (Operation.APPLY, b"apiVersion: v1\nworkloads: {a: {agent: 1}}"),
    (Operation.APPLY, b""),
    (Operation.DELETE, b"not: [a manifest"),
    (Operation.DELETE, b"apiVersion: v1\nconfigs: {c: 5}"),
    (Operation.STATE, b"workloadStates"),
    (Operation.STATE, b'"workloadStates"'),
    (Operation.STATE, b"null"),
    (Operation.STATE, b'{"masks": ["a"]}'),
    (Operation.STATE, b"[1, 2]"),
    (Operation.STATE, b'[""]'),
    (Operation.STATE, b"\xff"),
    (Operation.STATE, b"[" * 100_000),
]


@pytest.mark.parametrize(("operation", "payload"), BAD_PAYLOADS)
def test_bad_input_gets_invalid_request(
    connector: Connector, requester: Requester, operation: Operation, payload: bytes
) -> None:
    code, message = error_of(requester.call(operation, payload))
    assert code == "INVALID_REQUEST"
    assert message
    # ...and the connector keeps serving.
    assert "workload_states" in requester.state(["workloadStates"])


def test_oversized_payload(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, policy=Policy(max_payload=1000))
    huge = SENDER_MANIFEST + "\n# " + "x" * 2000
    code, message = error_of(requester.apply(huge))
    assert code == "POLICY_DENIED"
    assert "limit is 1000" in message
    assert "maxPayloadSize" in message


def test_access_denied(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    read_only = {"allowRules": [{"type": "StateRule", "operation": "Read", "filterMasks": ["*"]}]}
    with Emulator(control_interface=tmp_path / "ci", access=read_only) as emu:
        start_connector(emu.control_interface)
        code, message = error_of(requester.apply(SENDER_MANIFEST))
        assert code == "ACCESS_DENIED"
        assert "Access denied" in message
        assert "vehicle-data-sender" not in emu.complete_state(["desiredState"])[
            "desiredState"
        ].get("workloads", {})
        # Reading is still allowed.
        assert "workload_states" in requester.state(["workloadStates"])


def test_rejected_passes_ankaios_message_on(connector: Connector, requester: Requester) -> None:
    manifest = """apiVersion: v1
workloads:
  orphan:
    runtime: podman
    agent: agent_A
    configs: {c: no-such-config}
    runtimeConfig: "image: {{c}}"
"""
    code, message = error_of(requester.apply(manifest))
    assert code == "REJECTED"
    assert "no-such-config" in message


def test_timeout_and_late_answer_is_not_mixed_up(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, request_timeout=0.5)
    emulator.faults.delay = 1.0
    code, _ = error_of(requester.state(["workloadStates"]))
    assert code == "TIMEOUT"
    emulator.faults.delay = 0.0
    # The late answer to the first request arrives meanwhile and must be dropped.
    applied = requester.apply(SENDER_MANIFEST)
    assert applied["added_workloads"][0]["workload_name"] == "vehicle-data-sender"


def test_unavailable_without_control_interface(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    # After the grace for the first connection (the request timeout), not before.
    start_connector(tmp_path / "nothing-here", wait_ankaios=False, request_timeout=0.5)
    code, message = error_of(requester.state(["workloadStates"]))
    assert code == "UNAVAILABLE"
    assert "not connected" in message


def test_busy_when_queue_is_full(
    emulator: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(emulator.control_interface, queue_size=1, request_timeout=2.0)
    requester = Requester(probe, vin)
    emulator.faults.delay = 1.0
    for i in range(5):
        probe.publish(requester.topics.request(Operation.STATE, f"r{i}"), '["workloadStates"]')
    codes = {}
    for _ in range(5):
        message = probe.expect(timeout=15)
        reply = json.loads(message.payload)
        codes[message.topic.rsplit("/", 1)[1]] = reply.get("error", {}).get("code", "OK")
    assert sorted(codes) == [f"r{i}" for i in range(5)]
    assert "BUSY" in codes.values()
    assert codes["r0"] == "OK"
