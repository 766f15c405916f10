"""W3C Trace Context: traceparent/tracestate user properties go from a request onto
everything it causes, and into the connector's log lines."""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Callable

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import MqttProbe
from testkit.live import ALL_LOGS, manifest, states_until

from ankaios_emulator import Emulator
from fleet_connector import Connector

TRACEPARENT = ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
TRACESTATE = ("tracestate", "congo=t61rcWkgMzE")


def traced() -> Properties:
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = [TRACEPARENT, TRACESTATE, ("other", "not copied")]
    return properties


def test_a_reply_carries_the_trace_context_and_the_log_line_names_it(
    connector: Connector, probe: MqttProbe, vin: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet_connector")
    # The log line is written after the reply has left (a reply waits for no log line), so
    # the test waits for the line itself.
    logged: queue.Queue[str] = queue.Queue()

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "request id=tr1" in record.getMessage():
                logged.put(record.getMessage())

    handler = Lines()
    logging.getLogger("fleet_connector").addHandler(handler)
    try:
        probe.subscribe(f"vehicle/{vin}/state/resp/tr1")
        probe.publish(f"vehicle/{vin}/state/req/tr1", '["workloadStates"]', properties=traced())
        reply = probe.expect(f"vehicle/{vin}/state/resp/tr1")
        assert reply.properties is not None
        assert reply.properties.UserProperty == [TRACEPARENT, TRACESTATE]
        line = logged.get(timeout=10)
    finally:
        logging.getLogger("fleet_connector").removeHandler(handler)
    assert line.endswith(f"traceparent={TRACEPARENT[1]}")


def test_a_request_without_trace_context_gets_none(
    connector: Connector, probe: MqttProbe, vin: str
) -> None:
    probe.subscribe(f"vehicle/{vin}/state/resp/tr2")
    probe.publish(f"vehicle/{vin}/state/req/tr2", '["workloadStates"]')
    reply = probe.expect(f"vehicle/{vin}/state/resp/tr2")
    assert not getattr(reply.properties, "UserProperty", None)


def test_every_log_batch_carries_the_trace_context(
    make_car: Callable[..., Emulator],
    start_connector: Callable[..., Connector],
    probe: MqttProbe,
    vin: str,
) -> None:
    car = make_car({"talker:1": ["sh", "-c", "seq 1 5; exec sleep 60"]}, access=ALL_LOGS)
    start_connector(car.control_interface)
    probe.subscribe(f"vehicle/{vin}/workloads/talker")
    probe.publish(f"vehicle/{vin}/manifest/apply/req", manifest("talker", image="talker:1"))
    states_until(probe, f"vehicle/{vin}/workloads/talker", "running")
    instance = car.instance_names("talker")[0]
    car.wait_for(lambda e: len(e.logs(instance)) >= 5, timeout=10)
    topic = f"vehicle/{vin}/logs/resp/tr3"
    probe.subscribe(topic)
    probe.publish(
        f"vehicle/{vin}/logs/req/tr3",
        json.dumps({"workloads": ["talker"], "tail": 5}),
        properties=traced(),
    )
    messages = []
    while not messages or "end" not in json.loads(messages[-1].payload):
        messages.append(probe.expect(topic))
    assert len(messages) >= 2
    for message in messages:
        assert message.properties is not None
        assert message.properties.UserProperty == [TRACEPARENT, TRACESTATE]
