"""The tutorial, step by step over MQTT, with the tutorial's own files."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from testkit import MANIFESTS, Broker, MqttProbe, Requester

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.topics import Operation

SENDER = "vehicle-data-sender"
CONFIG = "vehicle-data-sender-config"


def instances(emulator: Emulator, name: str) -> dict[str, Any]:
    """The execution states Ankaios reports for a workload, by instance id."""
    states = emulator.complete_state(["workloadStates"]).get("workloadStates", {})
    return states.get("agent_A", {}).get(name, {})


def test_apply_state_reconfigure_delete(
    connector: Connector, emulator: Emulator, requester: Requester
) -> None:
    applied = requester.apply((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
    assert applied["deleted_workloads"] == []
    [added] = applied["added_workloads"]
    assert added["workload_name"] == SENDER
    assert added["agent_name"] == "agent_A"
    first_id = added["workload_id"]
    assert len(first_id) == 64
    desired = emulator.complete_state(["desiredState"])["desiredState"]
    assert SENDER in desired["workloads"]
    assert CONFIG in desired["configs"]

    emulator.wait_for(lambda e: instances(e, SENDER).get(first_id, {}).get("state") == "Running")
    state = requester.state(["workloadStates"])
    execution = state["workload_states"]["agent_A"][SENDER][first_id]
    assert execution["state"] == "RUNNING"
    assert execution["substate"] == "RUNNING_OK"

    reconfigured = requester.apply((MANIFESTS / "config.yaml").read_bytes())
    [deleted] = reconfigured["deleted_workloads"]
    [restarted] = reconfigured["added_workloads"]
    assert deleted["workload_id"] == first_id
    assert restarted["workload_name"] == SENDER
    assert restarted["workload_id"] not in (first_id, "")
    config = emulator.complete_state([f"desiredState.configs.{CONFIG}"])
    env = config["desiredState"]["configs"][CONFIG]["env"]
    assert {"key": "INTERVAL", "value": "10"} in env

    removed = requester.delete((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
    assert removed["added_workloads"] == []
    assert [w["workload_id"] for w in removed["deleted_workloads"]] == [restarted["workload_id"]]
    desired = emulator.complete_state(["desiredState"])["desiredState"]
    assert SENDER not in desired.get("workloads", {})
    assert CONFIG not in desired.get("configs", {})
    emulator.wait_for(lambda e: not instances(e, SENDER))


def test_reapply_changes_nothing(connector: Connector, requester: Requester) -> None:
    manifest = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()
    assert len(requester.apply(manifest)["added_workloads"]) == 1
    assert requester.apply(manifest) == {"added_workloads": [], "deleted_workloads": []}


def test_delete_twice(connector: Connector, requester: Requester) -> None:
    manifest = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()
    requester.apply(manifest)
    assert len(requester.delete(manifest)["deleted_workloads"]) == 1
    assert requester.delete(manifest) == {"added_workloads": [], "deleted_workloads": []}


def test_v1_manifests_work_too(
    connector: Connector, emulator: Emulator, requester: Requester
) -> None:
    applied = requester.apply((MANIFESTS / "v1" / "vehicle-data-sender.yaml").read_bytes())
    assert [w["workload_name"] for w in applied["added_workloads"]] == [SENDER]
    again = requester.apply((MANIFESTS / "v1" / "config.yaml").read_bytes())
    assert [w["workload_name"] for w in again["added_workloads"]] == [SENDER]


def test_state_reply_has_the_sdk_shape(connector: Connector, requester: Requester) -> None:
    requester.apply((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
    state = requester.state([f"desiredState.workloads.{SENDER}"])
    assert state["desired_state"]["api_version"] == "v1"
    workload = state["desired_state"]["workloads"][SENDER]
    assert workload["agent"] == "agent_A"
    assert workload["runtime"] == "podman"
    assert workload["configs"] == {"c": CONFIG}


def test_full_state_for_2000_workloads(
    connector: Connector, emulator: Emulator, requester: Requester
) -> None:
    # A state reply this large desynchronises the SDK's own FIFO reader.
    lines = ["apiVersion: v1", "workloads:"]
    for i in range(2000):
        lines += [
            f"  workload-{i:04d}:",
            "    runtime: podman",
            "    agent: agent_A",
            f'    runtimeConfig: "image: example/app:{i}"',
        ]
    applied = requester.apply("\n".join(lines))
    assert len(applied["added_workloads"]) == 2000
    state = requester.state([])
    assert len(state["desired_state"]["workloads"]) == 2000
    again = requester.state(["desiredState.workloads"])
    assert len(again["desired_state"]["workloads"]) == 2000


def test_tutorial_commands_with_mosquitto_pub(
    connector: Connector, broker: Broker, probe: MqttProbe, vin: str
) -> None:
    base = f"vehicle/{vin}"
    probe.subscribe(f"{base}/#")

    def pub(topic: str, *args: str) -> None:
        subprocess.run(
            ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-t", topic, *args],
            check=True,
            timeout=10,
        )

    pub(f"{base}/manifest/apply/req", "-f", str(MANIFESTS / "vehicle-data-sender.yaml"))
    applied = json.loads(probe.expect(f"{base}/manifest/apply/resp").payload)
    assert applied["added_workloads"][0]["workload_name"] == SENDER

    pub(f"{base}/state/req", "-m", '["workloadStates"]')
    state = json.loads(probe.expect(f"{base}/state/resp").payload)
    assert SENDER in state["workload_states"]["agent_A"]

    pub(f"{base}/manifest/apply/req", "-f", str(MANIFESTS / "config.yaml"))
    reconfigured = json.loads(probe.expect(f"{base}/manifest/apply/resp").payload)
    assert len(reconfigured["deleted_workloads"]) == 1

    pub(f"{base}/manifest/delete/req", "-f", str(MANIFESTS / "vehicle-data-sender.yaml"))
    deleted = json.loads(probe.expect(f"{base}/manifest/delete/resp").payload)
    assert deleted["deleted_workloads"][0]["workload_name"] == SENDER


def test_two_connectors_in_one_process(
    tmp_path: Any, start_connector: Any, probe: MqttProbe
) -> None:
    with (
        Emulator(control_interface=tmp_path / "car1") as car1,
        Emulator(control_interface=tmp_path / "car2") as car2,
    ):
        start_connector(car1.control_interface, vin="TWIN1")
        start_connector(car2.control_interface, vin="TWIN2")
        one, two = Requester(probe, "TWIN1"), Requester(probe, "TWIN2")
        one.apply((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
        assert SENDER in car1.complete_state(["desiredState"])["desiredState"]["workloads"]
        assert SENDER not in car2.complete_state(["desiredState"])["desiredState"].get(
            "workloads", {}
        )
        assert two.state(["desiredState.workloads"])["desired_state"]["workloads"] == {}


def test_reply_topic_operations(requester: Requester, connector: Connector) -> None:
    # Each operation answers on its own resp topic, as the tutorial's observer expects.
    for operation, payload in [
        (Operation.STATE, '["workloadStates"]'),
        (Operation.APPLY, (MANIFESTS / "config.yaml").read_text()),
        (Operation.DELETE, (MANIFESTS / "config.yaml").read_text()),
    ]:
        reply = requester.send(operation, payload)
        assert reply.topic == requester.topics.response(operation)
