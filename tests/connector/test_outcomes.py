"""Followed outcomes of apply and delete, with workloads that really run and crash."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import Broker, MqttProbe
from testkit.live import manifest, states_until

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.broker import BrokerSettings

IMAGES = {
    "crash:1": ["sh", "-c", "echo starting; echo working; sleep 0.5; echo boom >&2; exit 3"],
    "steady:1": ["sh", "-c", "echo up; exec sleep 120"],
    "done:1": ["sh", "-c", "echo did it"],
}


@pytest.fixture
def car(make_car: Callable[..., Emulator]) -> Emulator:
    return make_car(IMAGES)


def followed(
    probe: MqttProbe,
    vin: str,
    operation: str,
    payload: str,
    request_id: str,
    *,
    level: str = "follow",
    timeout: float = 30.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sends a followed request; returns its immediate reply and its outcome."""
    probe.subscribe(f"vehicle/{vin}/manifest/{operation}/resp/{request_id}")
    probe.publish(f"vehicle/{vin}/manifest/{operation}/req/{request_id}/{level}", payload)
    reply = probe.expect(f"vehicle/{vin}/manifest/{operation}/resp/{request_id}")
    outcome = probe.expect(f"vehicle/{vin}/manifest/{operation}/resp/{request_id}", timeout)
    return json.loads(reply.payload), json.loads(outcome.payload)


def test_a_workload_that_crashes_is_failed_with_its_exit_code_and_last_lines(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(car.control_interface)
    reply, outcome = followed(probe, vin, "apply", manifest("crasher", image="crash:1"), "c1")
    assert set(reply) == {"added_workloads", "deleted_workloads"}
    assert outcome["outcome"] == "failed"
    crasher = outcome["workloads"]["crasher"]
    assert crasher["state"] == "failed"
    assert crasher["substate"] == "ExecFailed"
    assert crasher["info"] == "Exit code: '3'"
    assert crasher["instance_id"] == reply["added_workloads"][0]["workload_id"]
    assert crasher["logs"][-3:] == ["starting", "working", "boom"]


def test_without_a_log_rule_a_failure_says_which_rule_is_missing(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
) -> None:
    car = make_car(IMAGES, access=None)
    start_connector(car.control_interface)
    _, outcome = followed(probe, vin, "apply", manifest("crasher", image="crash:1"), "c2")
    crasher = outcome["workloads"]["crasher"]
    assert crasher["info"] == "Exit code: '3'"
    assert "logs" not in crasher or crasher["logs"] == []
    assert "LogRule" in crasher["logs_error"] and "crasher" in crasher["logs_error"]


def test_a_workload_that_keeps_running_is_running_after_the_settle_time(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(car.control_interface)
    _, outcome = followed(
        probe, vin, "apply", manifest("steady", image="steady:1"), "r1", level="follow;settle=1"
    )
    assert outcome["outcome"] == "running"
    steady = outcome["workloads"]["steady"]
    assert steady["state"] == "running"
    since = datetime.fromisoformat(steady["since"]).timestamp()
    assert time.time() - since >= 1.0


def test_a_workload_that_exits_0_succeeded(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(car.control_interface)
    _, outcome = followed(probe, vin, "apply", manifest("once", image="done:1"), "s1")
    assert outcome["outcome"] == "succeeded"


def test_an_unknown_agent_times_out_showing_where_it_is_stuck(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(car.control_interface)
    started = time.monotonic()
    _, outcome = followed(
        probe,
        vin,
        "apply",
        manifest("lost", image="steady:1", agent="agent_Z"),
        "t1",
        level="follow;deadline=1.5",
    )
    assert time.monotonic() - started >= 1.5
    assert outcome["outcome"] == "timeout"
    lost = outcome["workloads"]["lost"]
    assert (lost["state"], lost["substate"], lost["agent"]) == ("pending", "Initial", "agent_Z")


def test_a_followed_delete_ends_removed(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(car.control_interface)
    text = manifest("steady", image="steady:1")
    followed(probe, vin, "apply", text, "d0", level="follow;settle=0")
    reply, outcome = followed(probe, vin, "delete", text, "d1")
    assert reply["deleted_workloads"][0]["workload_name"] == "steady"
    assert outcome == {
        "outcome": "removed",
        "workloads": {"steady": outcome["workloads"]["steady"]},
    }
    assert outcome["workloads"]["steady"]["outcome"] == "removed"
    assert car.instance_names("steady") == []


def test_mqtt5_user_properties_follow_and_carry_the_trace_context(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    start_connector(car.control_interface)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = f"vehicle/{vin}/manifest/apply/resp/mine"
    properties.CorrelationData = b"corr-1"
    trace = ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    properties.UserProperty = [("follow", "true"), ("settle", "0.5"), trace]
    probe.subscribe(f"vehicle/{vin}/manifest/apply/resp/mine")
    probe.publish(
        f"vehicle/{vin}/manifest/apply/req",
        manifest("steady", image="steady:1"),
        properties=properties,
    )
    reply = probe.expect(f"vehicle/{vin}/manifest/apply/resp/mine")
    outcome = probe.expect(f"vehicle/{vin}/manifest/apply/resp/mine", timeout=20)
    assert "added_workloads" in json.loads(reply.payload)
    assert json.loads(outcome.payload)["outcome"] == "running"
    for message in (reply, outcome):
        assert message.properties is not None
        assert message.properties.CorrelationData == b"corr-1"
        assert trace in message.properties.UserProperty


def test_a_follow_open_when_the_connector_stops_is_answered_interrupted(
    car: Emulator, start_connector: Callable[..., Connector], probe: MqttProbe, vin: str
) -> None:
    connector = start_connector(car.control_interface)
    topic = f"vehicle/{vin}/manifest/apply/resp/i1"
    probe.subscribe(topic)
    probe.subscribe(f"vehicle/{vin}/workloads/steady")
    probe.publish(
        f"vehicle/{vin}/manifest/apply/req/i1/follow;settle=60",
        manifest("steady", image="steady:1"),
    )
    probe.expect(topic)
    states_until(probe, f"vehicle/{vin}/workloads/steady", "running")
    connector.stop()
    outcome = json.loads(probe.expect(topic).payload)
    assert outcome["outcome"] == "interrupted"
    assert outcome["workloads"]["steady"]["state"] == "running"


@pytest.mark.parametrize(
    ("level", "complaint"),
    [
        ("follow;settle=-1", "settle"),
        ("follow;deadline=99999", "deadline"),
        ("follow;color=red", "follow[;settle=S]"),
    ],
)
def test_bad_follow_settings_are_refused_before_anything_runs(
    *,
    car: Emulator,
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
    level: str,
    complaint: str,
) -> None:
    start_connector(car.control_interface)
    topic = f"vehicle/{vin}/manifest/apply/resp/bad"
    probe.subscribe(topic)
    probe.publish(f"vehicle/{vin}/manifest/apply/req/bad/{level}", manifest("x", image="steady:1"))
    error = json.loads(probe.expect(topic).payload)["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert complaint in error["message"]
    assert car.instance_names("x") == []


def test_following_works_on_mqtt_311(
    car: Emulator,
    start_connector: Callable[..., Connector],
    broker: Broker,
    vin: str,
) -> None:
    settings = BrokerSettings(host=broker.host, port=broker.port, protocol="3.1.1")
    start_connector(car.control_interface, mqtt_settings=settings)
    probe = MqttProbe(broker, protocol=mqtt.MQTTv311)
    try:
        reply, outcome = followed(probe, vin, "apply", manifest("c", image="crash:1"), "o1")
        assert "added_workloads" in reply
        assert outcome["outcome"] == "failed"
        assert outcome["workloads"]["c"]["logs"][-1] == "boom"
    finally:
        probe.close()
