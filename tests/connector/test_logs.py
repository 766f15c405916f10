"""Logs on demand: tail, follow, cancel, every limit and every refusal, with real processes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import MANIFESTS, Broker, MqttProbe
from testkit.live import ALL_LOGS, manifest, states_until

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.observe.logs import LogLimits, LogStreams

FLOOD = (
    "import sys, time\n"
    "for i in range(20000):\n"
    "    print('flood', i, 'x' * 100)\n"
    "    if i % 100 == 0:\n"
    "        sys.stdout.flush(); time.sleep(0.01)\n"
    "sys.stdout.flush(); time.sleep(120)\n"
)
IMAGES = {
    "talker:1": ["sh", "-c", "for i in $(seq 1 30); do echo line $i; done; exec sleep 120"],
    "ticker:1": ["sh", "-c", "while :; do echo tick; sleep 0.1; done"],
    "flood:1": [sys.executable, "-u", "-c", FLOOD],
}


def start(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
    workloads: dict[str, str],
    **overrides: Any,
) -> Emulator:
    """A car running ``workloads`` (name -> image) with a connector; waits until they run."""
    access = overrides.pop("access", ALL_LOGS)
    car = make_car(IMAGES, access=access)
    start_connector(car.control_interface, **overrides)
    probe.subscribe(f"vehicle/{vin}/workloads/#")
    probe.subscribe(f"vehicle/{vin}/manifest/apply/resp")
    for name, image in workloads.items():
        probe.publish(f"vehicle/{vin}/manifest/apply/req", manifest(name, image=image))
        states_until(probe, f"vehicle/{vin}/workloads/{name}", "running")
    return car


@pytest.fixture
def car_with(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
) -> Callable[..., Emulator]:
    def make(workloads: dict[str, str], **overrides: Any) -> Emulator:
        return start(make_car, start_connector, probe, vin, workloads, **overrides)

    return make


def ask(probe: MqttProbe, vin: str, request: Any, request_id: str) -> str:
    topic = f"vehicle/{vin}/logs/resp/{request_id}"
    probe.subscribe(topic)
    body = request if isinstance(request, str) else json.dumps(request)
    probe.publish(f"vehicle/{vin}/logs/req/{request_id}", body)
    return topic


def stream(probe: MqttProbe, topic: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every message of one stream, up to and including its end (or error) message."""
    messages = []
    while True:
        message = json.loads(probe.expect(topic, timeout).payload)
        messages.append(message)
        if "end" in message or "error" in message:
            return messages


def lines_of(messages: list[dict[str, Any]]) -> list[str]:
    return [line["line"] for m in messages for line in m.get("lines", [])]


def wait_lines(car: Emulator, workload: str, count: int) -> None:
    instance = car.instance_names(workload)[0]
    car.wait_for(lambda e: len(e.logs(instance)) >= count, timeout=10)


def test_tail_sends_the_last_lines_in_order_then_done(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car = car_with({"talker": "talker:1"})
    wait_lines(car, "talker", 30)
    messages = stream(probe, ask(probe, vin, {"workloads": ["talker"], "tail": 5}, "t1"))
    assert lines_of(messages) == [f"line {i}" for i in range(26, 31)]
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    assert messages[-1]["end"] == "done"
    first = messages[0]["lines"][0]
    assert first["workload"] == "talker"
    assert first["instance_id"] == car.instance_names("talker")[0].split(".")[1]


def test_follow_streams_new_lines_until_cancelled(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car_with({"ticker": "ticker:1"})
    topic = ask(probe, vin, {"workloads": ["ticker"], "tail": 0, "follow": 60}, "f1")
    first = json.loads(probe.expect(topic).payload)
    assert first["seq"] == 0 and set(lines_of([first])) == {"tick"}
    probe.publish(f"vehicle/{vin}/logs/cancel/f1", b"")
    rest = stream(probe, topic)
    assert rest[-1]["end"] == "cancelled"
    assert [m["seq"] for m in [first, *rest]] == list(range(len(rest) + 1))


def test_follow_ends_done_after_its_time(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car_with({"ticker": "ticker:1"})
    started = time.monotonic()
    messages = stream(probe, ask(probe, vin, {"workloads": ["ticker"], "follow": 1}, "f2"))
    assert messages[-1]["end"] == "done"
    assert time.monotonic() - started >= 1.0
    assert "tick" in lines_of(messages)


def test_a_stream_ends_limit_at_the_line_limit(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car = car_with({"talker": "talker:1"}, log_limits=LogLimits(max_lines=10))
    wait_lines(car, "talker", 30)
    messages = stream(probe, ask(probe, vin, {"workloads": ["talker"]}, "l1"))
    assert lines_of(messages) == [f"line {i}" for i in range(1, 11)]
    assert messages[-1]["end"] == "limit"


def test_a_flood_is_held_to_the_byte_rate_and_the_rest_is_dropped(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    rate = 20_000
    car_with({"flood": "flood:1"}, log_limits=LogLimits(bytes_per_second=rate))
    started = time.monotonic()
    messages = stream(probe, ask(probe, vin, {"workloads": ["flood"], "follow": 2}, "r1"))
    elapsed = time.monotonic() - started
    sent = sum(len(line) for line in lines_of(messages))
    assert messages[-1]["end"] == "done"
    # At most the full bucket at the start plus the rate for the time it ran.
    assert sent <= rate * (1 + elapsed)
    assert sum(m.get("dropped", 0) for m in messages) > 0


def test_the_stream_limit_refuses_one_more(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car_with({"ticker": "ticker:1"}, log_limits=LogLimits(max_streams=1))
    first = ask(probe, vin, {"workloads": ["ticker"], "follow": 30}, "s1")
    probe.expect(first)
    error = stream(probe, ask(probe, vin, {"workloads": ["ticker"]}, "s2"))[-1]["error"]
    assert error["code"] == "BUSY" and "LOG_MAX_STREAMS" in error["message"]
    probe.publish(f"vehicle/{vin}/logs/cancel/s1", b"")
    assert stream(probe, first)[-1]["end"] == "cancelled"


@pytest.mark.parametrize(
    ("request_body", "complaint"),
    [
        ({"workloads": ["nobody"]}, "unknown workloads: nobody"),
        ({"workloads": ["talker"], "tail": -1}, '"tail" must be'),
        ({"workloads": ["talker"], "tail": 10**9}, '"tail" must be'),
        ({"workloads": ["talker"], "follow": 10**6}, "LOG_MAX_FOLLOW"),
        ({"workloads": ["talker"], "colour": "red"}, "unknown keys"),
        ({"workloads": []}, "non-empty list"),
        ({"workloads": ["talker"], "since": "yesterday"}, "RFC 3339"),
        ("not json", "JSON object"),
    ],
)
def test_bad_requests_get_one_clear_error(
    car_with: Callable[..., Emulator],
    probe: MqttProbe,
    vin: str,
    request_body: Any,
    complaint: str,
) -> None:
    car_with({"talker": "talker:1"})
    topic = ask(probe, vin, request_body, "bad")
    error = json.loads(probe.expect(topic).payload)["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert complaint in error["message"]
    probe.expect_nothing(0.3)


def test_cancelling_an_unknown_stream_is_an_error(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car_with({})
    probe.subscribe(f"vehicle/{vin}/logs/resp/ghost")
    probe.publish(f"vehicle/{vin}/logs/cancel/ghost", b"")
    error = json.loads(probe.expect(f"vehicle/{vin}/logs/resp/ghost").payload)["error"]
    assert error["code"] == "INVALID_REQUEST" and "ghost" in error["message"]


def test_without_a_log_rule_the_reply_is_access_denied_naming_the_rule(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    car_with({"talker": "talker:1"}, access=None)
    messages = stream(probe, ask(probe, vin, {"workloads": ["talker"], "tail": 3}, "a1"))
    assert len(messages) == 1
    error = messages[0]["error"]
    assert error["code"] == "ACCESS_DENIED"
    assert "LogRule" in error["message"] and "talker" in error["message"]


def test_logs_on_mqtt_311(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    broker: Broker,
    vin: str,
) -> None:
    settings = BrokerSettings(host=broker.host, port=broker.port, protocol="3.1.1")
    probe = MqttProbe(broker, protocol=mqtt.MQTTv311)
    try:
        car = start(
            make_car, start_connector, probe, vin, {"talker": "talker:1"}, mqtt_settings=settings
        )
        wait_lines(car, "talker", 30)
        messages = stream(probe, ask(probe, vin, {"workloads": ["talker"], "tail": 2}, "o1"))
        assert lines_of(messages) == ["line 29", "line 30"]
        assert messages[-1]["end"] == "done"
    finally:
        probe.close()


@pytest.mark.parametrize("startup", ["state-live.yaml", "v1/state-live.yaml"])
def test_the_startup_state_with_log_rules_lets_exactly_the_sender_logs_out(
    tmp_path: Path,
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
    startup: str,
) -> None:
    state = (MANIFESTS / startup).read_text()
    with Emulator(state=state, run_dir=tmp_path / "run", runtime="simulate") as car:
        # The connector workload itself is simulated; this process plays it.
        start_connector(car.control_interface_of("fleetconnector"))
        probe.subscribe(f"vehicle/{vin}/workloads/#")
        for name in ("vehicle-data-sender", "other"):
            probe.publish(f"vehicle/{vin}/manifest/apply/req", manifest(name))
            states_until(probe, f"vehicle/{vin}/workloads/{name}", "running")
        allowed = stream(
            probe, ask(probe, vin, {"workloads": ["vehicle-data-sender"], "tail": 5}, "m1")
        )
        assert allowed[-1]["end"] == "done"
        assert any("vehicle-data-sender" in line for line in lines_of(allowed))
        denied = stream(probe, ask(probe, vin, {"workloads": ["other"], "tail": 5}, "m2"))
        assert denied[-1]["error"]["code"] == "ACCESS_DENIED"
        assert "LogRule" in denied[-1]["error"]["message"]


def test_a_stream_whose_agent_never_answers_ends_with_an_error(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str
) -> None:
    # agent_Z never connects: Ankaios accepts the request but no agent streams the logs.
    car_with({}, request_timeout=0.5)
    probe.subscribe(f"vehicle/{vin}/workloads/away")
    probe.publish(
        f"vehicle/{vin}/manifest/apply/req", manifest("away", image="talker:1", agent="agent_Z")
    )
    states_until(probe, f"vehicle/{vin}/workloads/away", "pending")
    messages = stream(probe, ask(probe, vin, {"workloads": ["away"], "tail": 5}, "z1"))
    assert messages[-1]["end"] == "error"
    assert "nothing more" in messages[-1]["message"]


def test_a_cancel_without_id_or_correlation_ends_no_stream_identified_by_correlation(
    car_with: Callable[..., Emulator], probe: MqttProbe, vin: str, broker: Broker
) -> None:
    """Another client's plain cancel (here on MQTT 3.1.1) must not end a correlated stream."""
    car_with({"ticker": "ticker:1"})
    mine = f"vehicle/{vin}/logs/resp/mine"
    probe.subscribe(mine)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.CorrelationData = b"my-stream"
    properties.ResponseTopic = mine
    probe.publish(
        f"vehicle/{vin}/logs/req",
        json.dumps({"workloads": ["ticker"], "tail": 0, "follow": 60}),
        properties=properties,
    )
    assert "lines" in json.loads(probe.expect(mine).payload)
    other = MqttProbe(broker, protocol=mqtt.MQTTv311)
    try:
        other.subscribe(f"vehicle/{vin}/logs/resp")
        other.publish(f"vehicle/{vin}/logs/cancel", b"")
        refused = json.loads(other.expect(f"vehicle/{vin}/logs/resp").payload)
        assert refused["error"]["code"] == "INVALID_REQUEST"
    finally:
        other.close()
    # Still streaming: the next batches are lines, not an end.
    for _ in range(3):
        assert "end" not in json.loads(probe.expect(mine).payload)
    cancel = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    cancel.CorrelationData = b"my-stream"
    probe.publish(f"vehicle/{vin}/logs/cancel", b"", properties=cancel)
    assert stream(probe, mine)[-1]["end"] == "cancelled"


def test_a_defect_while_opening_a_stream_is_answered_internal_and_streams_go_on(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    car = make_car(IMAGES)
    start_connector(car.control_interface)
    probe.subscribe(f"vehicle/{vin}/workloads/#")
    probe.publish(f"vehicle/{vin}/manifest/apply/req", manifest("ticker", image="ticker:1"))
    states_until(probe, f"vehicle/{vin}/workloads/ticker", "running")
    real = LogStreams._instances

    def defect(self: LogStreams, workloads: Any) -> Any:
        raise RuntimeError("a defect")

    # A stand-in for a defect in the connector's own code, not in Ankaios or the broker;
    # on the class, since the connector makes its log streams at the first request.
    monkeypatch.setattr(LogStreams, "_instances", defect)
    topic = ask(probe, vin, {"workloads": ["ticker"], "tail": 1}, "broken")
    error = json.loads(probe.expect(topic).payload)["error"]
    assert error["code"] == "INTERNAL" and "a defect" in error["message"]
    monkeypatch.setattr(LogStreams, "_instances", real)
    topic = ask(probe, vin, {"workloads": ["ticker"], "tail": 1}, "after")
    assert stream(probe, topic)[-1]["end"] == "done"
