"""A fleet of 20 emulated cars, each with its own connector, on a mosquitto of our own.

CAR01-CAR18 are ordinary cars (simulate runtime: every workload runs at once).
CAR19 runs workloads as processes with no image map, so every workload fails to start.
CAR20's connector may only read: an apply gets ACCESS_DENIED.
CAR21's connector connected once and stopped: its presence says offline.
CAR22 never connected: no presence, nothing keeps requests for it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Broker

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleetctl.cli import main

CARS = [f"CAR{n:02d}" for n in range(1, 21)]
FAILING_RUNTIME = "CAR19"
READ_ONLY = "CAR20"
OFFLINE = "CAR21"
UNKNOWN = "CAR22"
READ_ONLY_ACCESS = {
    "allowRules": [{"type": "StateRule", "operation": "Read", "filterMasks": ["*"]}]
}


@dataclass
class Fleet:
    broker: Broker
    failing_runtime: str = FAILING_RUNTIME
    read_only: str = READ_ONLY
    offline: str = OFFLINE
    unknown: str = UNKNOWN
    emulators: dict[str, Emulator] = field(default_factory=dict)
    connectors: dict[str, Connector] = field(default_factory=dict)
    startup_seconds: float = 0.0

    def env(self) -> dict[str, str]:
        return self.broker.env()

    def desired_workloads(self, vin: str) -> dict[str, Any]:
        desired = self.emulators[vin].complete_state(["desiredState"])["desiredState"]
        workloads: dict[str, Any] = desired.get("workloads", {})
        return workloads


def _start_car(
    broker: Broker, vin: str, directory: Path, **emulator_args: Any
) -> tuple[Emulator, Connector]:
    emulator = Emulator(control_interface=directory / vin, **emulator_args).start()
    config = Config(
        vin=vin,
        broker=BrokerSettings(host=broker.host, port=broker.port),
        control_interface=emulator.control_interface,
        client_id=f"fleet-connector-{vin}-{uuid.uuid4().hex[:6]}",
    )
    connector = Connector(config)
    connector.start()
    return emulator, connector


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    broker = Broker(tmp_path_factory.mktemp("fleet-mosquitto")).start()
    directory = tmp_path_factory.mktemp("cars")
    result = Fleet(broker)
    started = time.monotonic()
    try:
        # Start everything first and wait afterwards: connectors connect in the background.
        for vin in [*CARS, OFFLINE]:
            args: dict[str, Any] = {}
            if vin == FAILING_RUNTIME:
                args["runtime"] = "process"
            if vin == READ_ONLY:
                args["access"] = READ_ONLY_ACCESS
            result.emulators[vin], result.connectors[vin] = _start_car(
                broker, vin, directory, **args
            )
        for vin, connector in result.connectors.items():
            assert connector.control_interface.wait_connected(20), f"{vin}: no control interface"
            assert connector.mqtt.wait_subscribed(20), f"{vin}: not subscribed"
        result.startup_seconds = time.monotonic() - started
        result.connectors.pop(OFFLINE).stop()
        result.emulators.pop(OFFLINE).stop()
        yield result
    finally:
        # Each stop takes a round trip or two; twenty of them in a row add up.
        stoppers = [threading.Thread(target=c.stop) for c in result.connectors.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        for emulator in result.emulators.values():
            emulator.stop()
        broker.stop()


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def fleetctl(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs fleetctl in this process against the fleet's broker; returns exit code and output."""

    def run(*argv: str, env: dict[str, str] | None = None) -> Run:
        capsys.readouterr()
        code = main(list(argv), fleet.env() if env is None else env)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def manifest(tmp_path: Path) -> Any:
    """Writes a manifest with workloads of this test's own, so every apply adds them anew."""

    def write(*agents: str) -> tuple[Path, list[str]]:
        tag = uuid.uuid4().hex[:8]
        names = [f"app-{tag}-{i}" for i in range(len(agents))]
        lines = ["apiVersion: v0.1", "workloads:"]
        for name, agent in zip(names, agents, strict=True):
            lines += [
                f"  {name}:",
                "    runtime: podman",
                "    restartPolicy: NEVER",
                f"    agent: {agent}",
                "    runtimeConfig: |",
                "      image: ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0",
            ]
        path = tmp_path / f"{tag}.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path, names

    return write


@pytest.fixture
def sender_manifest() -> Path:
    return MANIFESTS / "vehicle-data-sender.yaml"
