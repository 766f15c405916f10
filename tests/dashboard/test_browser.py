"""The dashboard in a real browser (Debian's chromium, headless) against real connectors.

Each change is waited for on the page with a deadline of one second from the moment the
change happened (an action returned, or the broker carried the message).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboard.browser_kit import (
    Car,
    Dashboard,
    Page,
    app_manifest,
    process_car,
    start_dashboard,
)
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from testkit import MANIFESTS, Broker, MqttProbe, Requester

from fleetctl.cli import main as fleetctl

SECOND = 1.0


def test_the_page_shows_the_cars_with_their_presence(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    vins: list[str],
) -> None:
    first, second, never = vins
    make_car(first)
    make_car(second)
    _, page = open_dashboard("--vins", ",".join(vins))

    page.wait(lambda: set(page.cars()) == set(vins), 5)
    cars = page.cars()
    assert cars[first][:3] == [first, "online", "connected"]
    assert cars[first][4] == "0.1.0"
    assert cars[second][1] == "online"
    assert cars[never][1] == "never seen"
    assert page.text("count-online") == "2"
    assert page.text("count-never") == "1"
    assert page.text("count-offline") == "0"
    assert page.severe_console_messages() == []


def test_a_car_going_offline_turns_offline_within_a_second(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    vins: list[str],
) -> None:
    car = make_car(vins[0])
    _, page = open_dashboard("--vin", car.vin)
    page.wait(lambda: page.cars().get(car.vin, [""])[1:2] == ["online"], 5)

    car.stop_connector()
    stopped = time.monotonic()
    page.wait(lambda: page.cars()[car.vin][1] == "offline", SECOND)
    assert time.monotonic() - stopped < SECOND
    assert page.text("count-offline") == "1"
    assert page.text("count-online") == "0"


def test_the_page_says_when_the_dashboard_lost_the_broker(
    make_broker: Callable[..., Broker], browser: Any, vins: list[str]
) -> None:
    own = make_broker()
    dashboard = start_dashboard(own, "--vin", vins[0])
    try:
        page = Page(browser, dashboard.url).open()
        own.stop()
        page.wait(
            lambda: (
                page.driver.find_element("tag name", "body").get_attribute("data-link") == "broker"
            ),
            5,
        )
        assert "lost the broker" in page.text("link")
        own.start()  # same port: the dashboard reconnects by itself
        page.wait(lambda: page.text("link") == "live", 15)
    finally:
        browser.get("about:blank")
        assert dashboard.stop() == 0


def test_filters_by_vin_and_by_presence(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    vins: list[str],
) -> None:
    online, offline, never = vins
    make_car(online)
    make_car(offline).stop_connector()
    _, page = open_dashboard("--vins", ",".join(vins))
    page.wait(lambda: page.cars().get(offline, ["", ""])[1] == "offline", 5)

    page.driver.find_element("id", "filter-vin").send_keys(online.lower())
    page.wait(lambda: set(page.cars()) == {online})
    vin_filter = page.driver.find_element("id", "filter-vin")
    vin_filter.send_keys(*[Keys.BACKSPACE] * len(online))
    page.wait(lambda: set(page.cars()) == set(vins))
    Select(page.driver.find_element("id", "filter-state")).select_by_value("p:never")
    page.wait(lambda: set(page.cars()) == {never})
    assert page.text("shown") == f"1 of {len(vins)} cars"


def test_apply_and_delete_outcomes_appear_as_recent_outcomes(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    broker: Broker,
    vins: list[str],
) -> None:
    car = make_car(vins[0])
    _, page = open_dashboard("--vin", car.vin)
    manifest = str(MANIFESTS / "vehicle-data-sender.yaml")

    assert fleetctl(["apply", manifest, "--vin", car.vin], broker.env()) == 0
    answered = time.monotonic()
    page.wait(lambda: len(page.outcomes()) == 1, SECOND)
    assert time.monotonic() - answered < SECOND
    applied = page.outcomes()[0]
    assert f"{car.vin} apply" in applied
    assert "added vehicle-data-sender" in applied

    assert fleetctl(["delete", manifest, "--vin", car.vin], broker.env()) == 0
    page.wait(lambda: len(page.outcomes()) == 2, SECOND)
    assert "deleted vehicle-data-sender" in page.outcomes()[0]


def test_a_refused_request_shows_as_a_failed_outcome(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    probe: MqttProbe,
    vins: list[str],
) -> None:
    car = make_car(vins[0])
    _, page = open_dashboard("--vin", car.vin)
    probe.publish(f"vehicle/{car.vin}/manifest/apply/req/broken-1", b"workloads: [")
    page.wait(lambda: len(page.outcomes()) == 1, 5)
    assert "INVALID_REQUEST" in page.outcomes()[0]
    assert "broken-1" in page.outcomes()[0]
    item = page.driver.find_element("css selector", "#outcomes li")
    assert "failed" in (item.get_attribute("class") or "")


def test_a_screenshot_for_the_readme(
    *,
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    broker: Broker,
    probe: MqttProbe,
    vins: list[str],
    tmp_path: Path,
) -> None:
    """Writes docs/dashboard.png when UPDATE_SCREENSHOT=1, else a copy in tmp_path.

    Four cars: one with a workload that crashed, one running two workloads, one offline, one
    never seen.
    """
    crashed, running, offline = vins
    never = f"{crashed[:-1]}4"
    process_car(make_car, crashed, tmp_path)
    make_car(running)
    make_car(offline).stop_connector()
    _, page = open_dashboard("--vins", ",".join([*vins, never]))
    pid_file = tmp_path / "app.pid"
    Requester(probe, crashed).apply(app_manifest("telemetry", pid_file))
    page.wait(lambda: pid_file.exists() and pid_file.read_text(), 10)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    sender = str(MANIFESTS / "vehicle-data-sender.yaml")
    assert fleetctl(["apply", sender, "--vin", running], broker.env()) == 0
    diagnostics = tmp_path / "diagnostics.yaml"
    diagnostics.write_text(
        "apiVersion: v0.1\nworkloads:\n  diagnostics:\n    runtime: podman\n"
        "    agent: agent_A\n    runtimeConfig: |\n      image: example.org/diag:2\n"
    )
    assert fleetctl(["apply", str(diagnostics), "--vin", running], broker.env()) == 0
    page.wait(lambda: "1 failed" in page.cars()[crashed][5], 10)
    page.wait(lambda: "2 running" in page.cars()[running][5], 10)
    page.select_car(crashed)
    page.wait(lambda: page.workloads()["telemetry"][2] == "failed", 5)
    target = tmp_path / "dashboard.png"
    if os.environ.get("UPDATE_SCREENSHOT") == "1":
        target = Path(__file__).parents[2] / "docs" / "dashboard.png"
    assert page.driver.save_screenshot(str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
