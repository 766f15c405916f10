"""Requests and replies matched by topic suffix and by MQTT 5 response topic + correlation data."""

from __future__ import annotations

import json

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import MANIFESTS, MqttProbe, Requester

from fleet_connector import Connector
from fleet_connector.mqtt.topics import Operation


def test_request_id_suffix(connector: Connector, requester: Requester) -> None:
    reply = requester.send(Operation.STATE, '["workloadStates"]', request_id="abc-123")
    assert reply.topic.endswith("/state/resp/abc-123")
    assert "workload_states" in json.loads(reply.payload)


def test_ids_keep_concurrent_requesters_apart(connector: Connector, requester: Requester) -> None:
    for i in range(20):
        requester.probe.publish(
            requester.topics.request(Operation.STATE, f"req-{i}"), '["workloadStates"]'
        )
    seen = {requester.probe.expect(timeout=10).topic.rsplit("/", 1)[1] for _ in range(20)}
    assert seen == {f"req-{i}" for i in range(20)}


def test_plain_request_gets_plain_reply(connector: Connector, requester: Requester) -> None:
    reply = requester.send(Operation.APPLY, (MANIFESTS / "config.yaml").read_bytes())
    assert reply.topic == requester.topics.response(Operation.APPLY)


def publish_v5(
    probe: MqttProbe, topic: str, payload: str, response_topic: str, correlation: bytes
) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    probe.publish(topic, payload, properties=props)


def test_mqtt5_response_topic_and_correlation_data(
    connector: Connector, probe: MqttProbe, vin: str
) -> None:
    reply_to = f"vehicle/{vin}/replies/operator-7"
    probe.subscribe(reply_to)
    publish_v5(probe, f"vehicle/{vin}/state/req", '["workloadStates"]', reply_to, b"\x01\x02xyz")
    reply = probe.expect(reply_to)
    assert reply.properties is not None
    assert reply.properties.CorrelationData == b"\x01\x02xyz"
    assert "workload_states" in json.loads(reply.payload)


def test_foreign_response_topic_is_refused(
    connector: Connector, probe: MqttProbe, vin: str
) -> None:
    probe.subscribe("elsewhere/#")
    probe.subscribe(f"vehicle/{vin}/state/resp")
    publish_v5(probe, f"vehicle/{vin}/state/req", '["workloadStates"]', "elsewhere/x", b"c1")
    reply = probe.expect()
    assert reply.topic == f"vehicle/{vin}/state/resp"
    assert reply.properties is not None
    assert reply.properties.CorrelationData == b"c1"
    error = json.loads(reply.payload)["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert "elsewhere/x" in error["message"]
    probe.expect_nothing(0.3)


def test_a_read_never_overtakes_an_earlier_write(
    connector: Connector, requester: Requester
) -> None:
    manifest = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()
    topics = requester.topics
    for i in range(5):
        requester.probe.publish(topics.request(Operation.STATE, f"before-{i}"), '["desiredState"]')
    requester.probe.publish(topics.request(Operation.APPLY, "write"), manifest)
    for i in range(5):
        requester.probe.publish(topics.request(Operation.STATE, f"after-{i}"), '["desiredState"]')
    replies = {}
    for _ in range(11):
        message = requester.probe.expect(timeout=10)
        replies[message.topic.rsplit("/", 1)[1]] = json.loads(message.payload)
    for i in range(5):
        after = replies[f"after-{i}"]["desired_state"]["workloads"]
        assert "vehicle-data-sender" in after
    assert replies["write"]["added_workloads"]
