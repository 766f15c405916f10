"""Round trips: a bare MQTT echo, then state and apply requests through one connector.

All three on the same loopback mosquitto (set_tcp_nodelay), every client with TCP_NODELAY.
The connector and the emulator (simulate runtime) run as processes of their own, as in a
car; requests go one at a time (the next after the reply), QoS 1 both ways.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.client import Client
from bench.common import (
    MANIFESTS,
    PROFILES,
    Mosquitto,
    Proc,
    connector_env,
    percentile,
    python_module,
    spawn,
    start_emulator,
    wait_line,
)
from fleet_connector.topics import Operation, Topics

STATE_PAYLOAD = b'["workloadStates"]'
# Alternating two manifests makes every apply real work: the sender is replaced each time.
APPLY_PAYLOADS = [
    (MANIFESTS / "vehicle-data-sender.yaml").read_bytes(),
    (MANIFESTS / "config.yaml").read_bytes(),
]


@dataclass
class Sample:
    name: str
    seconds: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.seconds, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.seconds, 99) * 1000

    def summary(self) -> dict[str, float | int]:
        return {
            "n": len(self.seconds),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "mean_ms": round(sum(self.seconds) / len(self.seconds) * 1000, 3),
        }


def echo_round_trips(client: Client, samples: int, warmup: int) -> Sample:
    client.subscribe("echo/bench/resp/+")
    run = uuid.uuid4().hex[:6]
    times: list[float] = []
    for i in range(warmup + samples):
        _, seconds = client.call(
            f"echo/bench/req/{run}-{i}", f"echo/bench/resp/{run}-{i}", STATE_PAYLOAD
        )
        if i >= warmup:
            times.append(seconds)
    return Sample("echo", times)


def wait_online(client: Client, topics: Topics, timeout: float = 30.0) -> float:
    """Waits for the car's presence to say online with Ankaios connected; returns when."""
    client.subscribe(topics.status)
    while True:
        payload, arrived = client.expect(topics.status, timeout)
        status = json.loads(payload)
        if status.get("status") == "online" and status.get("ankaios") == "connected":
            return arrived


def connector_round_trips(
    client: Client, topics: Topics, operation: Operation, samples: int, warmup: int
) -> Sample:
    run = uuid.uuid4().hex[:6]
    times: list[float] = []
    for i in range(warmup + samples):
        request_id = f"{run}-{i}"
        payload = STATE_PAYLOAD if operation is Operation.STATE else APPLY_PAYLOADS[i % 2]
        reply, seconds = client.call(
            topics.request(operation, request_id), topics.response(operation, request_id), payload
        )
        if reply.startswith(b'{"error"'):
            raise RuntimeError(f"{operation} failed: {reply[:300]!r}")
        if i >= warmup:
            times.append(seconds)
    return Sample(operation.name.lower(), times)


def ankaios_round_trips(workdir: Path, samples: int, warmup: int) -> tuple[Sample, Sample]:
    """State requests and applies straight through the control interface, no MQTT.

    The connector's own classes (ControlInterface, Ankaios) in this process against an
    emulator process of its own, manifests parsed beforehand: the Ankaios side's share of a
    connector round trip (for the emulator, a Python stand-in, most of it is its own work).
    """
    from fleet_connector.ankaios import Ankaios
    from fleet_connector.control_interface import ControlInterface
    from fleet_connector.manifest import parse_manifest

    emulator, ci_path = start_emulator(workdir, "emulator-direct")
    ci = ControlInterface(ci_path)
    try:
        ci.start()
        if not ci.wait_connected(10):
            raise RuntimeError(f"control interface not connected: {ci.last_error}")
        ankaios = Ankaios(ci, 5.0)
        times: list[float] = []
        for i in range(warmup + samples):
            started = time.perf_counter()
            ankaios.states([["workloadStates"]])  # the path the connector takes
            if i >= warmup:
                times.append(time.perf_counter() - started)
        manifests = [parse_manifest(p) for p in APPLY_PAYLOADS]
        apply_times: list[float] = []
        for i in range(warmup + samples // 2):
            started = time.perf_counter()
            ankaios.apply(manifests[i % 2])
            if i >= warmup:
                apply_times.append(time.perf_counter() - started)
        return Sample("ankaios", times), Sample("ankaios-apply", apply_times)
    finally:
        ci.stop()
        emulator.stop()


def start_connector(
    workdir: Path, port: int, vin: str, ci: Path, profile: str | None = None, **env: str
) -> Proc:
    argv = (
        python_module("bench.profiled", str(PROFILES / profile), "fleet_connector")
        if profile
        else python_module("fleet_connector")
    )
    return spawn(f"connector-{vin}", argv, workdir, connector_env(vin, port, ci, **env))


def run(workdir: Path, samples: int, profile: bool) -> dict[str, object]:
    broker = Mosquitto(workdir / "mosquitto").start()
    procs: list[Proc] = []
    client: Client | None = None
    try:
        echo = spawn(
            "echo", python_module("bench.echo", str(broker.port)), workdir, stdout_pipe=True
        )
        procs.append(echo)
        wait_line(echo, "ready", 20)
        client = Client(broker.port)
        warmup = max(10, samples // 20)
        echo_sample = echo_round_trips(client, samples, warmup)

        emulator, ci = start_emulator(workdir)
        procs.append(emulator)
        vin = f"lat{uuid.uuid4().hex[:6]}"
        topics = Topics(vin)
        client.subscribe(f"{topics.base}/+/resp/+", f"{topics.base}/+/+/resp/+")
        connector = start_connector(workdir, broker.port, vin, ci)
        procs.append(connector)
        wait_online(client, topics)
        state = connector_round_trips(client, topics, Operation.STATE, samples, warmup)
        apply = connector_round_trips(client, topics, Operation.APPLY, samples // 2, warmup)
        direct, direct_apply = ankaios_round_trips(workdir, samples, warmup)
        result: dict[str, object] = {
            "echo": echo_sample.summary(),
            "ankaios_direct": direct.summary(),
            "ankaios_direct_apply": direct_apply.summary(),
            "state": state.summary(),
            "apply": apply.summary(),
        }
        connector.stop()
        if profile:
            # The same load again under cProfile (all threads), for where the time goes.
            pvin = f"prof{uuid.uuid4().hex[:6]}"
            ptopics = Topics(pvin)
            client.subscribe(f"{ptopics.base}/+/resp/+", f"{ptopics.base}/+/+/resp/+")
            profiled = start_connector(workdir, broker.port, pvin, ci, profile="connector-latency")
            procs.append(profiled)
            wait_online(client, ptopics)
            connector_round_trips(client, ptopics, Operation.STATE, samples, warmup)
            connector_round_trips(client, ptopics, Operation.APPLY, samples // 2, warmup)
            profiled.stop(timeout=15)
            result["profile"] = "bench/profiles/connector-latency.txt"
        return result
    finally:
        if client is not None:
            client.close()
        for proc in reversed(procs):
            proc.stop()
        broker.stop()


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        started = time.monotonic()
        print(json.dumps(run(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 200, True)))
        print(f"{time.monotonic() - started:.1f} s")
