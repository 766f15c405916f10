"""An offline car's workloads are what it last said, not "running": shown and counted apart."""

from __future__ import annotations

import json
import queue
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker, MqttProbe

from .conftest import _start_car


@pytest.fixture
def gone(fleet: Any, fleetctl: Any, manifest: Any, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A car that ran a workload, then went offline (its connector stopped): (VIN, workload)."""
    vin = f"GONE{uuid.uuid4().hex[:6].upper()}"
    emulator, connector = _start_car(fleet.broker, vin, tmp_path)
    try:
        path, [name] = manifest("agent_A")
        run = fleetctl("apply", str(path), "--vin", vin, "--wait", "running", "--settle", "0")
        assert run.code == 0, run.out + run.err
        connector.stop()  # its last presence: offline
        yield vin, name
    finally:
        connector.stop()
        emulator.stop()
        forget(fleet.broker, vin)


def forget(broker: Broker, vin: str) -> None:
    """Clears what the car left retained, so that other tests' counts of cars hold."""
    probe = MqttProbe(broker)
    try:
        probe.subscribe(f"vehicle/{vin}/#")
        retained = set()
        while True:  # retained messages come at once after the SUBACK
            try:
                retained.add(probe.messages.get(timeout=0.5).topic)
            except queue.Empty:
                break
        for topic in retained:
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        probe.close()


def test_get_workloads_shows_an_offline_cars_states_as_last_known(
    fleet: Any, fleetctl: Any, manifest: Any, gone: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    vin, name = gone
    path, [live] = manifest("agent_A")
    assert fleetctl("apply", str(path), "--vin", "CAR05", "--wait", "running").code == 0
    request.addfinalizer(lambda: fleetctl("delete", str(path), "--vin", "CAR05"))
    run = fleetctl("get", "workloads", "--vins", f"CAR05,{vin}", "-o", "json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    rows = {(row["vin"], row["workload"]): row for row in result["workloads"]}
    offline, online = rows[(vin, name)], rows[("CAR05", live)]
    assert offline["state"] == "running"  # what it said before it went away
    assert offline["last_known"] is True
    assert offline["car"]["status"] == "offline"
    assert offline["car"]["since"]
    assert online["last_known"] is False
    assert online["car"] == {"status": "online", "since": online["car"]["since"]}
    away = [row for row in result["workloads"] if row["last_known"]]
    here = [row for row in result["workloads"] if not row["last_known"]]
    assert {row["vin"] for row in away} == {vin}
    assert result["summary"]["last_known"] == len(away)
    assert result["summary"]["running"] == sum(1 for r in here if r["state"] == "running")
    assert result["summary"]["total"] == len(away) + len(here)

    table = fleetctl("get", "workloads", "--vins", f"CAR05,{vin}")
    assert table.code == 0
    *lines, summary = table.out.splitlines()
    [row] = [line for line in lines if line.split()[:2] == [vin, name]]
    assert row.split()[2:5] == ["running", "(last", "known)"]
    assert f"car offline since {offline['car']['since']}" in row
    [row] = [line for line in lines if line.split()[:2] == ["CAR05", live]]
    assert row.split()[2:4] == ["running", "Ok"]
    assert summary.endswith(f", {len(away)} last known on 1 car(s) not online")
    assert summary.startswith(f"{len(away) + len(here)} workload(s) on 2 car(s): ")


def test_logs_of_an_unknown_car_fails_at_once_as_state_does(fleet: Any, fleetctl: Any) -> None:
    state = fleetctl("state", "--vin", fleet.unknown)
    assert state.code == 1
    assert "NOT_DELIVERED" in state.out
    started = time.monotonic()
    run = fleetctl("logs", "--vin", fleet.unknown, "vehicle-data-sender")
    # The broker's acknowledgement says nobody gets it: no 10 s wait for "no answer".
    assert time.monotonic() - started < 5
    assert run.code == 1
    assert run.err == (
        f"fleetctl: {fleet.unknown}: NOT_DELIVERED: no connector is subscribed for this car on "
        "the broker (unknown VIN, a connector that never connected, or one whose session "
        "expired), so nothing keeps the request\n"
    )
