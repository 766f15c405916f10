"""Workloads on the page as the real connector publishes them, from the emulator running them
as processes: applied, crashed and deleted, each on the page within a second."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from dashboard.browser_kit import SECOND, Car, Dashboard, Page, app_manifest, process_car
from selenium.webdriver.support.ui import Select
from testkit import Broker, MqttProbe, Requester

from fleetctl.cli import main as fleetctl


def test_a_workload_applied_crashed_and_deleted_changes_the_page_within_a_second(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    probe: MqttProbe,
    vins: list[str],
    tmp_path: Path,
) -> None:
    car = process_car(make_car, vins[0], tmp_path)
    other = make_car(vins[1])
    _, page = open_dashboard("--vins", ",".join(vins[:2]))
    page.wait(lambda: set(page.cars()) == set(vins[:2]), 5)
    page.select_car(car.vin)
    requester = Requester(probe, car.vin)
    pid_file = tmp_path / "app.pid"
    manifest = app_manifest("app", pid_file)

    requester.apply(manifest)
    applied = time.monotonic()
    page.wait(lambda: page.workloads().get("app", ["", "", ""])[2] == "running", SECOND)
    assert time.monotonic() - applied < SECOND
    row = page.workloads()["app"]
    assert row[1] == "agent_A"
    assert row[5]  # since
    assert "1 running" in page.cars()[car.vin][5]
    assert page.cars()[other.vin][5] == ""
    assert "running" in page.text("by-state")

    # Running means started; the program writes its pid right after.
    page.wait(lambda: pid_file.exists() and pid_file.read_text(), 10)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    crashed = time.monotonic()
    page.wait(lambda: page.workloads()["app"][2] == "failed", SECOND)
    assert time.monotonic() - crashed < SECOND
    assert "1 failed" in page.cars()[car.vin][5]
    # Cars with a failed workload come first.
    assert page.car_order()[0] == car.vin
    assert page.text("count-online") == "2"

    requester.delete(manifest)
    deleted = time.monotonic()
    page.wait(lambda: "app" not in page.workloads(), SECOND)
    assert time.monotonic() - deleted < SECOND
    assert page.cars()[car.vin][5] == ""


def test_the_agents_of_a_car_and_a_filter_by_workload_state(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    broker: Broker,
    vins: list[str],
    tmp_path: Path,
) -> None:
    first, second, _ = vins
    make_car(first)
    make_car(second)
    _, page = open_dashboard("--vins", f"{first},{second}")
    manifest = tmp_path / "nginx.yaml"
    manifest.write_text(
        "apiVersion: v0.1\nworkloads:\n  nginx:\n    runtime: podman\n    agent: agent_A\n"
        "    restartPolicy: NEVER\n    runtimeConfig: |\n      image: docker.io/nginx:1\n"
    )
    assert fleetctl(["apply", str(manifest), "--vin", first], broker.env()) == 0
    page.wait(lambda: "1 running" in page.cars()[first][5], 5)

    Select(page.driver.find_element("id", "filter-state")).select_by_value("w:running")
    page.wait(lambda: set(page.cars()) == {first})

    page.select_car(first)
    page.wait(lambda: "agent_A" in page.agents(), 5)
    details = page.agents()["agent_A"][1]
    assert "connected: true" in details
    assert "free_memory: " in details
