"""A rollout through fleet-server to fleet-sim's cars (issue #23 item 2), if the service has
the rollout engine (issue #22, ``fleet_server.rollouts``); without it, the gap is reported.

Two fleet-sim processes on one mosquitto: the canary, 1 % of the fleet, whose cars do
what they are told (a canary car that fails aborts a rollout by design), and the rest with
5 % of applies crashing after start, reply latency ``uniform:0.01:0.2`` and churn (0.1 %
of the fleet a second goes offline for 5 to 30 s). One ``fleet-server`` on SQLite;
``POST /api/v1/rollouts`` applies ``manifests/vehicle-data-sender.yaml`` to every car: the
canary, then waves of 10 %, soak time 1 s, abort only above 20 % failures. Measured: from
the POST until the rollout is done, its cars by state, and the server's CPU per car.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import MANIFESTS, Mosquitto, Proc, cpu_seconds
from bench.fleet_server import Server, create_token
from bench.sim_scale import start as start_sim

DEFAULT_CARS = 20_000
FINISHED = ("done", "done-with-failures", "aborted")
GAP = (
    "no rollout engine in this fleet-server (fleet_server.rollouts, issue #22, branch "
    "h22-rollouts): not measured"
)


def available() -> bool:
    return importlib.util.find_spec("fleet_server.rollouts") is not None


def run(workdir: Path, cars: int = DEFAULT_CARS, timeout: float = 1800) -> dict[str, Any]:
    if not available():
        return {"gap": GAP}
    canary = max(1, cars // 100)
    broker = Mosquitto(workdir / "mosquitto", max_queued=0).start()
    sims: list[Proc] = []
    server: Server | None = None
    try:
        sim, _, _ = start_sim(workdir / "canary", broker.port, canary, prefix="CAN")
        sims.append(sim)
        sim, _, _ = start_sim(
            workdir / "fleet",
            broker.port,
            cars - canary,
            "--crash-ratio",
            "0.05",
            "--latency",
            "uniform:0.01:0.2",
            "--churn",
            str(max(1, cars // 1000)),
            "--client-prefix",
            "fleet-sim-fleet",
        )
        sims.append(sim)
        database = f"sqlite:///{workdir / 'fleet.db'}"
        server = Server(
            workdir, database, broker.port, token=create_token(database, "operator")
        ).start()
        server.wait_ready(300)
        listed_s = server.wait_online(int(cars * 0.97), 300)
        spec = {
            "name": "bench",
            "manifest": (MANIFESTS / "vehicle-data-sender.yaml").read_text(),
            "cars": {"selector": "", "all": True},
            "canary": {"vins": f"CAN{0:06d}-CAN{canary - 1:06d}"},
            "batchSize": "10%",
            "soakTime": 1,
            "progressDeadline": 300,
            "onFailure": "stop",
            "abort": {"failed": "20%", "timeout": "20%", "noReply": "20%", "rejected": "20%"},
        }
        cpu_before = cpu_seconds(server.pid)
        started = time.monotonic()
        answer = server.session.post(f"{server.url}/api/v1/rollouts", json=spec, timeout=300)
        if answer.status_code != 201:
            raise RuntimeError(f"POST /api/v1/rollouts: {answer.status_code} {answer.text}")
        rollout = answer.json()["id"]
        state, counts = "", {}
        while time.monotonic() - started < timeout:
            listing = server.get("/api/v1/rollouts", limit=1).json()
            found = next((r for r in listing["items"] if r["id"] == rollout), {})
            state, counts = found.get("state", ""), found.get("counts", {})
            if state in FINISHED:
                break
            time.sleep(2)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        return {
            "cars": cars,
            "canary": canary,
            "all_listed_s": round(listed_s, 1),
            "state": state,
            "counts": counts,
            "seconds": round(elapsed, 1),
            "finished": state in FINISHED,
            "server_cpu_s": round(cpu, 1),
            "server_cpu_ms_per_car": round(cpu / cars * 1000, 2),
        }
    finally:
        if server is not None:
            server.stop()
        for sim in sims:
            sim.stop(30)
        broker.stop()


def rows(result: Any) -> list[tuple[str, str, str, str]]:
    if not isinstance(result, dict):
        return []
    if "gap" in result:
        figure = "fleet-server rollout to simulated cars (1 % canary, 5 % failures, churn)"
        return [(figure, result["gap"], "-", "gap")]
    if "seconds" not in result:
        return []
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(result["counts"].items()))
    return [
        (
            f"fleet-server rollout to {result['cars']:,} simulated cars (1 % canary, 5 % "
            "failures, churn): until done; cars by state; server CPU per car",
            f"{result['seconds']:.0f} s ({result['state'] or 'not finished'}); {counts}; "
            f"{result['server_cpu_ms_per_car']} ms",
            "-",
            "",
        )
    ]


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CARS
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        print(json.dumps(run(Path(tmp), count), indent=1))
