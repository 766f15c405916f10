"""What every benchmark shares: brokers it owns, processes it starts, /proc readings, stats."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
PROFILES = REPO / "bench" / "profiles"
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = int(s.getsockname()[1])
    if port == 1883:  # never the well-known port
        return free_port()
    return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# -- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """A child process this run started; stopped by its pid only."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    env: Mapping[str, str] | None = None,
    stdout_pipe: bool = False,
) -> Proc:
    """Starts ``argv`` with the repository as working directory; output to a log file."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=full_env,
            stdout=subprocess.PIPE if stdout_pipe else out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    return Proc(name, popen, log)


def stop_all(client: Closable | None, procs: list[Proc], *brokers: Stoppable) -> None:
    """Ends a benchmark: its MQTT client, then its processes newest first, then brokers."""
    if client is not None:
        client.close()
    for proc in reversed(procs):
        proc.stop()
    for broker in brokers:
        broker.stop()


class Closable(Protocol):
    def close(self) -> None: ...


class Stoppable(Protocol):
    def stop(self) -> None: ...


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_line(proc: Proc, wanted: str, timeout: float) -> None:
    """Reads the child's stdout until a line equals ``wanted``."""
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.popen.stdout.fileno(), True)
    while time.monotonic() < deadline:
        line = proc.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"{proc.name} ended before saying {wanted!r}:\n{proc.tail()}")
        if line.decode(errors="replace").strip() == wanted:
            return
    raise TimeoutError(f"{proc.name} did not say {wanted!r} within {timeout}s")


def start_emulator(workdir: Path, name: str = "emulator") -> tuple[Proc, Path]:
    """An ankaios-emulator process (simulate runtime); returns it and its FIFO directory."""
    ci = workdir / f"{name}-ci"
    proc = spawn(
        name,
        python_module("ankaios_emulator", "--control-interface", str(ci), "--no-pacing", "-q"),
        workdir,
        stdout_pipe=True,
    )
    wait_line(proc, "ready", 20)
    return proc, ci


def connector_env(
    vin: str, port: int, control_interface: Path, protocol: str = "5", **extra: str
) -> dict[str, str]:
    return {
        "VIN": vin,
        "MQTT_BROKER_ADDR": HOST,
        "MQTT_BROKER_PORT": str(port),
        "MQTT_PROTOCOL": protocol,
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(control_interface),
        **extra,
    }


# -- brokers ------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def nats_binary() -> str | None:
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
    return text[0] if text else "unknown"


@dataclass
class Mosquitto:
    """A mosquitto on a free loopback port, configured for load (see bench/README.md)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    max_inflight: int = 0
    max_queued: int = 100_000
    """Per client; 0: no limit (what a fleet-server's broker needs, docs/fleet-server.md)."""
    extra: str = ""
    """More configuration, e.g. a bridge (``connection`` ...), appended at the end."""
    proc: Proc | None = None

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        config.write_text(
            f"{user}"
            "per_listener_settings false\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            f"max_queued_messages {self.max_queued}\n"
            f"max_inflight_messages {self.max_inflight}\n"
            "log_dest none\n"
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            f"{self.extra}"
        )
        self.proc = spawn("mosquitto", [mosquitto_binary(), "-c", str(config)], self.workdir)
        wait_for_port(self.port)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


@dataclass
class NatsCluster:
    """Three nats-server nodes on loopback, routed, JetStream on, MQTT on each node."""

    workdir: Path
    nodes: int = 3
    mqtt_options: str = ""
    """Extra settings inside the mqtt block, e.g. ``consumer_replicas: 1``."""
    client_ports: list[int] = field(default_factory=list)
    cluster_ports: list[int] = field(default_factory=list)
    mqtt_ports: list[int] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        binary = nats_binary()
        if binary is None:
            raise RuntimeError("nats-server is not installed (make bench installs it)")
        self.client_ports = [free_port() for _ in range(self.nodes)]
        self.cluster_ports = [free_port() for _ in range(self.nodes)]
        self.mqtt_ports = [free_port() for _ in range(self.nodes)]
        routes = ", ".join(f"nats-route://{HOST}:{p}" for p in self.cluster_ports)
        for i in range(self.nodes):
            node = self.workdir / f"n{i + 1}"
            node.mkdir(parents=True, exist_ok=True)
            config = node / "nats.conf"
            config.write_text(
                f"server_name: n{i + 1}\n"
                f"listen: {HOST}:{self.client_ports[i]}\n"
                f"jetstream {{ store_dir: {node / 'js'}, max_memory_store: 256MB,"
                " max_file_store: 1GB }\n"
                f"cluster {{ name: bench, listen: {HOST}:{self.cluster_ports[i]},"
                f" routes: [{routes}] }}\n"
                f"mqtt {{ listen: {HOST}:{self.mqtt_ports[i]}, {self.mqtt_options} }}\n"
            )
            self.procs.append(spawn(f"nats-n{i + 1}", [binary, "-c", str(config)], node))
        for port in self.mqtt_ports:
            wait_for_port(port, timeout)
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
