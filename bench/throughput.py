"""Sustained requests per second through one connector: N pipelined state requests.

Every request is published at once (QoS 1, each with its own id), then the run waits for
all N replies. mosquitto holds them (max_queued_messages 100000) and hands them to the
connector without an inflight window (max_inflight_messages 0); the connector's queue is
raised for the run (QUEUE_SIZE) so none is refused with BUSY. A second run keeps
QUEUE_SIZE at its default and lets mosquitto's inflight window (20) pace the connector.
The first run again with the fast responder (bench/responder.py) in the emulator's place
shows the connector's own ceiling; and the emulator's and the responder's own ceilings,
requests straight into their FIFOs, say which side is the limit.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from bench.client import Client
from bench.common import (
    Mosquitto,
    Proc,
    cpu_seconds,
    python_module,
    rss_mib,
    spawn,
    start_emulator,
    stop_all,
    wait_line,
)
from bench.latency import STATE_PAYLOAD, start_connector, wait_online
from bench.responder import ceiling
from fleet_connector.mqtt.topics import Operation, Topics


def pipelined(client: Client, topics: Topics, requests: int, timeout: float) -> dict[str, object]:
    run = uuid.uuid4().hex[:6]
    prefix = topics.response(Operation.STATE, run)
    client.count_prefix = prefix
    client.counted = 0
    client.count_target = requests
    client.count_done.clear()
    started = time.perf_counter()
    for i in range(requests):
        client.publish(topics.request(Operation.STATE, f"{run}-{i}"), STATE_PAYLOAD)
    published = time.perf_counter()
    client.count_done.wait(timeout)
    answered = client.counted
    errors: dict[str, int] = {}
    while not client.inbox.empty():
        topic, payload, _, _ = client.inbox.get()
        if topic.startswith(prefix):
            code = json.loads(payload)["error"]["code"]
            errors[code] = errors.get(code, 0) + 1
    elapsed = (client.last_arrival if answered else time.perf_counter()) - started
    client.count_prefix = None
    return {
        "requests": requests,
        "answered": answered,
        "errors": errors,
        "seconds": round(elapsed, 3),
        "publish_seconds": round(published - started, 3),
        "per_second": round(answered / elapsed, 1) if elapsed > 0 else 0.0,
    }


def start_responder(workdir: Path) -> tuple[Proc, Path]:
    """The fast Ankaios stand-in (bench/responder.py) in a process of its own."""
    ci = workdir / "responder-ci"
    proc = spawn("responder", python_module("bench.responder", str(ci)), workdir, stdout_pipe=True)
    wait_line(proc, "ready", 20)
    return proc, ci


def ankaios_ceiling(workdir: Path, requests: int, fast: bool) -> dict[str, object]:
    """Pipelined state requests straight into the emulator (or the responder), no connector."""
    proc, ci = start_responder(workdir) if fast else start_emulator(workdir, "emulator-ceiling")
    try:
        before = cpu_seconds(proc.pid)
        result: dict[str, object] = dict(ceiling(ci, requests))
        result["cpu_seconds"] = round(cpu_seconds(proc.pid) - before, 2)
        return result
    finally:
        proc.stop()


def one_run(
    workdir: Path,
    requests: int,
    queue_size: int | None,
    broker_inflight: int,
    profile: str | None,
    *,
    fast: bool = False,
    module: str = "fleet_connector",
) -> dict[str, object]:
    broker = Mosquitto(workdir / "mosquitto", max_inflight=broker_inflight).start()
    procs: list[Proc] = []
    client: Client | None = None
    try:
        emulator, ci = start_responder(workdir) if fast else start_emulator(workdir)
        procs.append(emulator)
        vin = f"tp{uuid.uuid4().hex[:6]}"
        topics = Topics(vin)
        client = Client(broker.port)
        client.subscribe(f"{topics.base}/+/resp/+")
        env = {"QUEUE_SIZE": str(queue_size)} if queue_size else {}
        connector = start_connector(
            workdir, broker.port, vin, ci, profile=profile, module=module, **env
        )
        procs.append(connector)
        wait_online(client, topics)
        cpu = {name: cpu_seconds(pid) for name, pid in _pids(broker, connector, emulator)}
        result = pipelined(client, topics, requests, timeout=max(60.0, requests / 100))
        spent = {
            name: round(cpu_seconds(pid) - cpu[name], 2)
            for name, pid in _pids(broker, connector, emulator)
        }
        result["cpu_seconds"] = spent
        # Requests per CPU-second of the connector: what one idle core would sustain. On a
        # shared machine the rate above is bounded by the CPU the connector gets.
        answered = int(str(result["answered"]))
        if spent["connector"] and answered:
            result["connector_cpu_ms_per_request"] = round(spent["connector"] / answered * 1000, 3)
            result["per_connector_cpu_second"] = round(answered / spent["connector"])
        result["connector_rss_mib_after"] = round(rss_mib(connector.pid), 1)
        result["queue_size"] = queue_size or 1000
        result["broker_max_inflight"] = broker_inflight
        result["ankaios"] = "fast responder" if fast else "emulator"
        result["connector"] = module
        connector.stop(timeout=30)
        return result
    finally:
        stop_all(client, procs, broker)


def _pids(broker: Mosquitto, connector: Proc, emulator: Proc) -> list[tuple[str, int]]:
    return [("mosquitto", broker.pid), ("connector", connector.pid), ("emulator", emulator.pid)]


def run(workdir: Path, requests: int, profile: bool) -> dict[str, object]:
    raised = one_run(workdir / "raised", requests, max(2 * requests, 1000), 0, None)
    fast = one_run(workdir / "fast", requests, max(2 * requests, 1000), 0, None, fast=True)
    windowed = one_run(workdir / "windowed", min(requests, 2000), None, 20, None)
    loop = one_run(workdir / "loop", requests, None, 0, None, fast=True, module="bench.single_loop")
    result: dict[str, object] = {
        "raised_queue": raised,
        "fast_responder": fast,
        "single_loop_fast_responder": loop,
        "broker_window": windowed,
        "emulator_ceiling": ankaios_ceiling(workdir / "emulator-ceiling", requests, False),
        "responder_ceiling": ankaios_ceiling(workdir / "responder-ceiling", requests, True),
    }
    if profile:
        one_run(
            workdir / "profiled",
            min(requests, 3000),
            max(2 * requests, 1000),
            0,
            "connector-throughput",
        )
        result["profile"] = "bench/profiles/connector-throughput.txt"
    return result


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-tp-") as tmp:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
        print(json.dumps(run(Path(tmp), n, "--profile" in sys.argv), indent=1))
