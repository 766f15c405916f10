"""fleet-sim's own behaviour: scale, failure ratios, churn, latency, labels, bounds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import Broker, MqttProbe
from testkit.shapes import same_shape
from testkit.sim import REPO, Sim

from fleet_sim.labels import Labeller, parse

MANIFEST = """apiVersion: v0.1
workloads:
  app:
    runtime: podman
    agent: agent_A
    runtimeConfig: |
      image: app:{version}
"""

Start = Callable[..., Sim]


def retained_statuses(
    broker: Broker, prefix: str, count: int, timeout: float, *, live_too: bool = False
) -> dict[str, Any]:
    """Every car's retained presence once the broker holds ``count`` of them (``live_too``:
    or once they were published while subscribed)."""
    seen: dict[str, Any] = {}
    probe = MqttProbe(broker)
    try:
        probe.subscribe("vehicle/+/status")
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            message = probe.expect(timeout=max(0.01, deadline - time.monotonic()))
            vin = message.topic.split("/")[1]
            if (message.retain or live_too) and vin.startswith(prefix):
                seen[vin] = json.loads(message.payload)
    finally:
        probe.close()
    return seen


def test_ten_thousand_simulated_cars_come_online_within_seconds(
    start_sim: Start, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker()
    started = time.monotonic()
    sim = start_sim("--count", "10000", "--labels", "region=eu,us", on=broker, ready=20)
    statuses = retained_statuses(broker, sim.prefix, 10_000, 20 - (time.monotonic() - started))
    assert time.monotonic() - started < 20
    assert {s["status"] for s in statuses.values()} == {"online"}
    assert {s["labels"]["region"] for s in statuses.values()} == {"eu", "us"}
    sim.stop()
    # A clean stop says offline for every car, retained.
    after = retained_statuses(broker, sim.prefix, 10_000, 20)
    assert {s["status"] for s in after.values()} == {"offline"}


def send(probe: MqttProbe, vin: str, suffix: str, payload: str) -> str:
    topic = f"vehicle/{vin}/{suffix}"
    probe.publish(topic, payload)
    return topic.replace("/req", "/resp", 1).split("/follow", 1)[0]


def answers(probe: MqttProbe, topics: set[str], within: float) -> dict[str, Any]:
    """The replies that come on ``topics`` within ``within`` seconds, by topic."""
    got: dict[str, Any] = {}
    deadline = time.monotonic() + within
    while len(got) < len(topics) and time.monotonic() < deadline:
        try:
            message = probe.expect(timeout=max(0.01, deadline - time.monotonic()))
        except AssertionError:
            break
        if message.topic in topics:
            got[message.topic] = json.loads(message.payload)
    return got


def no_reply_run(start_sim: Start, probe: MqttProbe, prefix: str) -> set[str]:
    """Ids answered of 40 state requests to 4 cars with a no-reply ratio of 0.5."""
    sim = start_sim("--count", "4", "--no-reply-ratio", "0.5", "--seed", "7", prefix=prefix)
    for car in range(4):
        probe.subscribe(f"vehicle/{sim.vin(car)}/state/resp/#")
    topics = {send(probe, sim.vin(i % 4), f"state/req/r{i}", "[]") for i in range(40)}
    got = answers(probe, topics, 1.5)
    sim.stop()
    return {topic.rsplit("/", 1)[1] for topic in got}


def test_the_no_reply_ratio_leaves_that_share_unanswered_the_same_way_each_run(
    start_sim: Start, broker: Broker
) -> None:
    first = second = None
    prefix = f"N{uuid.uuid4().hex[:6].upper()}"  # the same VINs in both runs
    for _ in range(2):
        probe = MqttProbe(broker)
        try:
            answered = no_reply_run(start_sim, probe, prefix)
        finally:
            probe.close()
        first, second = second, answered
    assert first is not None and second is not None
    assert 10 <= len(first) <= 30  # about half of 40
    assert first == second  # the same seed: the same requests go unanswered


def test_the_reject_ratio_refuses_writes_with_rejected_and_the_journal_shows_it(
    start_sim: Start, probe: MqttProbe
) -> None:
    sim = start_sim("--count", "1", "--reject-ratio", "1")
    vin = sim.vin(0)
    probe.subscribe(f"vehicle/{vin}/+/resp/#")
    probe.subscribe(f"vehicle/{vin}/manifest/+/resp/#")
    reply = json.loads(
        probe.expect(send(probe, vin, "manifest/apply/req/a1", MANIFEST.format(version=1))).payload
    )
    assert reply["error"]["code"] == "REJECTED"
    # A read is never rejected.
    state = json.loads(probe.expect(send(probe, vin, "state/req/s1", "[]")).payload)
    assert "app" not in state["desired_state"]["workloads"]
    history = json.loads(probe.expect(send(probe, vin, "history/req/h1", "")).payload)
    assert [e["outcome"] for e in history["entries"]] == ["REJECTED"]
    assert sim.stop()["error_REJECTED"] == 1


def test_a_crashing_apply_is_answered_then_fails_with_its_last_log_lines(
    start_sim: Start, probe: MqttProbe
) -> None:
    sim = start_sim("--count", "1", "--crash-ratio", "1", "--crash-after", "0.2")
    vin = sim.vin(0)
    probe.subscribe(f"vehicle/{vin}/manifest/apply/resp/#")
    probe.subscribe(f"vehicle/{vin}/workloads/app")
    topic = send(probe, vin, "manifest/apply/req/c1/follow;settle=5", MANIFEST.format(version=1))
    replies: list[dict[str, Any]] = []
    states: list[str] = []
    while len(replies) < 2:  # the reply, then the outcome
        message = probe.expect(timeout=10)
        if message.topic == topic:
            replies.append(json.loads(message.payload))
        elif message.topic == f"vehicle/{vin}/workloads/app":
            states.append(json.loads(message.payload)["state"])
    reply, outcome = replies
    assert [w["workload_name"] for w in reply["added_workloads"]] == ["app"]
    app = outcome["workloads"]["app"]
    assert outcome["outcome"] == "failed"
    assert (app["state"], app["substate"], app["info"]) == (
        "failed",
        "ExecFailed",
        "Exit code: '1'",
    )
    assert app["logs"][-1].endswith("simulated crash (--crash-ratio)")
    assert states == ["pending", "running", "failed"]


def test_replies_wait_the_latency_asked_for(start_sim: Start, probe: MqttProbe) -> None:
    sim = start_sim("--count", "1", "--latency", "0.4")
    vin = sim.vin(0)
    probe.subscribe(f"vehicle/{vin}/state/resp/#")
    for i in range(3):
        sent = time.monotonic()
        probe.expect(send(probe, vin, f"state/req/l{i}", "[]"))
        assert 0.4 <= time.monotonic() - sent < 2.0


def test_a_full_car_queue_answers_busy(start_sim: Start, probe: MqttProbe) -> None:
    sim = start_sim("--count", "1", "--latency", "0.3", "--car-queue", "2")
    vin = sim.vin(0)
    probe.subscribe(f"vehicle/{vin}/state/resp/#")
    topics = {send(probe, vin, f"state/req/b{i}", "[]") for i in range(4)}
    got = answers(probe, topics, 4)
    busy = [t for t, reply in got.items() if "error" in reply]
    assert len(got) == 4
    assert len(busy) == 1 and got[busy[0]]["error"]["code"] == "BUSY"


def test_a_full_connection_queue_answers_busy(start_sim: Start, probe: MqttProbe) -> None:
    """Requests waiting for all cars of one connection are bounded too."""
    sim = start_sim("--count", "2", "--latency", "0.5", "--connection-queue", "1")
    for car in range(2):
        probe.subscribe(f"vehicle/{sim.vin(car)}/state/resp/#")
    # Each car's first request is being carried out, not waiting; car 0's second waits;
    # car 1's second finds the connection's one place taken.
    order = [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    topics = [send(probe, sim.vin(car), f"state/req/{name}", "[]") for car, name in order]
    got = answers(probe, set(topics), 5)
    codes = [got[t].get("error", {}).get("code") for t in topics]
    assert codes == [None, None, None, "BUSY"]


@pytest.mark.parametrize("per_connection", ["1", "100"])
def test_churned_cars_go_offline_and_come_back(
    start_sim: Start, probe: MqttProbe, per_connection: str
) -> None:
    """With a connection per car, offline is the broker's Last Will; on a shared
    connection the simulator says it for the car."""
    probe.subscribe("vehicle/+/status")
    sim = start_sim(
        "--count",
        "20",
        "--cars-per-connection",
        per_connection,
        "--churn",
        "10",
        "--offline-time",
        "0.5",
    )
    went: set[str] = set()
    back: set[str] = set()
    deadline = time.monotonic() + 15
    while not (went & back) and time.monotonic() < deadline:
        message = probe.expect(timeout=max(0.01, deadline - time.monotonic()))
        vin = message.topic.split("/")[1]
        if not vin.startswith(sim.prefix) or message.retain:
            continue
        if json.loads(message.payload)["status"] == "offline":
            went.add(vin)
        elif vin in went:
            back.add(vin)
    assert went & back, f"no car went offline and came back (offline: {sorted(went)})"
    stats = sim.stop()
    assert stats["churn_offline"] >= 1


def test_labels_depend_only_on_the_vin_and_follow_the_weights() -> None:
    spec = parse("region=eu:3,us:1;model=a,b")
    first, second = Labeller(spec), Labeller(spec)
    vins = [f"V{i}" for i in range(4000)]
    labels = [first(v) for v in vins]
    assert labels == [second(v) for v in vins]
    eu = sum(1 for label in labels if label["region"] == "eu") / len(labels)
    assert 0.7 < eu < 0.8
    assert {label["model"] for label in labels} == {"a", "b"}


@pytest.mark.parametrize(
    "args",
    [
        ["--labels", "region"],
        ["--reject-ratio", "0.7", "--crash-ratio", "0.7"],
        ["--latency", "sometimes"],
        ["--count", "0"],
    ],
)
def test_bad_options_are_refused_with_exit_code_2(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fleet_sim", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "fleet-sim: error:" in done.stderr


def test_the_shape_comparison_notices_a_missing_key_and_a_changed_type() -> None:
    real = {"added_workloads": [{"agent_name": "a", "workload_id": "1"}], "since": "t"}
    assert same_shape(real, real) == []
    assert same_shape(real, {"added_workloads": [{"agent_name": "a"}], "since": "t"})
    assert same_shape(real, {"added_workloads": [], "since": 1})
    assert same_shape({"x": None}, {"x": "now"})


@pytest.mark.parametrize("per_connection", [1, 3])
def test_a_killed_simulator_is_reported_by_the_last_wills(
    start_sim: Start, probe: MqttProbe, per_connection: int
) -> None:
    """One car per connection: each car's Will is its offline presence, as a real car's.
    Shared: the connection's Will, on the simulator's own topic, names its cars."""
    sim = start_sim("--count", "3", "--cars-per-connection", str(per_connection))
    if per_connection == 1:
        topics = {f"vehicle/{sim.vin(i)}/status" for i in range(3)}
    else:
        topics = {f"fleet-sim/fleet-sim-{sim.vin(0)}/status"}
    for topic in topics:
        probe.subscribe(topic)
        assert json.loads(probe.expect(topic).payload)["status"] == "online"
    sim.kill()
    offline: dict[str, Any] = {}
    while len(offline) < len(topics):
        message = probe.expect(timeout=10)
        if message.topic in topics:
            offline[message.topic] = json.loads(message.payload)
    assert {p["status"] for p in offline.values()} == {"offline"}
    if per_connection == 3:
        (will,) = offline.values()
        assert (will["cars"], will["first_vin"], will["last_vin"]) == (3, sim.vin(0), sim.vin(2))


def test_a_lost_shared_connection_is_reported_and_its_cars_come_back(
    start_sim: Start, make_broker: Callable[..., Broker]
) -> None:
    broker = make_broker()
    sim = start_sim("--count", "3", on=broker)
    port = broker.port
    broker.stop()
    lost = sim.expect("connection_lost", 10)
    assert lost["cars"] == 3
    again = make_broker(port=port)  # a broker that knows nothing: no retained presence
    # The sim reconnects with backoff, before or after this subscribes.
    statuses = retained_statuses(again, sim.prefix, 3, 20, live_too=True)
    assert {s["status"] for s in statuses.values()} == {"online"}


def test_a_follow_asked_by_mqtt5_properties_answers_with_the_correlation_data(
    start_sim: Start, probe: MqttProbe
) -> None:
    sim = start_sim("--count", "1", "--start-time", "0.05")
    vin = sim.vin(0)
    reply_topic = f"vehicle/{vin}/my/replies"
    probe.subscribe(reply_topic)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = reply_topic
    properties.CorrelationData = b"rollout-7"
    properties.UserProperty = [
        ("follow", "true"),
        ("settle", "0.2"),
        ("traceparent", "00-ab-cd-01"),
    ]
    probe.publish(
        f"vehicle/{vin}/manifest/apply/req", MANIFEST.format(version=1), properties=properties
    )
    reply, outcome = probe.expect(reply_topic), probe.expect(reply_topic)
    assert json.loads(reply.payload)["added_workloads"][0]["workload_name"] == "app"
    assert json.loads(outcome.payload)["outcome"] == "running"
    for message in (reply, outcome):
        assert message.properties is not None
        assert message.properties.CorrelationData == b"rollout-7"
        assert ("traceparent", "00-ab-cd-01") in message.properties.UserProperty


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_retained_request_is_refused_and_cleared(
    start_sim: Start, probe: MqttProbe, protocol: str
) -> None:
    """Kept by the broker before the car came (MQTT 3.1.1 brokers strip the flag from live
    deliveries, so only those can be told apart there, as for the connector)."""
    prefix = f"R{uuid.uuid4().hex[:6].upper()}"
    vin = f"{prefix}000000"
    probe.subscribe(f"vehicle/{vin}/manifest/apply/resp/#")
    request = f"vehicle/{vin}/manifest/apply/req/kept"
    probe.client.publish(request, MANIFEST.format(version=1), qos=1, retain=True).wait_for_publish(
        5
    )
    sim = start_sim("--count", "1", "--mqtt-protocol", protocol, prefix=prefix)
    reply = json.loads(probe.expect(f"vehicle/{vin}/manifest/apply/resp/kept").payload)
    assert reply["error"] == {
        "code": "INVALID_REQUEST",
        "message": "retained requests are not carried out; publish without -r",
    }
    # Cleared from the broker: a new subscriber gets nothing retained there, and the
    # clearing message itself was not taken for a request.
    probe.subscribe(request)
    probe.expect_nothing(0.5)
    assert sim.stop()["replies"] == 1
