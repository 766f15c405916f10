"""One misbehaving car must not break fleetctl for the fleet: every reply is hostile data."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from testkit import MqttProbe

from fleet_connector.mqtt.topics import Operation, Topics

DEEP = b"[" * 100_000 + b"]" * 100_000
ESC = "\x1b[2J\x1b[1;1H"


@pytest.fixture
def hostile(fleet: Any) -> Iterator[Callable[[str, Callable[[str], bytes]], None]]:
    """Fake cars on the fleet's broker that answer every request with what ``answer``
    makes of its topic."""
    probes: list[MqttProbe] = []

    def start(vin: str, answer: Callable[[str], bytes]) -> None:
        probe = MqttProbe(fleet.broker)

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            reply_topic = msg.topic.replace("/req/", "/resp/")
            client.publish(reply_topic, answer(msg.topic), qos=1)

        probe.client.on_message = on_message
        for operation in Operation:
            probe.subscribe(Topics(vin).request(operation, "+"))
        probes.append(probe)

    yield start
    for probe in probes:
        probe.close()


def test_a_deeply_nested_reply_fails_that_car_alone(fleetctl: Any, hostile: Any) -> None:
    hostile("EVIL01", lambda topic: DEEP)
    run = fleetctl("state", "agents", "--vin", "EVIL01", "--vins", "CAR01-CAR05", "-o", "json")
    assert run.code == 1
    cars = {car["vin"]: car for car in json.loads(run.out)["cars"]}
    assert cars.pop("EVIL01")["error"]["code"] == "BAD_REPLY"
    assert {car["status"] for car in cars.values()} == {"ok"}, cars


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("apply", {"added_workloads": "all of them", "deleted_workloads": []}),
        ("apply", {"added_workloads": [1, 2], "deleted_workloads": []}),
        ("apply", {"added_workloads": [{"workload_name": {"x": 1}}], "deleted_workloads": []}),
        ("state", {"workload_states": {"agent_A": ["not", "a", "map"]}}),
        ("state", {"workload_states": {"a": {"w": {"i": {"state": ["RUNNING"]}}}}}),
        ("state", {"desired_state": {"workloads": ["x"]}}),
        ("state", ["a", "list"]),
        ("state", {"error": "not a mapping"}),
        ("state", {"error": {"code": {"nested": 1}, "message": "x"}}),
    ],
)
def test_wrongly_shaped_replies_are_bad_replies_not_tracebacks(
    fleetctl: Any, hostile: Any, sender_manifest: Any, command: str, reply: Any
) -> None:
    hostile("EVIL02", lambda topic: json.dumps(reply).encode())
    target = [str(sender_manifest)] if command == "apply" else ["workloadStates"]
    for fmt in ("table", "json"):
        run = fleetctl(command, *target, "--vin", "EVIL02", "--vin", "CAR02", "-o", fmt)
        assert run.code == 1, run.err
        assert "Traceback" not in run.err
    cars = {car["vin"]: car for car in json.loads(run.out)["cars"]}
    assert cars["EVIL02"]["error"]["code"] == "BAD_REPLY"
    assert cars["CAR02"]["status"] == "ok"


def test_escape_sequences_from_a_car_never_reach_the_terminal(fleetctl: Any, hostile: Any) -> None:
    message = f"{ESC}boom\nCAR99  ok      added: all"
    error = {"error": {"code": "REJECTED", "message": message}}
    hostile("EVIL03", lambda topic: json.dumps(error).encode())
    run = fleetctl("state", "--vin", "EVIL03", "--vin", "CAR03")
    assert run.code == 1
    assert "\x1b" not in run.out
    assert "\\x1b[2J" in run.out
    # The newline is shown, not obeyed: no faked row.
    assert not any(line.startswith("CAR99") for line in run.out.splitlines())


def test_a_nested_or_hostile_retained_status_does_not_crash_status(
    fleet: Any, fleetctl: Any
) -> None:
    probe = MqttProbe(fleet.broker)
    try:
        nested = json.dumps({"status": {"a": [1]}, "since": [[[]]]}).encode()
        for vin, payload in (
            ("EVIL04", DEEP),
            ("EVIL05", nested),
            ("EVIL06", json.dumps({"status": f"online{ESC}", "ankaios": "x\ny"}).encode()),
        ):
            probe.client.publish(Topics(vin).status, payload, qos=1, retain=True).wait_for_publish(
                5
            )
        run = fleetctl("status", "--vin", "EVIL04", "--vin", "EVIL05", "--vin", "EVIL06")
        assert run.code == 1, run.err  # not ready, none of them
        assert "Traceback" not in run.err
        assert "\x1b" not in run.out
        rows = {line.split()[0]: line for line in run.out.splitlines()[1:4]}
        assert "invalid" in rows["EVIL04"]
        assert "unknown" in rows["EVIL05"]
        assert "\\x1b" in rows["EVIL06"]
    finally:
        for vin in ("EVIL04", "EVIL05", "EVIL06"):
            probe.client.publish(Topics(vin).status, b"", qos=1, retain=True).wait_for_publish(5)
        probe.close()


def test_watch_shows_each_message_on_one_line_with_escapes_shown(fleet: Any, fleetctl: Any) -> None:
    probe = MqttProbe(fleet.broker)
    try:
        topic = Topics("EVIL07").status
        fake = f"{ESC}online\nvehicle/CAR01/status faked".encode()
        probe.client.publish(topic, fake, qos=1, retain=True).wait_for_publish(5)
        run = fleetctl("watch", "--vin", "EVIL07", "--count", "1")
        assert run.code == 0
        assert run.out.count("\n") == 1
        assert "\x1b" not in run.out
    finally:
        probe.client.publish(Topics("EVIL07").status, b"", qos=1, retain=True).wait_for_publish(5)
        probe.close()


def test_a_nested_or_hostile_retained_workload_state_does_not_crash_get_workloads(
    fleet: Any, fleetctl: Any
) -> None:
    probe = MqttProbe(fleet.broker)
    topics = {
        "deep": "vehicle/EVIL08/workloads/deep",
        "nested": "vehicle/EVIL08/workloads/nested",
    }
    try:
        nested = json.dumps({"state": {"a": [1]}, "info": "x" * 100_000}).encode()
        for topic, payload in ((topics["deep"], DEEP), (topics["nested"], nested)):
            probe.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
        run = fleetctl("get", "workloads", "--vin", "EVIL08")
        assert "Traceback" not in run.err
        assert run.code == 0, run.err
        rows = {line.split()[1]: line for line in run.out.splitlines()[1:]}
        assert "invalid" in rows["deep"]
        assert "unknown" in rows["nested"]
        assert len(rows["nested"]) < 1000
    finally:
        for topic in topics.values():
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        probe.close()
