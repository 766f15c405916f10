"""Round trips: a bare MQTT echo, then state and apply requests through one connector.

All three on the same loopback mosquitto (set_tcp_nodelay), every client with TCP_NODELAY.
The connector and the emulator (simulate runtime) run as processes of their own, as in a
car; requests go one at a time (the next after the reply), QoS 1 both ways.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    stop_all,
    wait_line,
)
from fleet_connector.mqtt.topics import Operation, Topics

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
    from fleet_connector.ankaios.client import Ankaios
    from fleet_connector.ankaios.control_interface import ControlInterface
    from fleet_connector.ankaios.manifest import parse_manifest

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
    workdir: Path,
    port: int,
    vin: str,
    ci: Path,
    *,
    profile: str | None = None,
    module: str = "fleet_connector",
    **env: str,
) -> Proc:
    """The connector (or ``module``, e.g. the single-loop prototype) as a process of its own."""
    argv = (
        python_module("bench.profiled", str(PROFILES / profile), module)
        if profile
        else python_module(module)
    )
    return spawn(f"connector-{vin}", argv, workdir, connector_env(vin, port, ci, **env))


def wait_answering(client: Client, topics: Topics, timeout: float = 30.0) -> None:
    """For a connector without presence (the baseline): until a state request is answered."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.call(topics.request(Operation.STATE), topics.response(Operation.STATE), b"[]")
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


@dataclass
class Target:
    """Something that answers requests: the echo, our connector, the baseline."""

    name: str
    request: Callable[[int], tuple[str, str]]
    """Request and reply topic of round ``i``."""
    check: bool = True


def interleaved(
    client: Client, targets: list[Target], payloads: list[bytes], samples: int, warmup: int
) -> dict[str, Sample]:
    """Round by round, one request to each target in turn; the order rotates every round.

    The machine's load changes from second to second; interleaving gives every target the
    same share of it, so ratios between them are meaningful even when absolute times drift.
    """
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    for i in range(warmup + samples):
        shift = i % len(targets)
        for target in targets[shift:] + targets[:shift]:
            topic, reply_topic = target.request(i)
            reply, seconds = client.call(topic, reply_topic, payloads[i % len(payloads)])
            if target.check and reply.startswith(b'{"error"'):
                raise RuntimeError(f"{target.name} failed: {reply[:300]!r}")
            if i >= warmup:
                times[target.name].append(seconds)
    return {name: Sample(name, values) for name, values in times.items()}


def _with_id(topics: Topics, operation: Operation, run: str) -> Callable[[int], tuple[str, str]]:
    def request(i: int) -> tuple[str, str]:
        return topics.request(operation, f"{run}-{i}"), topics.response(operation, f"{run}-{i}")

    return request


def _plain(topics: Topics, operation: Operation) -> Callable[[int], tuple[str, str]]:
    # The tutorial's connector knows only the plain topics; one request at a time keeps
    # replies apart.
    return lambda i: (topics.request(operation), topics.response(operation))


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """The figures issue #12 sets targets for, from one interleaved run."""
    state, apply, echo = result["state"], result["apply"], result["echo"]
    base_state, base_apply = result["baseline_state"], result["baseline_apply"]
    return {
        "state_p50_vs_baseline": round(state["p50_ms"] / base_state["p50_ms"], 3),
        "state_p50_over_echo_ms": round(state["p50_ms"] - echo["p50_ms"], 3),
        "state_p99_vs_baseline": round(state["p99_ms"] / base_state["p99_ms"], 3),
        "apply_p50_vs_baseline": round(apply["p50_ms"] / base_apply["p50_ms"], 3),
        "apply_p99_vs_baseline": round(apply["p99_ms"] / base_apply["p99_ms"], 3),
        "baseline_state_p50_over_echo_ms": round(base_state["p50_ms"] - echo["p50_ms"], 3),
        "single_loop_state_p50_vs_baseline": round(
            result["single_loop_state"]["p50_ms"] / base_state["p50_ms"], 3
        ),
        "single_loop_state_p50_over_echo_ms": round(
            result["single_loop_state"]["p50_ms"] - echo["p50_ms"], 3
        ),
        "single_loop_apply_p50_vs_baseline": round(
            result["single_loop_apply"]["p50_ms"] / base_apply["p50_ms"], 3
        ),
    }


def start_baseline(workdir: Path, port: int, vin: str, ci: Path) -> Proc:
    return spawn(
        f"baseline-{vin}",
        python_module("bench.tutorial_connector"),
        workdir,
        connector_env(vin, port, ci),
    )


def run(workdir: Path, samples: int, profile: bool) -> dict[str, object]:
    broker = Mosquitto(workdir / "mosquitto").start()
    procs: list[Proc] = []
    client: Client | None = None
    try:
        for qos, protocol in ((1, "5"), (0, "3.1.1")):
            echo = spawn(
                f"echo-{qos}",
                python_module("bench.echo", str(broker.port), protocol, str(qos)),
                workdir,
                stdout_pipe=True,
            )
            procs.append(echo)
            wait_line(echo, "ready", 20)
        client = Client(broker.port)
        client.subscribe("echo/+/resp/+")
        warmup = max(10, samples // 20)

        # Our connector and the baseline, each with an emulator process of its own.
        emulator, ci = start_emulator(workdir)
        procs.append(emulator)
        base_emulator, base_ci = start_emulator(workdir, "emulator-baseline")
        procs.append(base_emulator)
        loop_emulator, loop_ci = start_emulator(workdir, "emulator-single-loop")
        procs.append(loop_emulator)
        run_id = uuid.uuid4().hex[:6]
        vin, base_vin, loop_vin = f"lat{run_id}", f"base{run_id}", f"loop{run_id}"
        topics, base_topics, loop_topics = Topics(vin), Topics(base_vin), Topics(loop_vin)
        for t in (topics, base_topics, loop_topics):
            client.subscribe(f"{t.base}/#")
        connector = start_connector(workdir, broker.port, vin, ci)
        procs.append(connector)
        baseline = start_baseline(workdir, broker.port, base_vin, base_ci)
        procs.append(baseline)
        single_loop = spawn(
            f"single-loop-{loop_vin}",
            python_module("bench.single_loop"),
            workdir,
            connector_env(loop_vin, broker.port, loop_ci),
        )
        procs.append(single_loop)
        wait_online(client, topics)
        wait_answering(client, base_topics)
        wait_answering(client, loop_topics)

        echo_target = Target(
            "echo", lambda i: (f"echo/q1/req/{run_id}-{i}", f"echo/q1/resp/{run_id}-{i}")
        )
        # The tutorial's MQTT (3.1.1, QoS 0 subscription and reply) without any work.
        echo_qos0 = Target(
            "echo_qos0", lambda i: (f"echo/q0/req/{run_id}-{i}", f"echo/q0/resp/{run_id}-{i}")
        )
        state_runs = interleaved(
            client,
            [
                echo_target,
                echo_qos0,
                Target("state", _with_id(topics, Operation.STATE, run_id)),
                Target("baseline_state", _plain(base_topics, Operation.STATE)),
                Target("single_loop_state", _with_id(loop_topics, Operation.STATE, run_id)),
            ],
            [STATE_PAYLOAD],
            samples,
            warmup,
        )
        apply_runs = interleaved(
            client,
            [
                Target("apply", _with_id(topics, Operation.APPLY, run_id)),
                Target("baseline_apply", _plain(base_topics, Operation.APPLY)),
                Target("single_loop_apply", _with_id(loop_topics, Operation.APPLY, run_id)),
            ],
            APPLY_PAYLOADS,
            samples // 2,
            warmup,
        )
        direct, direct_apply = ankaios_round_trips(workdir, samples, warmup)
        result: dict[str, Any] = {
            **{name: sample.summary() for name, sample in state_runs.items()},
            **{name: sample.summary() for name, sample in apply_runs.items()},
            "ankaios_direct": direct.summary(),
            "ankaios_direct_apply": direct_apply.summary(),
        }
        result["ratios"] = ratios(result)
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
        stop_all(client, procs, broker)


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        started = time.monotonic()
        print(json.dumps(run(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 200, True)))
        print(f"{time.monotonic() - started:.1f} s")
