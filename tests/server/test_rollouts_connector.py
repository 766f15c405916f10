"""Rollouts against real connectors with STATE_DIR (the journal) and an emulated Ankaios:
a car that went offline while its change was in flight and came back ends ``succeeded``
(the resume defect of the local rollouts), and a crashing workload is rolled back through
the car's own journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker, MqttProbe, Requester
from testkit.counters import kept_counters
from testkit.live import ALL_LOGS, manifest, retained
from testkit.observe import update_requests
from testkit.rollouts import audit_actions, car, get, start, wait_car, wait_rollout
from testkit.server import Api, RunningServer, make_token, wait_until

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.signatures import SigningKey
from fleet_server.auth import ROLES

IMAGES = {
    "sim:1": ["sh", "-c", "exec sleep 120"],
    "crash:1": ["sh", "-c", "echo starting; echo 'error: INTERVAL must be > 0' >&2; exit 2"],
}


class Car:
    """An emulated Ankaios that outlives the connectors started on it (same STATE_DIR)."""

    def __init__(self, broker: Broker, vin: str, tmp_path: Path, **options: Any) -> None:
        self.broker = broker
        self.vin = vin
        self.options = options
        self.state_dir = tmp_path / "state"
        self.emulator = Emulator(
            control_interface=tmp_path / "ci",
            runtime="process",
            image_map=IMAGES,
            access=ALL_LOGS,
            pace_frames=False,
        ).start()
        self.connector: Connector | None = None

    def start(self) -> None:
        self.connector = Connector(
            Config(
                vin=self.vin,
                broker=BrokerSettings(host=self.broker.host, port=self.broker.port),
                control_interface=self.emulator.control_interface,
                client_id=f"fleet-connector-{self.vin}",
                state_dir=self.state_dir,
                **self.options,
            )
        )
        self.connector.start()
        assert self.connector.control_interface.wait_connected(10)
        assert self.connector.mqtt.wait_subscribed(10)

    def stop(self) -> None:
        if self.connector is not None:
            self.connector.stop()
            self.connector = None

    def close(self, probe: MqttProbe) -> None:
        self.stop()
        self.emulator.stop()
        for topic in retained(probe, f"vehicle/{self.vin}/#"):
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        probe.client.publish(
            f"vehicle/{self.vin}/status", b"", qos=1, retain=True
        ).wait_for_publish(5)


@pytest.fixture
def real(broker: Broker, vin: str, tmp_path: Path, probe: MqttProbe) -> Iterator[Car]:
    made = Car(broker, vin, tmp_path)
    made.start()
    yield made
    made.close(probe)


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, Path]:
    """An operator's signing key file and a car's TRUSTED_KEYS naming it."""
    signing = SigningKey.generate("rollouts-2026")
    key_file = tmp_path / "rollouts.key"
    key_file.write_text(signing.to_text())
    trusted = tmp_path / "trusted_keys"
    trusted.write_text(signing.trusted_line() + "\n")
    return key_file, trusted


def _api(database: str, server: RunningServer) -> Api:
    tokens = {role: make_token(database, f"{role}-token", role) for role in ROLES}
    return Api(server, database, tokens)


def _history(probe: MqttProbe, vin: str) -> list[dict[str, Any]]:
    # A new id each time: the connector answers a repeated one from its reply cache.
    ask = f"h-{uuid.uuid4().hex[:8]}"
    reply = Requester(probe, vin).call(Operation.HISTORY, json.dumps({"limit": 20}), ask)
    entries: list[dict[str, Any]] = reply["entries"]
    return entries


def test_resume_after_an_offline_car_came_back_shows_succeeded(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    real: Car,
    probe: MqttProbe,
) -> None:
    first = make_server(sqlite_url, instance="first")
    api = _api(sqlite_url, first)
    wait_until(lambda: api.get(f"/api/v1/cars/{real.vin}").status_code == 200)
    rollout_id = start(
        api, {"vins": [real.vin]}, soakTime=1, progressDeadline=20, onFailure="rollback"
    )
    rollout = wait_car(api, rollout_id, real.vin, "sent")
    request_id = car(rollout, real.vin)["request_id"]
    first.stop()  # the instance carrying it out goes away before the outcome

    # The car carries it out, follows it to its end, and goes offline.
    wait_until(
        lambda: any(
            e["request_id"] == request_id and e["followed"] == "running"
            for e in _history(probe, real.vin)
        ),
        timeout=30,
        interval=0.2,
    )
    real.stop()
    api.server = make_server(sqlite_url, instance="second")
    rollout = wait_until(
        lambda: (
            (r := get(api, rollout_id))["cars"][0].get("waiting", "").startswith("offline") and r
        )
    )
    assert rollout["cars"][0]["state"] == "sent"

    real.start()  # back, with its journal
    rollout = wait_rollout(api, rollout_id, "done", timeout=30)
    assert car(rollout, real.vin)["state"] == "succeeded"
    assert car(rollout, real.vin)["request_id"] == request_id
    changes = [e for e in _history(probe, real.vin) if e["operation"] == "apply"]
    assert [e["request_id"] for e in changes] == [request_id]  # carried out once
    assert update_requests(real.emulator) == 1


def test_a_crashing_workload_is_rolled_back_through_the_cars_journal(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    real: Car,
    probe: MqttProbe,
) -> None:
    api = _api(sqlite_url, make_server(sqlite_url))
    wait_until(lambda: api.get(f"/api/v1/cars/{real.vin}").status_code == 200)
    body = {
        "manifest": manifest("crasher", image="crash:1"),
        "cars": {"vins": [real.vin]},
        "soakTime": 1,
        "progressDeadline": 20,
        "onFailure": "rollback",
    }
    response = api.call("POST", "/api/v1/rollouts", json=body)
    assert response.status_code == 201, response.text
    rollout = wait_rollout(api, response.json()["id"], "done-with-failures", timeout=40)

    crashed = car(rollout, real.vin)
    assert crashed["state"] == "rolled_back"
    assert crashed["outcome"] == "failed"
    assert "Exit code" in crashed["reason"]
    assert "INTERVAL must be > 0" in json.dumps(crashed["logs"])
    entries = _history(probe, real.vin)
    rollback = next(e for e in entries if e["operation"] == "rollback")
    assert rollback["request_id"] == f"{crashed['request_id']}-rollback"
    assert rollback["rollback_of"] is not None
    state = Requester(probe, real.vin).state(["desiredState.workloads"])
    assert "crasher" not in state["desired_state"].get("workloads", {})


@pytest.fixture
def strict(
    broker: Broker, vin: str, tmp_path: Path, probe: MqttProbe, key: tuple[Path, Path]
) -> Iterator[Car]:
    """A car that carries out only changes signed by the operator's key."""
    made = Car(broker, vin, tmp_path, trusted_keys=key[1], require_signed=True)
    kept_counters(made.state_dir)  # not a new car: see the docs' "A lost state directory"
    made.start()
    yield made
    made.close(probe)


def test_signed_per_car_and_attempt_for_cars_that_require_it(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    strict: Car,
    key: tuple[Path, Path],
) -> None:
    vin = strict.vin
    api = _api(sqlite_url, make_server(sqlite_url))
    wait_until(lambda: api.get(f"/api/v1/cars/{vin}").status_code == 200)
    refused = wait_rollout(api, start(api, {"vins": [vin]}), "done-with-failures")
    assert (car(refused, vin)["code"], car(refused, vin)["kind"]) == (
        "SIGNATURE_INVALID",
        "rejected",
    )
    assert update_requests(strict.emulator) == 0

    api.server.stop()
    api.server = make_server(sqlite_url, sign_key=key[0])
    rollout_id = start(api, {"vins": [vin]}, soakTime=0.5, progressDeadline=20)
    done = wait_rollout(api, rollout_id, "done", timeout=30)
    assert car(done, vin)["state"] == "succeeded"
    body = {
        "manifest": manifest("crasher", image="crash:1"),
        "cars": {"vins": [vin]},
        "soakTime": 0.5,
        "progressDeadline": 20,
        "onFailure": "rollback",
    }
    created = api.call("POST", "/api/v1/rollouts", json=body)
    crashed = wait_rollout(api, created.json()["id"], "done-with-failures", timeout=30)
    assert car(crashed, vin)["state"] == "rolled_back"  # the rollback is signed too
    assert car(crashed, vin)["rollback"] == "rolled back"
    sent = [e for e in audit_actions(api) if e["action"] == "rollout.car.sent"]
    assert [e["key_id"] for e in sent] == [None, "rollouts-2026", "rollouts-2026"]
    assert update_requests(strict.emulator) == 3  # apply, apply, rollback


def _connector(broker: Broker, vin: str, ci: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    """The connector as a process of its own, so that it can be SIGKILLed."""
    env = {
        **os.environ,
        **broker.env(),
        "VIN": vin,
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(ci),
        "MQTT_CLIENT_ID": f"fleet-connector-{vin}",
        "STATE_DIR": str(state_dir),
    }
    with (ci.parent / "connector.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet_connector"], env=env, stdout=log, stderr=log
        )


def test_a_car_killed_while_followed_is_judged_on_its_live_states(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    vin: str,
    tmp_path: Path,
    probe: MqttProbe,
) -> None:
    """After a crash no outcome comes (follows live in the connector's memory), and the
    journal's entry has no followed outcome: the rollout judges the car's live states."""
    broker = probe.broker
    with Emulator(
        control_interface=tmp_path / "ci",
        runtime="process",
        image_map=IMAGES,
        access=ALL_LOGS,
        pace_frames=False,
    ) as emulator:
        state = tmp_path / "state"
        first = _connector(broker, vin, emulator.control_interface, state)
        again = None
        try:
            Requester(probe, vin).wait_online(timeout=60)
            api = _api(sqlite_url, make_server(sqlite_url, request_timeout=3.0))
            wait_until(lambda: api.get(f"/api/v1/cars/{vin}").status_code == 200)
            rollout_id = start(api, {"vins": [vin]}, soakTime=3, progressDeadline=6)
            rollout = wait_car(api, rollout_id, vin, "sent")
            request_id = car(rollout, vin)["request_id"]
            wait_until(
                lambda: any(e["request_id"] == request_id for e in _history(probe, vin)),
                timeout=20,
                interval=0.1,
            )
            first.kill()  # while it follows the change (3 s of settle time)
            first.wait(10)
            again = _connector(broker, vin, emulator.control_interface, state)
            rollout = wait_rollout(api, rollout_id, "done", timeout=60)
            judged = car(rollout, vin)
            assert (judged["state"], judged["outcome"], judged["from"]) == (
                "succeeded",
                "running",
                "live states",
            )
            (entry,) = [e for e in _history(probe, vin) if e["request_id"] == request_id]
            assert entry["followed"] is None  # the journal never learnt the outcome
            assert update_requests(emulator) == 1
        finally:
            for process in (first, again):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(10)
        for topic in retained(probe, f"vehicle/{vin}/#"):
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
