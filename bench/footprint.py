"""Start-up time and idle memory of the connector and of the vehicle data sender.

Connector: from ``Popen`` to the reply of the first state request, sent as soon as its
retained presence says online with Ankaios connected (the connector subscribes before it
says so). Then 2 s idle, and its VmRSS. The emulator runs beforehand in its own process.
Sender: from ``Popen`` to the first value on its topic (subscribed beforehand), then VmRSS.
Each is started ``runs`` times; the medians are reported.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from bench.client import Client
from bench.common import (
    Mosquitto,
    cpu_seconds,
    median,
    python_module,
    rss_mib,
    spawn,
    start_emulator,
    thread_count,
)
from bench.latency import STATE_PAYLOAD, start_connector, wait_online
from fleet_connector.topics import Operation, Topics

IDLE_SECONDS = 2.0


def connector_start(workdir: Path, broker: Mosquitto, client: Client, ci: Path) -> dict[str, float]:
    vin = f"fp{uuid.uuid4().hex[:6]}"
    topics = Topics(vin)
    client.subscribe(f"{topics.base}/+/resp/+")
    started = time.perf_counter()
    proc = start_connector(workdir, broker.port, vin, ci)
    try:
        online = wait_online(client, topics)
        client.call(
            topics.request(Operation.STATE, "first"),
            topics.response(Operation.STATE, "first"),
            STATE_PAYLOAD,
        )
        reply_at = time.perf_counter()
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(proc.pid) - cpu_before) / IDLE_SECONDS
        return {
            "start_to_online_s": online - started,
            "start_to_first_answer_s": reply_at - started,
            "idle_rss_mib": rss_mib(proc.pid),
            "idle_cpu_percent": idle_cpu * 100,
            "threads": float(thread_count(proc.pid)),
        }
    finally:
        proc.stop()


def sender_start(workdir: Path, broker: Mosquitto, client: Client) -> dict[str, float]:
    topic = f"vehicle/fp{uuid.uuid4().hex[:6]}/sensors/speed"
    client.subscribe(topic)
    started = time.perf_counter()
    proc = spawn(
        "sender",
        python_module("vehicle_data_sender"),
        workdir,
        {
            "MQTT_BROKER_ADDR": "127.0.0.1",
            "MQTT_BROKER_PORT": str(broker.port),
            "TOPIC": topic,
            "INTERVAL": "1",
        },
    )
    try:
        _, arrived = client.expect(topic, timeout=20)
        first = arrived - started
        time.sleep(IDLE_SECONDS)
        return {
            "start_to_first_value_s": first,
            "idle_rss_mib": rss_mib(proc.pid),
            "threads": float(thread_count(proc.pid)),
        }
    finally:
        proc.stop()


def run(workdir: Path, runs: int) -> dict[str, object]:
    broker = Mosquitto(workdir / "mosquitto").start()
    client = Client(broker.port)
    emulator, ci = start_emulator(workdir)
    try:
        connector_runs = [connector_start(workdir, broker, client, ci) for _ in range(runs)]
        sender_runs = [sender_start(workdir, broker, client) for _ in range(runs)]
        return {
            "runs": runs,
            "connector": {
                key: round(median([r[key] for r in connector_runs]), 3) for key in connector_runs[0]
            },
            "sender": {
                key: round(median([r[key] for r in sender_runs]), 3) for key in sender_runs[0]
            },
            "emulator_rss_mib": round(rss_mib(emulator.pid), 1),
        }
    finally:
        client.close()
        emulator.stop()
        broker.stop()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-fp-") as tmp:
        print(json.dumps(run(Path(tmp), 3), indent=1))
