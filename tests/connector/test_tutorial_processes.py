"""The whole tutorial with real processes: Ankaios (emulated) starts the connector from the
tutorial's state.yaml, the connector installs the real vehicle data sender, whose speed values
arrive on the broker, re-configures it and deletes it again."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import MANIFESTS, Broker, MqttProbe, Requester

from ankaios_emulator import Emulator

# The tutorial's intervals are 1 s and 10 s; the test keeps their ratio at a tenth of the time.
FAST, SLOW = "0.1", "1"


def tutorial_file(name: str, broker: Broker, vin: str, interval: str) -> bytes:
    """The tutorial's manifest, naming the test's broker, car and interval."""
    text = (MANIFESTS / name).read_text()
    text = text.replace('value: "1883"', f'value: "{broker.port}"')
    text = text.replace("value: localhost", f"value: {broker.host}")
    text = text.replace("vehicle/1/", f"vehicle/{vin}/")
    for original in ('value: "1"', 'value: "10"'):
        text = text.replace(original, f'value: "{interval}"')
    return text.encode()


@pytest.fixture
def car(
    broker: Broker, vin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Emulator]:
    state = (MANIFESTS / "state.yaml").read_text().replace('"VIN=1"', f'"VIN={vin}"')
    # The image map runs "python3 -m ...": this interpreter, with the project installed.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    # The connector process inherits the broker's address, as the demo's does.
    for key, value in broker.env().items():
        monkeypatch.setenv(key, value)
    with Emulator(
        state=state,
        run_dir=tmp_path / "run",
        runtime="process",
        image_map=MANIFESTS / "image-map.yaml",
    ) as emu:
        yield emu


def arrival_times(probe: MqttProbe, topic: str, count: int, timeout: float) -> list[float]:
    times = []
    for _ in range(count):
        message = probe.expect(topic, timeout=timeout)
        assert message.payload.decode().isdigit()
        times.append(time.monotonic())
    return times


def test_tutorial_with_real_processes(
    car: Emulator, broker: Broker, probe: MqttProbe, vin: str
) -> None:
    requester = Requester(probe, vin)
    requester.wait_online(timeout=30)
    speed = f"vehicle/{vin}/sensors/speed"
    probe.subscribe(speed)

    applied = requester.apply(tutorial_file("vehicle-data-sender.yaml", broker, vin, FAST))
    assert applied["added_workloads"][0]["workload_name"] == "vehicle-data-sender"
    first = probe.expect(speed, timeout=30)
    assert first.payload == b"1"
    fast = arrival_times(probe, speed, 6, timeout=10)
    fast_gap = (fast[-1] - fast[0]) / 5

    state = requester.state(["workloadStates"])
    states = state["workload_states"]["agent_A"]
    assert {s["state"] for s in states["vehicle-data-sender"].values()} == {"RUNNING"}
    assert {s["state"] for s in states["fleetconnector"].values()} == {"RUNNING"}

    reconfigured = requester.apply(tutorial_file("config.yaml", broker, vin, SLOW))
    assert len(reconfigured["deleted_workloads"]) == 1
    assert len(reconfigured["added_workloads"]) == 1
    restarted = probe.expect(speed, timeout=30)
    while restarted.payload != b"1":  # values of the old instance still in flight
        restarted = probe.expect(speed, timeout=30)
    slow = arrival_times(probe, speed, 3, timeout=10)
    slow_gap = (slow[-1] - slow[0]) / 2
    # Ten times less often, with room for a busy machine.
    assert 5 < slow_gap / fast_gap < 20, (fast_gap, slow_gap)

    removed = requester.delete(tutorial_file("vehicle-data-sender.yaml", broker, vin, SLOW))
    assert removed["deleted_workloads"][0]["workload_name"] == "vehicle-data-sender"
    car.wait_for(
        lambda e: (
            "vehicle-data-sender"
            not in e.complete_state(["workloadStates"]).get("workloadStates", {}).get("agent_A", {})
        ),
        timeout=15,
    )
    # Drain what was in flight, then silence: the sender process is gone.
    while True:
        try:
            probe.expect(speed, timeout=2.5)
        except AssertionError:
            break
