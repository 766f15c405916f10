"""Exactly once across instances: two fleet-server processes on one PostgreSQL; the one
carrying a rollout out is SIGKILLed mid-wave and the other takes it over within the lease
time, asks the cars in flight again with the same request ids, and no car gets the change
twice. The cars answer a repeat with nothing (as older connectors do once the reply went
out), so the outcome must come from their journal or from the first request's follow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from testkit import Broker, free_port
from testkit.postgres import PostgresCluster
from testkit.rollouts import MANIFEST, prefix, states
from testkit.scripted import ScriptedCar
from testkit.server import make_token, wait_until

from fleet_connector.requests.signatures import SigningKey

LEASE = 2.0


class Instance:
    def __init__(self, name: str, database: str, broker: Broker, log: Path, *extra: str) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet_server",
                "--database",
                database,
                "--listen",
                self.url.removeprefix("http://"),
                "--broker-addr",
                broker.host,
                "--broker-port",
                str(broker.port),
                "--instance",
                name,
                "--lease-time",
                str(LEASE),
                "--poll-interval",
                "0.1",
                "--flush-interval",
                "0.05",
                "--request-timeout",
                "5",
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(self._ready, timeout=30, interval=0.1)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"fleet-server {self.name} exited {self.process.returncode}")
        try:
            return requests.get(self.url + "/readyz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def call(self, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def instances(
    pg_cluster: PostgresCluster, broker: Broker, tmp_path: Path
) -> Iterator[tuple[list[Instance], str]]:
    database = pg_cluster.create_database()
    token = make_token(database, "ops", "operator")
    key = tmp_path / "rollouts.key"
    key.write_text(SigningKey.generate("rollouts-2026").to_text())
    started = [
        Instance(n, database, broker, tmp_path / f"{n}.log", "--sign-key", str(key))
        for n in ("alpha", "beta")
    ]
    yield started, token
    for each in started:
        each.stop()


@pytest.fixture
def scripted(broker: Broker) -> Iterator[Callable[..., ScriptedCar]]:
    made: list[ScriptedCar] = []

    def make(vin: str, **options: Any) -> ScriptedCar:
        made.append(ScriptedCar(broker, vin, **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


def _kinds(received: list[tuple[str, str]], request_id: str) -> list[str]:
    """What a car was asked about ``request_id``: the apply itself, or a history read."""
    found = []
    for operation, rid in received:
        if operation == "manifest/apply" and rid == request_id:
            found.append("apply")
        elif operation == "history" and rid.startswith(f"{request_id}-history-"):
            found.append("history")
        else:
            found.append(f"{operation} {rid}")
    return found


def test_an_instance_killed_mid_wave_is_taken_over_and_no_car_gets_it_twice(
    instances: tuple[list[Instance], str], scripted: Callable[..., ScriptedCar]
) -> None:
    (alpha, beta), token = instances
    p = prefix()
    # The first wave's outcomes: one known before the takeover, one only after it.
    delays = [1.0, 5.0, 0.2, 0.2]
    fleet = [
        scripted(f"{p}{i}", delay=delay, repeats="silent") for i, delay in enumerate(delays, 1)
    ]
    for each in fleet:
        wait_until(
            lambda each=each: (
                alpha.call("GET", f"/api/v1/cars/{each.vin}", token).status_code == 200
            )
        )
    body = {"manifest": MANIFEST, "cars": {"vins": f"{p}1-{p}4"}, "batchSize": 2}
    created = alpha.call("POST", "/api/v1/rollouts", token, json=body)
    assert created.status_code == 201, created.text
    rollout_id = created.json()["id"]
    path = f"/api/v1/rollouts/{rollout_id}"

    def first_wave_in_flight() -> dict[str, Any] | None:
        found: dict[str, Any] = alpha.call("GET", path, token).json()
        sent = [c for c in found["cars"] if c["state"] == "sent"]
        return found if len(sent) == 2 and found["owner"] else None

    rollout = wait_until(first_wave_in_flight, timeout=15)
    owner = {"alpha": alpha, "beta": beta}[rollout["owner"]]
    survivor = beta if owner is alpha else alpha
    in_flight = {c["vin"]: c["request_id"] for c in rollout["cars"] if c["state"] == "sent"}
    owner.process.send_signal(signal.SIGKILL)
    owner.process.wait(10)

    def done() -> dict[str, Any] | None:
        found: dict[str, Any] = survivor.call("GET", path, token).json()
        return found if found["state"] == "done" else None

    rollout = wait_until(done, timeout=LEASE + 25)
    assert rollout["owner"] is None  # released when done
    assert set(states(rollout).values()) == {"succeeded"}
    for each in fleet:
        assert len(each.applied()) == 1, (each.vin, each.received)
    assert sorted(in_flight) == [fleet[0].vin, fleet[1].vin]
    early, late = (in_flight[c.vin] for c in fleet[:2])
    # Known before the takeover: the journal answered, nothing was sent again.
    assert _kinds(fleet[0].received, early) == ["apply", "history"]
    # Still being followed: sent again with the same id, carried out once, outcome awaited.
    assert _kinds(fleet[1].received, late) == ["apply", "history", "apply"]
    assert fleet[1].applied() == [late]
    # Signed once for the attempt, and sent again byte for byte (the car's journal knows a
    # request by its id and bytes); each car's signature its own.
    first, _, again = fleet[1].payloads
    assert first == again and first.startswith(b"ANKAIOS-SIGNED-REQUEST-V1\n")
    assert b"target: " + fleet[1].vin.encode() + b"\n" in first
    assert len({c.payloads[0] for c in fleet}) == len(fleet)
    audit = survivor.call("GET", "/api/v1/audit?limit=1000", token).json()["items"]
    takeovers = [e for e in audit if e["action"] == "rollout.takeover"]
    assert [(e["detail"]["from"], e["detail"]["to"]) for e in takeovers] == [
        (owner.name, survivor.name)
    ]
    sent = [e for e in audit if e["action"] == "rollout.car.sent"]
    assert sorted(v for e in sent for v in e["vins"]) == sorted(c.vin for c in fleet)
