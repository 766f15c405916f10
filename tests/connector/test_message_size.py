"""No message the broker refuses: replies, log batches and outcomes stay under MAX_MESSAGE_SIZE,
and a message the broker still drops the connection for is given up, not sent forever."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from testkit import Broker, MqttProbe, Requester
from testkit.live import ALL_LOGS, manifest, states_until

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.size import Culprits
from fleet_connector.mqtt.topics import Operation


def configs_manifest(name: str, size: int) -> str:
    """A manifest with one config of ``size`` characters."""
    return f"apiVersion: v0.1\nconfigs:\n  {name}: {'x' * size}\n"


def statuses(watcher: MqttProbe) -> list[str]:
    """The presence statuses ``watcher`` received so far (read without waiting)."""
    seen = []
    while not watcher.messages.empty():
        seen.append(json.loads(watcher.messages.get().payload)["status"])
    return seen


def test_a_state_larger_than_max_message_size_is_an_error_reply_and_the_car_stays_online(
    make_broker: Callable[..., Broker],
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    vin: str,
) -> None:
    # The broker's limit is above the connector's default MAX_MESSAGE_SIZE (1,000,000) and
    # below the state: the connector must not even try.
    broker = make_broker("message_size_limit 1100000\n")
    start_connector(emulator.control_interface, mqtt_settings=_settings(broker))
    probe, watcher = MqttProbe(broker), MqttProbe(broker)
    try:
        requester = Requester(probe, vin)
        for name in ("a", "b"):
            assert "error" not in requester.apply(configs_manifest(name, 600_000))
        watcher.subscribe(f"vehicle/{vin}/status")
        assert json.loads(watcher.expect().payload)["status"] == "online"  # retained
        reply = requester.state([])
        assert reply["error"]["code"] == "REPLY_TOO_LARGE", str(reply)[:300]
        message = reply["error"]["message"]
        assert "MAX_MESSAGE_SIZE of 1000000 bytes" in message
        assert "field masks" in message
        # What it says to do works, and the connection was never lost.
        small = requester.state(["desiredState.workloads"])
        assert "error" not in small
        assert statuses(watcher) == []
    finally:
        probe.close()
        watcher.close()


def test_a_reply_the_broker_drops_the_connection_for_is_given_up_and_answered_with_an_error(
    make_broker: Callable[..., Broker],
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    vin: str,
) -> None:
    # MAX_MESSAGE_SIZE (default) above the broker's limit: over MQTT 5 mosquitto closes the
    # connection at a larger message, and paho would publish it again at every reconnect.
    broker = make_broker("message_size_limit 300000\n")
    connector = start_connector(emulator.control_interface, mqtt_settings=_settings(broker))
    probe, watcher = MqttProbe(broker), MqttProbe(broker)
    try:
        requester = Requester(probe, vin)
        for name in ("a", "b"):
            assert "error" not in requester.apply(configs_manifest(name, 200_000))
        watcher.subscribe(f"vehicle/{vin}/status")
        assert json.loads(watcher.expect().payload)["status"] == "online"  # retained
        reply = json.loads(requester.send(Operation.STATE, "[]", "big").payload)
        assert reply["error"]["code"] == "REPLY_TOO_LARGE", str(reply)[:300]
        assert "the broker dropped the connection" in reply["error"]["message"]
        assert connector.mqtt.max_message_size < 410_000
        # Lost twice (the Will each time), then given up.
        seen = [json.loads(watcher.expect(timeout=10).payload)["status"] for _ in range(4)]
        assert seen == ["offline", "online", "offline", "online"]
        # Once learned, a reply that large is refused before it is sent: no connection lost.
        again = json.loads(requester.send(Operation.STATE, "[]", "again").payload)
        assert again["error"]["code"] == "REPLY_TOO_LARGE"
        assert "error" not in requester.state(["desiredState.workloads"])
        watcher.expect_nothing(0.5)  # not lost again
    finally:
        probe.close()
        watcher.close()


LONG_LINE = (
    "import sys, time\n"
    "sys.stdout.write('y' * 200000 + '\\n'); sys.stdout.write('short\\n'); sys.stdout.flush()\n"
    "time.sleep(120)\n"
)
CRASH_LONG = "import sys\nfor i in range(30):\n    print(str(i) + ' ' + 'z' * 50000)\nsys.exit(3)\n"
IMAGES = {
    "long:1": [sys.executable, "-u", "-c", LONG_LINE],
    "crashlong:1": [sys.executable, "-u", "-c", CRASH_LONG],
}


def test_a_200k_character_log_line_is_cut_and_the_cut_counted(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
) -> None:
    car = make_car(IMAGES, access=ALL_LOGS)
    start_connector(car.control_interface)
    probe.subscribe(f"vehicle/{vin}/workloads/#")
    probe.publish(f"vehicle/{vin}/manifest/apply/req", manifest("long", image="long:1"))
    states_until(probe, f"vehicle/{vin}/workloads/long", "running")
    instance = car.instance_names("long")[0]
    car.wait_for(lambda e: len(e.logs(instance)) >= 2, timeout=10)
    topic = f"vehicle/{vin}/logs/resp/l1"
    probe.subscribe(topic)
    probe.publish(f"vehicle/{vin}/logs/req/l1", json.dumps({"workloads": ["long"], "tail": 10}))
    messages = []
    while not messages or "end" not in messages[-1]:
        message = probe.expect(topic, 15)
        assert len(message.payload) < 1_000_000
        messages.append(json.loads(message.payload))
    lines = [line["line"] for m in messages for line in m.get("lines", [])]
    assert lines[-1] == "short"
    assert 0 < len(lines[0]) < 200_000 and set(lines[0]) == {"y"}
    assert sum(m.get("cut", 0) for m in messages) == 1
    assert messages[-1]["end"] == "done"


def test_a_followed_outcomes_last_lines_are_bounded_in_lines_and_bytes(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
) -> None:
    car = make_car(IMAGES, access=ALL_LOGS)
    start_connector(car.control_interface)
    topic = f"vehicle/{vin}/manifest/apply/resp/o1"
    probe.subscribe(topic)
    probe.publish(
        f"vehicle/{vin}/manifest/apply/req/o1/follow", manifest("crashlong", image="crashlong:1")
    )
    probe.expect(topic)
    message = probe.expect(topic, 30)
    assert len(message.payload) < 100_000
    outcome = json.loads(message.payload)
    assert outcome["outcome"] == "failed"
    report = outcome["workloads"]["crashlong"]
    logs = report["logs"]
    assert 0 < len(logs) <= 20
    assert all(len(line) <= 1000 for line in logs)
    assert logs[-1].startswith("29 z")  # the newest line is kept
    assert report["logs_cut"] == len(logs)


def _settings(broker: Broker) -> BrokerSettings:
    return BrokerSettings(host=broker.host, port=broker.port)


def test_only_losses_right_after_a_connect_count_again_for_the_same_message() -> None:
    """A flaky link loses connections at any time; a broker that refuses a message drops the
    connection right after paho sends it again at the connect."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    info = client.publish("vehicle/1/state/resp", b"x" * 100, qos=1)
    message = client._out_messages[info.mid]
    message.state = mqtt.mqtt_ms_wait_for_puback  # sent, not acknowledged
    culprits = Culprits()
    for _ in range(5):
        assert culprits.connection_lost(client, quick=False) == []
    assert culprits.connection_lost(client, quick=True) == [message]
    assert info.mid not in client._out_messages
