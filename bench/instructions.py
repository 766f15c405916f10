"""Instructions per state request, counted by valgrind's callgrind instead of timed.

``python -m bench.instructions [N] [TARGET ...] [NAME=VALUE ...]`` (targets: ``connector``,
``baseline``, ``baseline-qos1``; default all three). Each target runs as a process under
``valgrind --tool=callgrind`` against an emulator process and a mosquitto of its own (neither
counted). After a warm-up, the counters are zeroed (``callgrind_control -z``), ``N`` state
requests are sent one at a time as in the latency benchmark, and the counters dumped; then
the same wall time with no request, to subtract what the process does idle (keepalive,
timers). Prints the instructions per request as JSON. ``NAME=VALUE`` goes into the
target's environment (e.g. ``LOG_LEVEL=WARNING`` to see what the log lines cost).

Why: on this shared 2-core machine wall time drifts by 2x from minute to minute, while an
instruction count is the same from run to run within a fraction of a percent, whatever
else runs. It counts the CPU work of the process only: waits (the broker, Ankaios, the
scheduler) are not in it, so it compares versions of one connector, not latency.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.client import Client
from bench.common import (
    Mosquitto,
    Proc,
    connector_env,
    python_module,
    spawn,
    start_emulator,
    stop_all,
)
from bench.latency import STATE_PAYLOAD, wait_answering, wait_online
from fleet_connector.mqtt.topics import Operation, Topics

TARGETS = {
    "connector": ["fleet_connector"],
    "baseline": ["bench.tutorial_connector", "--qos", "0"],
    "baseline-qos1": ["bench.tutorial_connector", "--qos", "1"],
}
WARMUP = 30


def _control(pid: int, flag: str) -> None:
    subprocess.run(
        ["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=120
    )


def _dumped(workdir: Path, pid: int, seen: set[Path]) -> int:
    """Total instructions (Ir) of the newest dump of ``pid`` not read before."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = sorted(set(workdir.glob(f"callgrind.out.{pid}.*")) - seen)
        if new:
            path = new[-1]
            seen.add(path)
            for _ in range(100):
                match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(), re.M)
                if match:
                    return int(match.group(1))
                time.sleep(0.1)
        time.sleep(0.1)
    raise TimeoutError(f"no callgrind dump of {pid}")


def measure(
    workdir: Path, target: str, samples: int, env: dict[str, str] | None = None
) -> dict[str, float]:
    broker = Mosquitto(workdir / f"mosquitto-{target}").start()
    procs: list[Proc] = []
    client: Client | None = None
    try:
        emulator, ci = start_emulator(workdir, f"emulator-{target}")
        procs.append(emulator)
        vin = f"ins{uuid.uuid4().hex[:6]}"
        topics = Topics(vin)
        client = Client(broker.port)
        client.subscribe(f"{topics.base}/#")
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={workdir}/callgrind.out.%p",
            *python_module(*TARGETS[target]),
        ]
        proc = spawn(
            f"{target}-{vin}", argv, workdir, connector_env(vin, broker.port, ci, **(env or {}))
        )
        procs.append(proc)
        if target == "connector":
            wait_online(client, topics, timeout=300)
            request = lambda i: (  # noqa: E731
                topics.request(Operation.STATE, f"w{i}"),
                topics.response(Operation.STATE, f"w{i}"),
            )
        else:
            wait_answering(client, topics, timeout=300)
            request = lambda i: (  # noqa: E731
                topics.request(Operation.STATE),
                topics.response(Operation.STATE),
            )
        for i in range(WARMUP):
            client.call(*request(i), STATE_PAYLOAD)
        seen: set[Path] = set()
        _control(proc.pid, "-z")
        started = time.monotonic()
        for i in range(WARMUP, WARMUP + samples):
            reply, _ = client.call(*request(i), STATE_PAYLOAD)
            if reply.startswith(b'{"error"'):
                raise RuntimeError(f"{target}: {reply[:200]!r}")
        took = time.monotonic() - started
        _control(proc.pid, "-d")
        busy = _dumped(workdir, proc.pid, seen)
        _control(proc.pid, "-z")
        time.sleep(took)
        _control(proc.pid, "-d")
        idle = _dumped(workdir, proc.pid, seen)
        return {
            "requests": samples,
            "seconds_under_valgrind": round(took, 1),
            "instructions_per_request": round(busy / samples),
            "idle_instructions_same_time": idle,
            "net_instructions_per_request": round((busy - idle) / samples),
        }
    finally:
        stop_all(client, procs, broker)


def main(argv: list[str]) -> None:
    samples = int(argv[0]) if argv and argv[0].isdigit() else 200
    env = dict(a.split("=", 1) for a in argv if "=" in a)  # e.g. LOG_LEVEL=WARNING
    targets = [a for a in argv if not a.isdigit() and "=" not in a] or list(TARGETS)
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        result = {t: measure(Path(tmp) / t, t, samples, env) for t in targets}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
