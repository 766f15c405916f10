"""A fleet of N cars driven by fleetctl: on one mosquitto, and on a 3-node NATS cluster.

The cars run in a few host processes (``bench.fleet_host``: an Emulator and a Connector per
car, in-process), one per core. fleetctl runs as the operator would run it, a process per
command: ``fleetctl apply FILE --vins 1-N -o json``. Its wall time includes Python's start;
``slowest_car_s`` is fleetctl's own per-car figure (publish to reply) for the slowest car.
The broker's share is its CPU time (from /proc) during the apply.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    MANIFESTS,
    REPO,
    Mosquitto,
    NatsCluster,
    Proc,
    cpu_seconds,
    median,
    python_module,
    rss_mib,
    spawn,
    thread_count,
)

APPLY_FILES = [MANIFESTS / "vehicle-data-sender.yaml", MANIFESTS / "config.yaml"]


def start_hosts(
    workdir: Path, cars: int, hosts: int, *, ports: list[int], protocol: str, timeout: float
) -> tuple[list[Proc], float]:
    procs: list[Proc] = []
    per_host = -(-cars // hosts)
    started = time.monotonic()
    for h in range(hosts):
        first = 1 + h * per_host
        count = min(per_host, cars - h * per_host)
        if count <= 0:
            break
        procs.append(
            spawn(
                f"fleet-host-{h}",
                python_module(
                    "bench.fleet_host",
                    "--first", str(first),
                    "--count", str(count),
                    "--port", str(ports[h % len(ports)]),
                    "--protocol", protocol,
                    "--workdir", str(workdir / f"host-{h}"),
                    "--ready-timeout", str(timeout),
                ),
                workdir,
                stdout_pipe=True,
            )
        )  # fmt: skip
    deadline = started + timeout + 10
    try:
        for proc in procs:
            assert proc.popen.stdout is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([proc.popen.stdout], [], [], remaining)[0]:
                raise RuntimeError(f"{proc.name} not ready within {timeout:g} s")
            line = proc.popen.stdout.readline().decode().strip()
            if not line.startswith("ready"):
                raise RuntimeError(f"{proc.name} did not get ready:\n{proc.tail(30)}")
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs, time.monotonic() - started


# Above this many cars fleetctl sends in waves of WAVE cars (--batch-size): 1,000 cars
# simulated on 2 cores cannot all work at once (bench/README.md, "1,000 cars").
ALL_AT_ONCE_UP_TO = 250
WAVE = 100


def fleetctl(
    command: list[str], cars: int, port: int, protocol: str, timeout: float
) -> tuple[float, dict[str, Any], int]:
    """``fleetctl COMMAND --vins 1-N -o json`` as a process: wall time, its report, exit code."""
    waves = ["--batch-size", str(WAVE)] if cars > ALL_AT_ONCE_UP_TO else []
    argv = python_module(
        "fleetctl", *command, "--vins", f"1-{cars}", "-o", "json", *waves,
        "--broker-addr", "127.0.0.1", "--broker-port", str(port),
        "--mqtt-protocol", protocol, "--timeout", str(timeout),
    )  # fmt: skip
    started = time.perf_counter()
    waves_count = -(-cars // WAVE) if cars > ALL_AT_ONCE_UP_TO else 1
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, timeout=timeout * waves_count + 30, check=False
    )
    wall = time.perf_counter() - started
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {"error": done.stderr.decode(errors="replace")[-2000:]}
    return wall, report, done.returncode


def drive(
    hosts: list[Proc],
    broker_pids: list[int],
    *,
    cars: int,
    port: int,
    protocol: str,
    applies: int,
    timeout: float,
    applies_too: bool = True,
) -> dict[str, object]:
    """``applies`` rounds of fleetctl apply (unless ``applies_too`` is off) and state."""
    host_rss = sum(rss_mib(p.pid) for p in hosts)
    threads = sum(thread_count(p.pid) for p in hosts)
    before = [cpu_seconds(p.pid) for p in hosts]
    time.sleep(2.0)
    idle_cpu = sum(cpu_seconds(p.pid) for p in hosts) - sum(before)
    runs: list[dict[str, Any]] = []
    state_runs: list[dict[str, Any]] = []
    common: dict[str, Any] = {
        "broker_pids": broker_pids,
        "cars": cars,
        "port": port,
        "protocol": protocol,
        "timeout": timeout,
    }
    for i in range(applies):
        if applies_too:
            apply = ["apply", str(APPLY_FILES[i % 2])]
            runs.append(one_command(apply, hosts, **common))
        state = ["state", "workloadStates"]
        state_runs.append(one_command(state, hosts, **common))
    walls = [r["wall_s"] for r in runs] or [0.0]
    return {
        "cars": cars,
        "host_processes": len(hosts),
        "rss_mib_total": round(host_rss, 1),
        "rss_mib_per_car": round(host_rss / cars, 2),
        "threads_total": threads,
        "idle_cpu_percent_of_one_core": round(idle_cpu / 2.0 * 100, 1),
        "apply_wall_s_median": round(median(walls), 3),
        "all_ok": all(r["exit"] == 0 for r in runs + state_runs),
        "applies": runs,
        "state_wall_s_median": round(median([r["wall_s"] for r in state_runs]), 3),
        "states": state_runs,
    }


def one_command(
    command: list[str],
    hosts: list[Proc],
    *,
    broker_pids: list[int],
    cars: int,
    port: int,
    protocol: str,
    timeout: float,
) -> dict[str, Any]:
    broker_cpu = sum(cpu_seconds(pid) for pid in broker_pids)
    host_cpu = sum(cpu_seconds(p.pid) for p in hosts)
    wall, report, rc = fleetctl(command, cars, port, protocol, timeout)
    broker_delta = sum(cpu_seconds(pid) for pid in broker_pids) - broker_cpu
    host_delta = sum(cpu_seconds(p.pid) for p in hosts) - host_cpu
    seconds = [c["seconds"] for c in report.get("cars", []) if c.get("seconds") is not None]
    return {
        "wall_s": round(wall, 3),
        "exit": rc,
        "summary": report.get("summary", report.get("error")),
        "slowest_car_s": round(max(seconds), 3) if seconds else None,
        "broker_cpu_s": round(broker_delta, 3),
        "cars_cpu_s": round(host_delta, 3),
        "errors": sorted(
            {
                str((c.get("error") or {}).get("code"))
                for c in report.get("cars", [])
                if c.get("status") != "ok"
            }
        ),
    }


def fleet_on(
    workdir: Path,
    cars: int,
    hosts: int,
    applies: int,
    *,
    car_ports: list[int],
    operator_port: int,
    broker_pids: list[int],
    protocol: str,
    ready_timeout: float,
) -> dict[str, object]:
    """Starts the cars on ``car_ports``, drives them with fleetctl on ``operator_port``."""
    procs: list[Proc] = []
    try:
        procs, ready = start_hosts(
            workdir, cars, hosts, ports=car_ports, protocol=protocol, timeout=ready_timeout
        )
        result = drive(
            procs,
            broker_pids,
            cars=cars,
            port=operator_port,
            protocol=protocol,
            applies=applies,
            timeout=30,
        )
        result["fleet_ready_s"] = round(ready, 2)
        result["broker_rss_mib"] = round(sum(rss_mib(pid) for pid in broker_pids), 1)
        return result
    finally:
        for proc in procs:
            proc.stop()


def run_mosquitto(workdir: Path, cars: int, hosts: int, applies: int) -> dict[str, object]:
    broker = Mosquitto(workdir / "mosquitto").start()
    try:
        return fleet_on(
            workdir,
            cars,
            hosts,
            applies,
            car_ports=[broker.port],
            operator_port=broker.port,
            broker_pids=[broker.pid],
            protocol="5",
            ready_timeout=300,
        )
    finally:
        broker.stop()


def run_bridged(workdir: Path, cars: int, hosts: int, applies: int) -> dict[str, object]:
    """Cars on one mosquitto, fleetctl on another, the two bridged with MQTT 5.

    The shape of a regional broker tier: the cars' broker (the region) opens the bridge to
    the operator's broker and carries ``vehicle/#`` both ways at QoS 1.
    """
    operator = Mosquitto(workdir / "mosquitto-operator").start()
    region = Mosquitto(
        workdir / "mosquitto-region",
        # The bridge announces this as its MQTT 5 Receive Maximum, where 0 (mosquitto's
        # "unlimited") is a protocol error: the operator's broker would refuse the bridge.
        max_inflight=1000,
        extra=(
            "connection operator\n"
            f"address 127.0.0.1:{operator.port}\n"
            "bridge_protocol_version mqttv50\n"
            "cleansession true\n"
            "try_private true\n"
            "topic vehicle/# both 1\n"
        ),
    ).start()
    try:
        return fleet_on(
            workdir,
            cars,
            hosts,
            applies,
            car_ports=[region.port],
            operator_port=operator.port,
            broker_pids=[region.pid, operator.pid],
            protocol="5",
            ready_timeout=300,
        )
    finally:
        region.stop()
        operator.stop()


# NATS creates a JetStream consumer per QoS 1 subscription; with the default (replicated
# on 3 nodes, file storage) each takes ~0.4 s here, with these ~4 ms (see bench/README.md).
TUNED_MQTT = "consumer_replicas: 1, consumer_memory_storage: true"


def run_nats(
    workdir: Path, cars: int, hosts: int, applies: int, mqtt_options: str = TUNED_MQTT
) -> dict[str, object]:
    cluster = NatsCluster(workdir / "nats", mqtt_options=mqtt_options)
    try:
        started = time.monotonic()
        cluster.start()
        cluster_started = time.monotonic() - started
        # Cars on nodes 1 and 2, fleetctl on node 3: every request and reply crosses a route.
        result = fleet_on(
            workdir,
            cars,
            hosts,
            applies,
            car_ports=cluster.mqtt_ports[:2],
            operator_port=cluster.mqtt_ports[2],
            broker_pids=cluster.pids,
            protocol="3.1.1",
            ready_timeout=300,
        )
        result["cluster_start_s"] = round(cluster_started, 2)
        result["mqtt_options"] = mqtt_options or "defaults"
        return result
    finally:
        cluster.stop()


def run_state_only(workdir: Path, cars: int, hosts: int) -> dict[str, object]:
    """Cars on one mosquitto, ``fleetctl state`` only: what a fleet costs when nothing is
    started (an apply makes every car's emulator start a workload and send its events)."""
    broker = Mosquitto(workdir / "mosquitto").start()
    procs: list[Proc] = []
    try:
        procs, ready = start_hosts(
            workdir, cars, hosts, ports=[broker.port], protocol="5", timeout=300
        )
        result = drive(
            procs,
            [broker.pid],
            cars=cars,
            port=broker.port,
            protocol="5",
            applies=1,
            timeout=60,
            applies_too=False,
        )
        result["fleet_ready_s"] = round(ready, 2)
        return result
    finally:
        for proc in procs:
            proc.stop()
        broker.stop()


if __name__ == "__main__":
    import tempfile

    which = sys.argv[1] if len(sys.argv) > 1 else "mosquitto"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        hosts = min(2, os.cpu_count() or 1)
        if which == "state-only":
            hosts = max(hosts, -(-n // 100))
            print(json.dumps(run_state_only(Path(tmp), n, hosts), indent=1))
        elif which == "nats-default":
            print(json.dumps(run_nats(Path(tmp), n, hosts, 1, ""), indent=1))
        else:
            runner = run_nats if which == "nats" else run_mosquitto
            print(json.dumps(runner(Path(tmp), n, hosts, 2), indent=1))
