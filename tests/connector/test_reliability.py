"""Nothing lost: offline delivery, expiry, redelivery, broker and agent faults, bursts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import MANIFESTS, Broker, MqttProbe, Requester
from testkit.observe import rss_kib, update_requests
from testkit.proxy import Mqtt311OnlyProxy, SubscribeRefusingProxy

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Operation, Topics

SENDER_MANIFEST = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()


def hellos(emulator: Emulator) -> int:
    return sum(1 for message in emulator.requests if message.HasField("hello"))


def test_request_sent_while_offline_is_answered_when_back(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester, vin: str
) -> None:
    client_id = f"fleet-connector-{vin}"
    first = start_connector(emulator.control_interface, client_id=client_id)
    first.stop()
    requester.probe.publish(requester.topics.request(Operation.APPLY, "offline-1"), SENDER_MANIFEST)
    start_connector(emulator.control_interface, client_id=client_id)
    reply = requester.probe.expect(requester.topics.response(Operation.APPLY, "offline-1"))
    assert json.loads(reply.payload)["added_workloads"][0]["workload_name"] == "vehicle-data-sender"


def test_request_delivered_on_boot_waits_for_the_ankaios_handshake(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester, vin: str
) -> None:
    # A car boots: the broker hands over what it kept before Ankaios has accepted the
    # connector. Those requests wait for the handshake instead of failing UNAVAILABLE.
    control_interface = tmp_path / "ci"
    client_id = f"fleet-connector-{vin}"
    start_connector(control_interface, wait_ankaios=False, client_id=client_id).stop()
    requester.probe.publish(requester.topics.request(Operation.APPLY, "on-boot"), SENDER_MANIFEST)
    start_connector(control_interface, wait_ankaios=False, client_id=client_id, request_timeout=10)
    requester.probe.expect_nothing(0.5)  # the request is in; no UNAVAILABLE for it
    with Emulator(control_interface=control_interface):
        reply = requester.probe.expect(requester.topics.response(Operation.APPLY, "on-boot"))
        assert json.loads(reply.payload)["added_workloads"][0]["workload_name"] == (
            "vehicle-data-sender"
        )


def test_request_that_expires_while_waiting_for_ankaios_on_boot_is_not_executed(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester, vin: str
) -> None:
    control_interface = tmp_path / "ci"
    client_id = f"fleet-connector-{vin}"
    start_connector(control_interface, wait_ankaios=False, client_id=client_id).stop()
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 2
    requester.probe.publish(
        requester.topics.request(Operation.APPLY, "boot-expiry"), SENDER_MANIFEST, properties=props
    )
    # No Ankaios comes: the request waits out the boot wait (4 s), by then it has expired.
    start_connector(control_interface, wait_ankaios=False, client_id=client_id, request_timeout=4)
    reply = requester.probe.expect(requester.topics.response(Operation.APPLY, "boot-expiry"))
    assert json.loads(reply.payload)["error"]["code"] == "EXPIRED"


def test_expired_request_is_not_executed(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, request_timeout=5.0)
    emulator.faults.delay = 1.5
    requester.probe.publish(requester.topics.request(Operation.STATE, "slow"), '["workloadStates"]')
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 1
    requester.probe.publish(
        requester.topics.request(Operation.APPLY, "short-lived"), SENDER_MANIFEST, properties=props
    )
    reply = json.loads(
        requester.probe.expect(requester.topics.response(Operation.APPLY, "short-lived")).payload
    )
    assert reply["error"]["code"] == "EXPIRED"
    assert update_requests(emulator) == 0
    # EXPIRED is not cached: a retry under the same id runs.
    emulator.faults.delay = 0
    retried = requester.call(Operation.APPLY, SENDER_MANIFEST, "short-lived")
    assert retried["added_workloads"]


def test_mqtt_session_is_kept_while_ankaios_is_slow_to_answer(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    broker: Broker,
) -> None:
    # The thread that waits for Ankaios is the one that serves MQTT: it must go on pinging.
    # With a 2 s keepalive the broker gives up on a silent client after 3 s.
    settings = BrokerSettings(host=broker.host, port=broker.port, keepalive=2)
    start_connector(emulator.control_interface, mqtt_settings=settings, request_timeout=10.0)
    requester.wait_online()
    emulator.faults.delay = 6.0
    requester.probe.publish(requester.topics.request(Operation.STATE, "slow"), '["workloadStates"]')
    presence: list[str] = []
    while True:
        message = requester.probe.expect(timeout=10)
        if message.topic == requester.topics.status:
            presence.append(json.loads(message.payload)["status"])
        elif message.topic == requester.topics.response(Operation.STATE, "slow"):
            break
    assert "workload_states" in json.loads(message.payload)
    assert presence == []  # no Last Will, no reconnect


def test_redelivered_request_is_answered_from_cache(
    connector: Connector, emulator: Emulator, requester: Requester
) -> None:
    first = requester.call(Operation.APPLY, SENDER_MANIFEST, "same-id")
    second = requester.call(Operation.APPLY, SENDER_MANIFEST, "same-id")
    assert first == second
    assert first["added_workloads"]
    assert update_requests(emulator) == 1
    # A new id is a new request.
    assert requester.call(Operation.APPLY, SENDER_MANIFEST, "other-id")["added_workloads"] == []
    assert update_requests(emulator) == 2


def test_broker_killed_and_restarted(
    emulator: Emulator, make_broker: Callable[..., Broker], vin: str, tmp_path: Path
) -> None:
    broker = make_broker()
    from fleet_connector import Config
    from fleet_connector.mqtt.broker import BrokerSettings

    connector = Connector(
        Config(
            vin=vin,
            broker=BrokerSettings(host=broker.host, port=broker.port),
            control_interface=emulator.control_interface,
        )
    )
    connector.start()
    try:
        assert connector.mqtt.wait_subscribed(10)
        broker.kill()
        restarted = make_broker(port=broker.port)
        probe = MqttProbe(restarted)
        try:
            requester = Requester(probe, vin)
            requester.wait_online(timeout=40)
            reply = requester.call(Operation.STATE, '["workloadStates"]', "after-restart")
            assert "workload_states" in reply
            # One subscription, one worker: exactly one reply.
            probe.expect_nothing(0.5)
        finally:
            probe.close()
    finally:
        connector.stop()


def test_agent_restart(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    connector = start_connector(emulator.control_interface)
    lost = threading.Event()
    back = threading.Event()

    def watch(connected: bool) -> None:
        (back if connected else lost).set()

    connector.control_interface._on_connection_change = watch  # observe only
    hellos_before = hellos(emulator)
    emulator.restart_agent(downtime=1.0)
    assert lost.wait(5)
    reply = requester.call(Operation.STATE, '["workloadStates"]', "in-gap")
    assert reply["error"]["code"] == "UNAVAILABLE"
    assert back.wait(15)
    assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "after")
    # Reconnecting with backoff, not the SDK's busy loop of Hellos.
    assert hellos(emulator) - hellos_before < 20


def test_connection_closed_by_ankaios(
    emulator: Emulator, connector: Connector, requester: Requester
) -> None:
    # Ankaios serves a closed control interface again only once the workload restarts;
    # until then every request is answered UNAVAILABLE with the reason, and presence says so.
    requester.wait_online()
    emulator.close_connection("closed for the test")
    status = requester.wait_status("online")
    assert status["ankaios"] == "disconnected"
    reply = requester.call(Operation.STATE, '["workloadStates"]', "x1")
    assert reply["error"]["code"] == "UNAVAILABLE"
    assert "closed for the test" in reply["error"]["message"]


def test_garbage_frames_are_skipped(
    emulator: Emulator, connector: Connector, requester: Requester
) -> None:
    emulator.send_garbage(b"\x05\xff\xff\xff\xff\xff")
    assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "g1")


def test_burst_of_1000_requests_all_answered_memory_bounded(
    broker: Broker, probe: MqttProbe, vin: str, tmp_path: Path
) -> None:
    with Emulator(control_interface=tmp_path / "ci") as emu:
        env = {
            **os.environ,
            **broker.env(),
            "VIN": vin,
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(emu.control_interface),
            "LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen([sys.executable, "-m", "fleet_connector"], env=env)
        try:
            requester = Requester(probe, vin)
            requester.wait_online()
            before = rss_kib(proc.pid)
            run = uuid.uuid4().hex[:6]
            started = time.monotonic()
            for i in range(1000):
                probe.client.publish(
                    requester.topics.request(Operation.STATE, f"{run}-{i}"),
                    '["workloadStates"]',
                    qos=1,
                )
            answered = set()
            while len(answered) < 1000:
                message = probe.expect(timeout=30)
                if f"/resp/{run}-" in message.topic:
                    reply = json.loads(message.payload)
                    assert "workload_states" in reply, reply
                    answered.add(message.topic)
            elapsed = time.monotonic() - started
            after = rss_kib(proc.pid)
            print(f"1000 requests answered in {elapsed:.2f} s; RSS {before} -> {after} KiB")
            assert after - before < 30 * 1024
            assert proc.poll() is None
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0


def test_connector_restarted_on_the_same_control_interface(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester, vin: str
) -> None:
    # Ankaios 1.0.1 sends no second ControlInterfaceAccepted to a workload that reopens
    # the FIFOs; the connector must be served anyway.
    with Emulator(control_interface=tmp_path / "ci", reaccept_on_reconnect=False) as emu:
        client_id = f"fleet-connector-{vin}"
        first = start_connector(emu.control_interface, client_id=client_id)
        assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "one")
        first.stop()
        start_connector(emu.control_interface, client_id=client_id)
        assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "two")


@pytest.mark.parametrize("protocol", ["3.1.1", "fallback"])
def test_mqtt_311_with_topic_suffix_correlation_and_offline_delivery(
    emulator: Emulator, proxy_311: Mqtt311OnlyProxy, requester: Requester, vin: str, protocol: str
) -> None:
    from fleet_connector.config import load

    environ = {
        "VIN": vin,
        "MQTT_BROKER_ADDR": "127.0.0.1",
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(emulator.control_interface),
    }
    if protocol == "3.1.1":
        environ.update(MQTT_BROKER_PORT=str(proxy_311.upstream.port), MQTT_PROTOCOL="3.1.1")
    else:  # nothing configured, and the broker refuses MQTT 5
        environ.update(MQTT_BROKER_PORT=str(proxy_311.port))

    def start() -> Connector:
        connector = Connector(load([], environ))
        connector.start()
        assert connector.mqtt.wait_subscribed(10)
        return connector

    first = start()
    try:
        assert proxy_311.refused == (1 if protocol == "fallback" else 0)
        # The refused MQTT 5 client's network thread has ended; only the 3.1.1 one runs.
        current = first.mqtt._client._thread  # observe only
        for thread in threading.enumerate():
            if thread.name == f"paho-mqtt-client-fleet-connector-{vin}" and thread is not current:
                thread.join(5)
                assert not thread.is_alive()
        assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "v3-1")
    finally:
        first.stop()
    # Clean session off: the broker keeps the subscription while the car is away.
    requester.probe.publish(requester.topics.request(Operation.APPLY, "v3-2"), SENDER_MANIFEST)
    second = start()
    try:
        reply = requester.probe.expect(requester.topics.response(Operation.APPLY, "v3-2"))
        assert json.loads(reply.payload)["added_workloads"]
    finally:
        second.stop()


def test_no_fallback_when_mqtt5_is_configured(
    emulator: Emulator, proxy_311: Mqtt311OnlyProxy, vin: str
) -> None:
    from fleet_connector.config import load

    environ = {
        "VIN": vin,
        "MQTT_BROKER_ADDR": "127.0.0.1",
        "MQTT_BROKER_PORT": str(proxy_311.port),
        "MQTT_PROTOCOL": "5",
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(emulator.control_interface),
    }
    connector = Connector(load([], environ))
    connector.start()
    try:
        assert proxy_311.wait_refused(2)  # asked again in MQTT 5, as configured
        assert not connector.mqtt.connected
    finally:
        connector.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_refused_subscriptions_are_asked_for_again(
    emulator: Emulator,
    broker: Broker,
    start_connector: Callable[..., Connector],
    requester: Requester,
    protocol: str,
) -> None:
    """A busy NATS cluster refuses a subscription it could not set up in time (SUBACK 0x80);
    the car must not stay deaf to requests until its next reconnect."""
    proxy = SubscribeRefusingProxy(broker, refuse=1)
    try:
        start_connector(
            emulator.control_interface,
            mqtt_settings=BrokerSettings(host=broker.host, port=proxy.port, protocol=protocol),
        )
        assert proxy.refused == 1
        assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "again")
    finally:
        proxy.close()


# -- requests an attacker or a careless operator sends (issue #16) ----------------------


def reply_on(requester: Requester, operation: Operation, request_id: str | None = None) -> Any:
    return json.loads(
        requester.probe.expect(requester.topics.response(operation, request_id)).payload
    )


def workloads(emulator: Emulator) -> set[str]:
    return set(emulator.complete_state(["desiredState"])["desiredState"].get("workloads", {}))


def test_retained_delete_is_refused_cleared_and_not_carried_out_after_a_restart(
    broker: Broker,
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    vin: str,
) -> None:
    client_id = f"fleet-connector-{vin}"
    first = start_connector(emulator.control_interface, client_id=client_id)
    delete_topic = requester.topics.request(Operation.DELETE)
    # `mosquitto_pub -r`: the broker keeps it and hands it to every new subscription.
    requester.probe.client.publish(
        delete_topic, SENDER_MANIFEST, qos=1, retain=True
    ).wait_for_publish(5)
    refused = reply_on(requester, Operation.DELETE)
    assert refused["error"]["code"] == "INVALID_REQUEST"
    assert (
        refused["error"]["message"] == "retained requests are not carried out; publish without -r"
    )
    # Days later the workload is applied, then the connector restarts.
    assert requester.apply(SENDER_MANIFEST)["added_workloads"]
    first.stop()
    start_connector(emulator.control_interface, client_id=client_id)
    assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', "after")
    assert workloads(emulator) == {"vehicle-data-sender"}
    assert update_requests(emulator) == 1
    # The connector cleared it: a new subscriber gets no retained request, only the marker.
    watcher = MqttProbe(broker)
    try:
        watcher.subscribe(delete_topic)
        watcher.subscribe(f"{requester.topics.base}/marker")
        watcher.publish(f"{requester.topics.base}/marker", b"m")
        assert watcher.expect().topic == f"{requester.topics.base}/marker"
    finally:
        watcher.close()


def test_retained_request_kept_while_offline_is_refused_at_start(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester, vin: str
) -> None:
    client_id = f"fleet-connector-{vin}"
    start_connector(emulator.control_interface, client_id=client_id).stop()
    topic = requester.topics.request(Operation.APPLY, "kept")
    requester.probe.client.publish(topic, SENDER_MANIFEST, qos=1, retain=True).wait_for_publish(5)
    start_connector(emulator.control_interface, client_id=client_id)
    assert reply_on(requester, Operation.APPLY, "kept")["error"]["code"] == "INVALID_REQUEST"
    assert update_requests(emulator) == 0


def test_a_topic_of_65535_bytes_is_refused_and_the_car_keeps_answering(
    connector: Connector, requester: Requester
) -> None:
    base = requester.topics.request(Operation.STATE) + "/"
    requester.probe.publish(base + "x" * (65535 - len(base)), '["workloadStates"]')
    refused = reply_on(requester, Operation.STATE)
    assert refused["error"]["code"] == "INVALID_REQUEST"
    assert "request id" in refused["error"]["message"]
    for i in range(3):
        assert "workload_states" in requester.call(Operation.STATE, '["workloadStates"]', f"n{i}")
    status = requester.wait_online()
    assert status["worker"] == "running"
    assert status["worker_restarts"] == 0


def test_a_repeated_read_with_the_same_id_sees_the_state_of_now(
    connector: Connector, requester: Requester
) -> None:
    before = requester.call(Operation.STATE, '["desiredState.workloads"]', "same-read")
    assert "vehicle-data-sender" not in json.dumps(before)
    assert requester.apply(SENDER_MANIFEST)["added_workloads"]
    after = requester.call(Operation.STATE, '["desiredState.workloads"]', "same-read")
    assert "vehicle-data-sender" in json.dumps(after)


def test_two_requesters_with_the_same_correlation_data_both_get_their_reply(
    emulator: Emulator, connector: Connector, requester: Requester
) -> None:
    emulator.faults.delay = 0.5
    topic = requester.topics.request(Operation.APPLY)
    for who in ("alice", "bob"):
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = requester.topics.response(Operation.APPLY, who)
        props.CorrelationData = b"1"
        requester.probe.publish(topic, SENDER_MANIFEST, properties=props)
    assert reply_on(requester, Operation.APPLY, "alice")["added_workloads"]
    assert "added_workloads" in reply_on(requester, Operation.APPLY, "bob")


def test_oversized_requests_are_refused_on_arrival_not_queued(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, request_timeout=10.0)
    emulator.faults.delay = 3.0  # Ankaios hangs on the first request
    requester.probe.publish(requester.topics.request(Operation.STATE, "slow"), '["workloadStates"]')
    big = b"#" * (2 * 1024 * 1024)
    for i in range(10):
        requester.probe.publish(requester.topics.request(Operation.APPLY, f"big-{i}"), big)
    # Every oversized request is answered while the first still waits for Ankaios.
    for i in range(10):
        message = requester.probe.expect(timeout=2.5)
        assert message.topic == requester.topics.response(Operation.APPLY, f"big-{i}")
        assert json.loads(message.payload)["error"]["code"] == "POLICY_DENIED"
    assert "workload_states" in reply_on(requester, Operation.STATE, "slow")


def test_one_bad_read_in_a_batch_fails_alone(
    emulator: Emulator, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    start_connector(emulator.control_interface, request_timeout=10.0)
    emulator.faults.delay = 1.0  # the next reads pile up and go to Ankaios as one batch
    requester.probe.publish(
        requester.topics.request(Operation.STATE, "first"), '["workloadStates"]'
    )
    for i in range(15):
        requester.probe.publish(
            requester.topics.request(Operation.STATE, f"good-{i}"), '["agents"]'
        )
        if i == 7:
            requester.probe.publish(requester.topics.request(Operation.STATE, "bad"), '["\\ud800"]')
    emulator.faults.delay = 0
    assert reply_on(requester, Operation.STATE, "first")
    replies: dict[str, Any] = {}
    while len(replies) < 16:
        message = requester.probe.expect()
        replies[message.topic.rsplit("/", 1)[1]] = json.loads(message.payload)
    assert replies.pop("bad")["error"]["code"] == "INVALID_REQUEST"
    assert all("agents" in reply for reply in replies.values()), replies


def test_reply_cache_forgets_after_its_age_limit_and_is_bounded_in_bytes() -> None:
    from fleet_connector.mqtt.replies import MAX_AGE, ReplyCache
    from fleet_connector.requests.handler import Request

    now = [0.0]
    cache = ReplyCache(max_bytes=4 * 1024 * 1024, clock=lambda: now[0])
    topics = Topics("1")

    def delete(request_id: str) -> Request:
        return Request(
            Operation.DELETE,
            SENDER_MANIFEST,
            topics.request(Operation.DELETE, request_id),
            topics.response(Operation.DELETE, request_id),
            request_id,
            has_topic_id=True,
        )

    assert cache.admit(delete("reused")) is True
    cache.done(delete("reused"), '{"deleted_workloads": ["x"]}', None)
    assert cache.admit(delete("reused")) == '{"deleted_workloads": ["x"]}'  # a redelivery
    now[0] += MAX_AGE + 1
    assert cache.admit(delete("reused")) is True  # the same id days later is a new request
    big = "x" * 400_000
    for i in range(1000):
        assert cache.admit(delete(f"big-{i}")) is True
        cache.done(delete(f"big-{i}"), big, None)
    assert cache.size_bytes <= 4 * 1024 * 1024
