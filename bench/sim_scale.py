"""fleet-sim at scale (issue #23): how fast it brings N simulated cars online, at what memory.

A mosquitto of the benchmark's own and one ``fleet-sim`` process with N cars. Measured:

* ready: from starting the process to its ``ready`` event (every car's presence and live
  states acknowledged by the broker, as fleet-sim itself counts them);
* seen: from starting the process until a subscriber of ``vehicle/+/status`` has received
  the retained presence of all N cars (what a fleet service starting then would see);
* memory per car: the simulator's RSS at ready, less its RSS before it made any car, over
  N; the broker's RSS over N as well (retained messages and subscriptions).

The fleet-server benchmarks build on this: they start fleet-sim the same way
(:func:`start`) and measure the service instead. ``python -m bench --only sim`` runs it;
it is not part of the default run yet.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import HOST, Mosquitto, Proc, python_module, rss_mib, spawn

DEFAULT_CARS = 10_000


def start(
    workdir: Path, port: int, cars: int, *args: str, prefix: str = "SIM"
) -> tuple[Proc, float, dict[str, Any]]:
    """Starts fleet-sim; returns it, when it was started (monotonic) and its ready event."""
    started = time.monotonic()
    proc = spawn(
        "fleet-sim",
        python_module(
            "fleet_sim",
            "--broker-addr",
            HOST,
            "--broker-port",
            str(port),
            "--count",
            str(cars),
            "--vin-prefix",
            prefix,
            *args,
        ),
        workdir,
        stdout_pipe=True,
    )
    assert proc.popen.stdout is not None
    os.set_blocking(proc.popen.stdout.fileno(), True)
    for line in proc.popen.stdout:
        event = json.loads(line)
        if event["event"] == "ready":
            return proc, started, event
    proc.stop()
    raise RuntimeError(f"fleet-sim ended before it was ready:\n{proc.tail()}")


def _count_presence(port: int, cars: int, done: threading.Event) -> mqtt.Client:
    """A subscriber that sets ``done`` once it has the retained presence of ``cars`` cars."""
    seen: set[str] = set()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sim-observer")

    def on_message(c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        seen.add(message.topic)
        if len(seen) >= cars:
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe("vehicle/+/status", 1)
    client.connect(HOST, port)
    client.loop_start()
    return client


def run(workdir: Path, cars: int = DEFAULT_CARS, per_connection: int = 1000) -> dict[str, Any]:
    broker = Mosquitto(workdir / "mosquitto").start()
    broker_idle_mib = rss_mib(broker.pid)
    sim: Proc | None = None
    observer: mqtt.Client | None = None
    try:
        sim, started, ready = start(
            workdir, broker.port, cars, "--cars-per-connection", str(per_connection)
        )
        ready_s = time.monotonic() - started
        done = threading.Event()
        observer = _count_presence(broker.port, cars, done)
        if not done.wait(120):
            raise RuntimeError("the observer did not see every car's presence within 120 s")
        seen_s = time.monotonic() - started
        sim_mib = rss_mib(sim.pid)
        broker_mib = rss_mib(broker.pid)
        per_car_kib = (ready["rss_kib"] - ready["rss_kib_before_cars"]) / cars
        return {
            "cars": cars,
            "cars_per_connection": per_connection,
            "connections": ready["connections"],
            "ready_s": round(ready_s, 2),
            "sim_ready_s": ready["seconds"],
            "all_presence_seen_s": round(seen_s, 2),
            "cars_per_second": round(cars / ready_s),
            "sim_rss_mib": round(sim_mib, 1),
            "sim_kib_per_car": round(per_car_kib, 2),
            "broker_kib_per_car": round((broker_mib - broker_idle_mib) * 1024 / cars, 2),
        }
    finally:
        if observer is not None:
            observer.loop_stop()
            observer.disconnect()
        if sim is not None:
            sim.stop(15)
        broker.stop()


def rows(result: Any) -> list[tuple[str, str, str, str]]:
    """The bench table's lines for this benchmark."""
    if not isinstance(result, dict) or "ready_s" not in result:
        return []
    return [
        (
            f"fleet-sim: {result['cars']:,} cars online ({result['connections']} connections); "
            "all presence at a subscriber",
            f"{result['ready_s']:.2f} s ({result['cars_per_second']:,} cars/s); "
            f"{result['all_presence_seen_s']:.2f} s",
            "-",
            "",
        ),
        (
            "  fleet-sim memory per car; mosquitto's",
            f"{result['sim_kib_per_car']:.2f} KiB; {result['broker_kib_per_car']:.2f} KiB",
            "-",
            "",
        ),
    ]


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CARS
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        print(json.dumps(run(Path(tmp), count), indent=1))
