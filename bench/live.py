"""Live states and logs (issue #11): event-to-MQTT latency and log lines per second.

One emulated Ankaios (simulate runtime), one connector and a subscriber in this process, on
a mosquitto of the benchmark's own.

* Event to MQTT: workloads are applied one at a time; for each, the moment the emulator
  hands the event that says ``Running`` to the control interface is recorded, and the moment
  the subscriber receives ``vehicle/<VIN>/workloads/<name>`` with state ``running``. The
  difference, p50 and p99: what an operator watching the topic waits beyond Ankaios.
* Log lines/s: a workload's buffer is filled with ``lines`` lines of 80 bytes; one logs
  request with ``tail`` takes them all to a subscriber (rate limit set out of the way);
  lines over the time from the request to the end message.
"""

from __future__ import annotations

import json
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ankaios_emulator import Emulator
from bench.common import HOST, Mosquitto, percentile
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.observe.logs import LogLimits

VIN = "BENCHLIVE"


def _manifest(name: str) -> str:
    return (
        "apiVersion: v0.1\nworkloads:\n"
        f"  {name}:\n    runtime: podman\n    agent: agent_A\n    restartPolicy: NEVER\n"
        "    runtimeConfig: |\n      image: sim:1\n"
    )


def _subscriber(port: int, topics: list[str]) -> tuple[Any, queue.Queue[tuple[float, str, bytes]]]:
    arrived: queue.Queue[tuple[float, str, bytes]] = queue.Queue()
    client = BrokerSettings(host=HOST, port=port).make_client("bench-live-subscriber")
    subscribed = threading.Event()
    client.on_message = lambda c, u, m: arrived.put((time.monotonic(), m.topic, m.payload))
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect(HOST, port)
    client.loop_start()
    client.subscribe([(t, 1) for t in topics])
    if not subscribed.wait(10):
        raise RuntimeError("the subscriber was not subscribed")
    return client, arrived


def _until(arrived: queue.Queue[tuple[float, str, bytes]], topic: str, test: Any) -> float:
    deadline = time.monotonic() + 30
    while True:
        at, got, payload = arrived.get(timeout=max(0.01, deadline - time.monotonic()))
        if got == topic and test(payload):
            return at


def _event_latency(emulator: Emulator, client: Any, arrived: Any, samples: int) -> list[float]:
    session = emulator.session()
    sent: dict[str, float] = {}
    original = session.send_response

    def recording(response: Any) -> None:
        altered = response.completeStateResponse.alteredFields
        for path in altered.updatedFields:
            parts = path.split(".")
            if len(parts) == 5 and parts[4] == "state":
                sent.setdefault(parts[2], time.monotonic())
        original(response)

    session.send_response = recording  # type: ignore[method-assign]
    latencies = []
    try:
        for n in range(samples):
            name = f"w{n}"
            client.publish(f"vehicle/{VIN}/manifest/apply/req", _manifest(name), 1)
            topic = f"vehicle/{VIN}/workloads/{name}"
            at = _until(arrived, topic, lambda p: bool(p) and json.loads(p)["state"] == "running")
            # The Pending(Starting) event changes the state leaf too; Running is the last.
            latencies.append((at - sent[name]) * 1000)
            sent.pop(name)
    finally:
        session.send_response = original  # type: ignore[method-assign]
    return latencies


def _log_rate(emulator: Emulator, client: Any, arrived: Any, lines: int) -> dict[str, Any]:
    client.publish(f"vehicle/{VIN}/manifest/apply/req", _manifest("talker"), 1)
    _until(
        arrived,
        f"vehicle/{VIN}/workloads/talker",
        lambda p: bool(p) and json.loads(p)["state"] == "running",
    )
    line = "x" * 80
    for n in range(lines):
        emulator.emit_log("talker", f"{n:08d} {line}")
    started = time.monotonic()
    request = {"workloads": ["talker"], "tail": lines}
    client.publish(f"vehicle/{VIN}/logs/req/bench", json.dumps(request), 1)
    received = 0
    batches = 0
    while True:
        at, topic, payload = arrived.get(timeout=60)
        if topic != f"vehicle/{VIN}/logs/resp/bench":
            continue
        message = json.loads(payload)
        received += len(message.get("lines", []))
        batches += 1
        if "end" in message:
            break
    elapsed = at - started
    return {
        "lines": received,
        "batches": batches,
        "seconds": round(elapsed, 3),
        "lines_per_s": round(received / elapsed),
    }


def run(workdir: Path, samples: int = 200, lines: int = 20_000) -> dict[str, Any]:
    broker = Mosquitto(workdir / "mosquitto").start()
    emulator = Emulator(
        control_interface=workdir / "ci",
        access={
            "allowRules": [
                {"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]},
                {"type": "LogRule", "workloadNames": ["*"]},
            ]
        },
        step_delay=0.005,
        pace_frames=False,
    ).start()
    connector = Connector(
        Config(
            vin=VIN,
            broker=BrokerSettings(host=HOST, port=broker.port),
            control_interface=emulator.control_interface,
            log_limits=LogLimits(max_lines=lines, bytes_per_second=1 << 30),
            log_level="WARNING",
        )
    )
    connector.start()
    client = None
    try:
        if not connector.live.synced.wait(20) or not connector.mqtt.wait_subscribed(20):
            raise RuntimeError("the connector did not come up")
        client, arrived = _subscriber(
            broker.port, [f"vehicle/{VIN}/workloads/+", f"vehicle/{VIN}/logs/resp/+"]
        )
        latencies = _event_latency(emulator, client, arrived, samples)
        logs = _log_rate(emulator, client, arrived, lines)
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        connector.stop()
        emulator.stop()
        broker.stop()
    return {
        "event_to_mqtt": {
            "samples": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 3),
            "p99_ms": round(percentile(latencies, 99), 3),
        },
        "logs": logs,
    }


def rows(result: Any) -> list[tuple[str, str, str, str]]:
    """The bench table's lines for this benchmark."""
    if not isinstance(result, dict) or "event_to_mqtt" not in result:
        return []
    event, logs = result["event_to_mqtt"], result["logs"]
    return [
        (
            "Live states: Ankaios event to retained MQTT message at a subscriber, p50 / p99",
            f"{event['p50_ms']:.2f} / {event['p99_ms']:.2f} ms",
            "-",
            "",
        ),
        (
            f"Logs: lines/s through to a subscriber ({logs['lines']:,} lines of 89 bytes)",
            f"{logs['lines_per_s']:,}/s",
            "-",
            "",
        ),
    ]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        print(json.dumps(run(Path(tmp)), indent=1), file=sys.stdout)
