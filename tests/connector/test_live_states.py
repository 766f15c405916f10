"""Live workload and agent states on retained topics, from Ankaios's events."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from ankaios_sdk import Ankaios, ControlInterface
from testkit import Broker, MqttProbe, Requester
from testkit.live import manifest, retained, states_until, until_all

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.broker import BrokerSettings

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def test_a_workload_is_shown_live_from_pending_to_removed(
    connector: Connector, requester: Requester, probe: MqttProbe, vin: str
) -> None:
    topic = f"vehicle/{vin}/workloads/nginx"
    probe.subscribe("vehicle/+/workloads/#")
    requester.apply(manifest("nginx"))
    seen = states_until(probe, topic, "running")
    assert seen[0] is not None and seen[0]["state"] == "pending"
    running = seen[-1]
    assert running is not None
    assert set(running) == {"agent", "instance_id", "state", "substate", "info", "since"}
    assert running["agent"] == "agent_A"
    assert running["substate"] == "Ok"
    assert ISO_MS.fullmatch(running["since"])
    instance = next(iter(_instances(requester, "nginx")))
    assert running["instance_id"] == instance

    requester.delete(manifest("nginx"))
    after = states_until(probe, topic, "")
    assert after[-1] is None
    # The broker holds nothing for it any more.
    assert f"vehicle/{vin}/workloads/nginx" not in retained(probe, f"vehicle/{vin}/workloads/#")


def test_agents_are_shown_with_their_load(connector: Connector, probe: MqttProbe, vin: str) -> None:
    agents = retained(probe, f"vehicle/{vin}/agents/#")
    agent = agents[f"vehicle/{vin}/agents/agent_A"]
    assert agent["connected"] is True
    assert isinstance(agent["free_memory"], int) and agent["free_memory"] > 0
    assert agent["cpu_usage"] is not None
    assert ISO_MS.fullmatch(agent["since"])


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_workload_deleted_while_the_connector_was_down_leaves_no_retained_topic(
    *,
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    broker: Broker,
    vin: str,
    protocol: str,
) -> None:
    version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
    probe = MqttProbe(broker, protocol=version)
    requester = Requester(probe, vin)
    settings = BrokerSettings(host=broker.host, port=broker.port, protocol=protocol)
    first = start_connector(emulator.control_interface, mqtt_settings=settings)
    probe.subscribe(f"vehicle/{vin}/workloads/#")
    requester.apply(manifest("keep", "drop"))
    until_all(probe, {f"vehicle/{vin}/workloads/{n}" for n in ("keep", "drop")}, "running")
    first.stop()

    # Someone else deletes a workload while the connector is away.
    ControlInterface.ANKAIOS_CONTROL_INTERFACE_BASE_PATH = str(emulator.control_interface)
    try:
        with Ankaios() as ankaios:
            ankaios.delete_workload("drop")
    finally:
        ControlInterface.ANKAIOS_CONTROL_INTERFACE_BASE_PATH = "/run/ankaios/control_interface"
    emulator.wait_for(lambda e: not e.instance_names("drop"), timeout=10)
    assert "drop" in json.dumps(retained(probe, f"vehicle/{vin}/workloads/#"))

    start_connector(emulator.control_interface, mqtt_settings=settings)
    assert states_until(probe, f"vehicle/{vin}/workloads/drop", "")[-1] is None
    left = retained(probe, f"vehicle/{vin}/workloads/#")
    assert set(left) == {f"vehicle/{vin}/workloads/keep"}
    assert left[f"vehicle/{vin}/workloads/keep"]["state"] == "running"
    probe.close()


def test_a_burst_of_changes_ends_in_the_final_state_of_each_workload(
    connector: Connector, requester: Requester, probe: MqttProbe, vin: str
) -> None:
    names = [f"w{i}" for i in range(40)]
    probe.subscribe(f"vehicle/{vin}/workloads/#")
    requester.apply(manifest(*names))
    until_all(probe, {f"vehicle/{vin}/workloads/{n}" for n in names}, "running")
    held = retained(probe, f"vehicle/{vin}/workloads/#")
    assert {t.rsplit("/", 1)[1] for t in held} == set(names)
    assert {s["state"] for s in held.values()} == {"running"}


def _instances(requester: Requester, name: str) -> dict[str, object]:
    state = requester.state(["workloadStates"])
    ids: dict[str, object] = state["workload_states"]["agent_A"][name]
    return ids


def test_states_are_published_again_to_a_broker_that_lost_them(
    emulator: Emulator,
    make_broker: Callable[..., Broker],
    start_connector: Callable[..., Connector],
    vin: str,
) -> None:
    broker = make_broker()
    settings = BrokerSettings(host=broker.host, port=broker.port)
    start_connector(emulator.control_interface, mqtt_settings=settings)
    probe = MqttProbe(broker)
    probe.subscribe(f"vehicle/{vin}/workloads/#")
    Requester(probe, vin).apply(manifest("nginx"))
    states_until(probe, f"vehicle/{vin}/workloads/nginx", "running")
    probe.close()
    broker.kill()  # without persistence: every retained message is gone
    restarted = make_broker(port=broker.port)
    probe = MqttProbe(restarted)
    try:
        Requester(probe, vin).wait_online(timeout=40)
        probe.subscribe(f"vehicle/{vin}/workloads/#")
        assert states_until(probe, f"vehicle/{vin}/workloads/nginx", "running", 20)
    finally:
        probe.close()
