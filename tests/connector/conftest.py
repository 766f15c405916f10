"""Connector fixtures: an emulated Ankaios, a connector in this process, a requester on MQTT."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker, MqttProbe, Requester
from testkit.live import ALL_LOGS

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    # Answers back to back, as Ankaios writes them (our reader needs no pacing).
    with Emulator(control_interface=tmp_path / "control_interface", pace_frames=False) as emu:
        yield emu


def connector_config(broker: Broker, vin: str, control_interface: Path, **overrides: Any) -> Config:
    settings = BrokerSettings(host=broker.host, port=broker.port)
    fields: dict[str, Any] = {
        "vin": vin,
        "broker": settings,
        "control_interface": control_interface,
        "client_id": f"fleet-connector-{vin}-{uuid.uuid4().hex[:6]}",
    }
    fields.update(overrides)
    return Config(**fields)


@pytest.fixture
def start_connector(broker: Broker, vin: str) -> Iterator[Callable[..., Connector]]:
    """Starts connectors in this process; waits until both of their sides are connected."""
    started: list[Connector] = []

    def start(control_interface: Path, *, wait_ankaios: bool = True, **overrides: Any) -> Connector:
        overrides.setdefault("vin", vin)
        settings = overrides.pop("mqtt_settings", None)
        config = connector_config(broker, control_interface=control_interface, **overrides)
        if settings is not None:
            config = dataclasses.replace(config, broker=settings)
        connector = Connector(config)
        connector.start()
        started.append(connector)
        if wait_ankaios:
            assert connector.control_interface.wait_connected(10), "control interface not connected"
        assert connector.mqtt.wait_subscribed(10), "MQTT not subscribed"
        return connector

    yield start
    for connector in started:
        connector.stop()


@pytest.fixture
def connector(emulator: Emulator, start_connector: Callable[..., Connector]) -> Connector:
    return start_connector(emulator.control_interface)


@pytest.fixture
def requester(probe: MqttProbe, vin: str) -> Requester:
    return Requester(probe, vin)


@pytest.fixture
def make_car(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Emulators whose workloads really run, as local processes, from an image map."""
    made: list[Emulator] = []

    def make(images: dict[str, list[str]], access: dict[str, Any] | None = ALL_LOGS) -> Emulator:
        emulator = Emulator(
            control_interface=tmp_path / f"ci{len(made)}",
            runtime="process",
            image_map=images,
            access=access,
            pace_frames=False,
        )
        made.append(emulator.start())
        return emulator

    yield make
    for emulator in made:
        emulator.stop()
