"""A publisher of live-state changes at a set rate, for fleet-server's ingest benchmark.

Run as a process of its own (``python -m bench.state_changes``), so its paho thread and the
bench's HTTP polling do not share an interpreter lock. It publishes what a connector
publishes when a workload changes state: ``vehicle/<VIN>/workloads/<name>``, QoS 1 (not
retained, see below), with a ``since`` that only grows (the server keeps a state only if
it is not older than the stored one). Each message is a real change: the state alternates between
``running`` and ``succeeded`` per car.

Rate 0 publishes as fast as the client can. Prints one JSON line at the end: messages
published and acknowledged, seconds, the rate achieved.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WORKLOAD = "bench-load"


def payload(state: str, since: datetime) -> bytes:
    return json.dumps(
        {
            "agent": "agent_A",
            "instance_id": "bench-load-1",
            "state": state,
            "substate": "Ok" if state == "running" else "Succeeded",
            "info": "",
            "since": since.isoformat(timespec="microseconds"),
        }
    ).encode()


def run(host: str, port: int, vins: list[str], messages: int, rate: float) -> dict[str, Any]:
    acked = 0
    done = threading.Event()
    lock = threading.Lock()

    def on_publish(c: mqtt.Client, u: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        with lock:
            acked += 1
            if acked >= messages:
                done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-state-changes-{port}-{time.time_ns()}"
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    # One base time, each message a microsecond later: `since` grows without a clock call.
    base = datetime.now(UTC)
    started = time.monotonic()
    tick = 0.01
    per_tick = max(1, round(rate * tick)) if rate > 0 else messages
    sent = 0
    while sent < messages:
        for _ in range(min(per_tick, messages - sent)):
            vin = vins[sent % len(vins)]
            state = "running" if (sent // len(vins)) % 2 == 0 else "succeeded"
            client.publish(
                f"vehicle/{vin}/workloads/{WORKLOAD}",
                payload(state, base + timedelta(microseconds=sent)),
                qos=1,
                # Not retained (a connector's are): the broker's retained set stays the
                # fleet's own, so a server started after this reads what the one before did.
                retain=False,
            )
            sent += 1
        if rate > 0:
            # Paced by the clock, not by sleeps alone: a late tick is caught up.
            due = started + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    published_s = time.monotonic() - started
    done.wait(120)
    acked_s = time.monotonic() - started
    client.loop_stop()
    client.disconnect()
    return {
        "messages": messages,
        "acknowledged": acked,
        "target_per_s": rate,
        "published_s": round(published_s, 3),
        "acknowledged_s": round(acked_s, 3),
        # Acknowledged by the broker, not handed to paho (which queues without bound).
        "per_s": round(acked / acked_s) if acked_s else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--prefix", default="SIM")
    parser.add_argument("--width", type=int, default=6)
    parser.add_argument("--cars", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0, help="messages a second; 0: at once")
    args = parser.parse_args()
    vins = [f"{args.prefix}{i:0{args.width}d}" for i in range(args.cars)]
    print(json.dumps(run(args.host, args.port, vins, args.messages, args.rate)), flush=True)


if __name__ == "__main__":
    main()
