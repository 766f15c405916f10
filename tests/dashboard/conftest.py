"""Dashboard fixtures: cars made of a real connector and the emulator, ``fleetctl dashboard``
as a process, and one headless chromium for the session (see browser_kit).

Every test has cars of its own (fresh VINs) and a dashboard that watches exactly those, so
tests sharing the session's broker never see each other's cars.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from connector.conftest import connector_config
from dashboard.browser_kit import Car, Dashboard, Page, start_chromium, start_dashboard
from selenium import webdriver
from testkit import Broker

from ankaios_emulator import Emulator
from fleet_connector import Connector


@pytest.fixture(scope="session")
def browser() -> Iterator[webdriver.Chrome]:
    with tempfile.TemporaryDirectory(prefix="dashboard-chromium-") as profile:
        driver = start_chromium(Path(profile))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def make_car(broker: Broker, tmp_path: Path) -> Iterator[Callable[..., Car]]:
    """Starts a car: an emulated Ankaios and a real connector in this process."""
    cars: list[Car] = []

    def make(vin: str, **emulator_args: Any) -> Car:
        emulator_args.setdefault("control_interface", tmp_path / vin / "control_interface")
        emulator = Emulator(**emulator_args).start()
        connector = Connector(connector_config(broker, vin, emulator.control_interface))
        connector.start()
        car = Car(vin, emulator, connector)
        cars.append(car)
        assert connector.control_interface.wait_connected(10), f"{vin}: no control interface"
        assert connector.mqtt.wait_subscribed(10), f"{vin}: not subscribed"
        return car

    yield make
    for car in cars:
        car.stop_connector()
        car.emulator.stop()


@pytest.fixture
def vins() -> list[str]:
    tag = uuid.uuid4().hex[:6].upper()
    return [f"DASH{tag}{n}" for n in range(1, 4)]


@pytest.fixture
def open_dashboard(
    broker: Broker, browser: webdriver.Chrome
) -> Iterator[Callable[..., tuple[Dashboard, Page]]]:
    started: list[Dashboard] = []

    def start(*args: str) -> tuple[Dashboard, Page]:
        dashboard = start_dashboard(broker, *args)
        started.append(dashboard)
        return dashboard, Page(browser, dashboard.url).open()

    yield start
    browser.get("about:blank")  # closes the page's event streams before the server goes
    for dashboard in started:
        if dashboard.process.poll() is None:
            dashboard.stop()
