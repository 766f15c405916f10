"""Start-up time and idle memory of the connector and of the vehicle data sender.

Connector, and the tutorial-style baseline (``bench/tutorial_connector.py``) alternately:
from ``Popen`` to the reply of the first state request (one is sent every 10 ms from the
start, for both alike). Then 2 s idle, and its VmRSS. The emulator runs beforehand in its
own process.
Sender: from ``Popen`` to the first value on its topic (subscribed beforehand), then VmRSS.
Each is started ``runs`` times; the medians are reported. The repository's packages are
byte-compiled first, as an installed connector is (see :func:`compile_sources`).
Then what each import step adds (:data:`IMPORT_STEPS`).
"""

from __future__ import annotations

import compileall
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.client import Client
from bench.common import (
    REPO,
    Mosquitto,
    cpu_seconds,
    median,
    python_module,
    rss_mib,
    spawn,
    start_emulator,
    thread_count,
)
from bench.latency import STATE_PAYLOAD, start_baseline, start_connector
from fleet_connector.mqtt.topics import Operation, Topics

IDLE_SECONDS = 2.0


def first_answer(client: Client, topics: Topics, started: float, timeout: float = 20.0) -> float:
    """Seconds from ``started`` to the first reply, asking every 10 ms until one comes.

    The same probe for our connector and for the baseline (which has no presence); a
    request that arrives before the connector subscribed is simply not answered.
    """
    reply_topic = topics.response(Operation.STATE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.publish(topics.request(Operation.STATE), STATE_PAYLOAD)
        try:
            _, arrived = client.expect(reply_topic, timeout=0.01)
            return arrived - started
        except TimeoutError:
            continue
    raise TimeoutError(f"no answer on {reply_topic} within {timeout}s")


def connector_start(
    workdir: Path, broker: Mosquitto, client: Client, baseline: bool = False
) -> dict[str, float]:
    """One start with an emulator of its own, as at a car's boot (Ankaios 1.0.1 does not
    accept a second Hello on the same FIFOs, which the SDK would wait 5 s for)."""
    vin = f"fp{uuid.uuid4().hex[:6]}"
    topics = Topics(vin)
    emulator, ci = start_emulator(workdir, f"emulator-{vin}")
    client.subscribe(topics.response(Operation.STATE))
    started = time.perf_counter()
    if baseline:
        proc = start_baseline(workdir, broker.port, vin, ci)
    else:
        proc = start_connector(workdir, broker.port, vin, ci)
    try:
        first = first_answer(client, topics, started)
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(proc.pid) - cpu_before) / IDLE_SECONDS
        return {
            "start_to_first_answer_s": first,
            "idle_rss_mib": rss_mib(proc.pid),
            "idle_cpu_percent": idle_cpu * 100,
            "threads": float(thread_count(proc.pid)),
            "emulator_rss_mib": rss_mib(emulator.pid),
        }
    finally:
        proc.stop()
        emulator.stop()


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


# What a connector process loads, step by step: the baseline's two libraries first, then
# what the connector adds before it answers, then what its features load on first use (each
# after the ones above it, so a row is what that use adds to a running connector).
IMPORT_STEPS: list[tuple[str, str]] = [
    ("the baseline's libraries", "paho.mqtt.client,ankaios_sdk"),
    ("at start", "fleet_connector.__main__"),
    ("first manifest (schema validation)", "fastjsonschema,importlib.resources"),
    ("a manifest with findings (explained)", "jsonschema"),
    (
        "first plan, or a policy on agents or images (server model)",
        "fleet_connector.requests.plan,fleet_connector.requests.started,ankaios_model.state",
    ),
    ("first logs request (log streams)", "fleet_connector.observe.logs,concurrent.futures"),
    (
        "STATE_DIR (journal)",
        "sqlite3,fleet_connector.journal.entries,fleet_connector.journal.changes,fleet_connector.journal.reconcile,"
        "fleet_connector.journal.rollback",
    ),
    ("flags on the command line", "fleet_connector.flags"),
    ("TRUSTED_KEYS (Ed25519)", "cryptography.hazmat.primitives.asymmetric.ed25519"),
]
_IMPORT_PROBE = """
import importlib, json, sys, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
out = [('python', rss(), 0.0)]
for step in sys.argv[1:]:
    started = time.perf_counter()
    for module in step.split(','):
        importlib.import_module(module)
    out.append((step, rss(), time.perf_counter() - started))
print(json.dumps(out))
"""


def compile_sources() -> None:
    """Byte-compiles the repository's packages, as installing them does.

    A connector in a car runs from an installed package whose modules are compiled once;
    with ``PYTHONDONTWRITEBYTECODE`` set (as in this project's shells) a checkout's modules
    would be compiled again at every start, which costs the connector (30-odd modules)
    about 50 ms and 1 MiB more than the baseline (one module), and is not what a car does.
    """
    for package in (
        "ankaios_model",
        "fleet_connector",
        "ankaios_emulator",
        "vehicle_data_sender",
        "bench",
    ):
        compileall.compile_dir(REPO / package, quiet=1)


def import_costs() -> list[dict[str, object]]:
    """RSS and import time each step adds (medians of 3 fresh interpreters)."""
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _IMPORT_PROBE, *(modules for _, modules in IMPORT_STEPS)],
                capture_output=True,
                check=True,
                cwd=REPO,
            ).stdout
        )
        for _ in range(3)
    ]
    whens = ["", *(when for when, _ in IMPORT_STEPS)]
    steps: list[dict[str, object]] = []
    for i, (name, _, _) in enumerate(runs[0]):
        rss = median([r[i][1] for r in runs])
        before = median([r[i - 1][1] for r in runs]) if i else 0.0
        steps.append(
            {
                "step": name,
                "when": whens[i],
                "rss_mib": round(rss, 1),
                "adds_mib": round(rss - before, 1),
                "seconds": round(median([r[i][2] for r in runs]), 3),
            }
        )
    return steps


def run(workdir: Path, runs: int) -> dict[str, object]:
    compile_sources()
    broker = Mosquitto(workdir / "mosquitto").start()
    client = Client(broker.port)
    try:
        # Ours and the baseline alternate, so both see the same load.
        connector_runs: list[dict[str, float]] = []
        baseline_runs: list[dict[str, float]] = []
        for _ in range(runs):
            connector_runs.append(connector_start(workdir, broker, client))
            baseline_runs.append(connector_start(workdir, broker, client, baseline=True))
        sender_runs = [sender_start(workdir, broker, client) for _ in range(runs)]
        return {
            "runs": runs,
            "connector": {
                key: round(median([r[key] for r in connector_runs]), 3) for key in connector_runs[0]
            },
            "baseline": {
                key: round(median([r[key] for r in baseline_runs]), 3) for key in baseline_runs[0]
            },
            "sender": {
                key: round(median([r[key] for r in sender_runs]), 3) for key in sender_runs[0]
            },
            "imports": import_costs(),
        }
    finally:
        client.close()
        broker.stop()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-fp-") as tmp:
        print(json.dumps(run(Path(tmp), 3), indent=1))
