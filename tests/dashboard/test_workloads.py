"""Workloads on the page as the real connector publishes them, from the emulator running them
as processes: applied, crashed and deleted, each on the page within a second."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dashboard.browser_kit import (
    HOSTILE_LINE,
    SECOND,
    TICKER,
    Car,
    Dashboard,
    Page,
    app_manifest,
    process_car,
)
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
    agent = page.agents()["agent_A"]
    assert agent[1] == "connected"
    assert agent[2].startswith("CPU ")
    assert agent[2].endswith(" GiB free")


def test_an_offline_cars_workloads_are_last_known_and_counted_apart(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    broker: Broker,
    vins: list[str],
    tmp_path: Path,
) -> None:
    first, second, _ = vins
    away, here = make_car(first), make_car(second)
    _, page = open_dashboard("--vins", f"{first},{second}")
    manifest = tmp_path / "nginx.yaml"
    manifest.write_text(
        "apiVersion: v0.1\nworkloads:\n  nginx:\n    runtime: podman\n    agent: agent_A\n"
        "    restartPolicy: NEVER\n    runtimeConfig: |\n      image: docker.io/nginx:1\n"
    )
    for vin in (first, second):
        assert fleetctl(["apply", str(manifest), "--vin", vin], broker.env()) == 0
    page.wait(lambda: all("1 running" in page.cars()[v][5] for v in (first, second)), 5)
    assert "2 running" in page.text("by-state")

    away.stop_connector()
    page.wait(lambda: page.cars()[first][1] == "offline", SECOND)
    # What it said last, counted apart from what runs.
    assert page.cars()[first][5].strip() == "1 last known"
    assert "1 running" in page.cars()[here.vin][5]
    page.wait(lambda: "1 last known" in page.text("by-state"), SECOND)
    assert "1 running" in page.text("by-state")
    page.select_car(first)
    page.wait(lambda: "nginx" in page.workloads(), 5)
    row = page.workloads()["nginx"]
    assert row[2] == "running (last known)"
    assert row[4].startswith("car offline since 20")
    # A filter by state finds only what runs now.
    Select(page.driver.find_element("id", "filter-state")).select_by_value("w:running")
    page.wait(lambda: set(page.cars()) == {second})


@pytest.fixture
def watched(
    make_car: Callable[..., Car],
    open_dashboard: Callable[..., tuple[Dashboard, Page]],
    vins: list[str],
    tmp_path: Path,
) -> tuple[Car, Page]:
    """A car running workloads as processes, and the dashboard watching it."""
    car = process_car(make_car, vins[0], tmp_path)
    _, page = open_dashboard("--vin", car.vin)
    page.wait(lambda: car.vin in page.cars(), 5)
    return car, page


def open_logs(page: Page, workload: str) -> None:
    page.driver.find_element(
        "css selector", f'#workloads tr[data-workload="{workload}"] button'
    ).click()


def log_text(page: Page) -> str:
    text: str = page.driver.execute_script(
        "return document.getElementById('log-lines').textContent"
    )
    return text


def test_a_log_tail_shows_the_workloads_lines_as_text(
    watched: tuple[Car, Page], probe: MqttProbe, tmp_path: Path
) -> None:
    car, page = watched
    page.select_car(car.vin)
    pid_file = tmp_path / "app.pid"
    Requester(probe, car.vin).apply(app_manifest("app", pid_file))
    page.wait(lambda: page.workloads().get("app", ["", "", ""])[2] == "running", 10)
    page.wait(lambda: pid_file.exists() and pid_file.read_text(), 10)

    open_logs(page, "app")
    page.wait(lambda: page.text("log-status") == "ended (done)", 10)
    assert log_text(page) == f"app line 1\napp line 2\napp line 3\n{HOSTILE_LINE}\n"
    assert page.text("log-title") == f"app on {car.vin}"
    # The markup is text: no element was made of it, no script ran.
    assert (
        page.driver.execute_script("return document.querySelectorAll('#log-lines *').length") == 0
    )
    assert page.driver.execute_script("return window.pwned === undefined")
    assert page.driver.title == "Fleet dashboard"


def test_a_followed_tail_grows_and_closing_it_cancels_it_on_the_car(
    watched: tuple[Car, Page], probe: MqttProbe, tmp_path: Path
) -> None:
    car, page = watched
    page.select_car(car.vin)
    Requester(probe, car.vin).apply(app_manifest("ticker", tmp_path / "t.pid", TICKER))
    page.wait(lambda: page.workloads().get("ticker", ["", "", ""])[2] == "running", 10)
    probe.subscribe(f"vehicle/{car.vin}/logs/#")

    open_logs(page, "ticker")
    page.wait(lambda: page.text("log-status") == "ended (done)", 10)
    # The follow toggle asks again, followed.
    page.driver.find_element("id", "log-follow").click()
    request = probe.expect(timeout=5)
    while "/logs/req/" not in request.topic or "follow" not in json.loads(request.payload):
        request = probe.expect(timeout=5)
    assert json.loads(request.payload)["follow"] > 0
    request_id = request.topic.rsplit("/", 1)[1]
    page.wait(lambda: page.text("log-status") == "following…", 10)
    # New lines keep coming while it is followed.
    count = log_text(page).count("tick")
    page.wait(lambda: log_text(page).count("tick") >= count + 3, 5)

    page.driver.find_element("id", "log-close").click()
    probe.expect(f"vehicle/{car.vin}/logs/cancel/{request_id}", timeout=5)
    reply = f"vehicle/{car.vin}/logs/resp/{request_id}"
    while True:
        message = json.loads(probe.expect(reply, timeout=5).payload)
        if "end" in message:
            break
    assert message["end"] == "cancelled"


def test_a_followed_apply_shows_its_outcome_when_the_workload_crashes(
    watched: tuple[Car, Page], probe: MqttProbe, tmp_path: Path
) -> None:
    car, page = watched
    pid_file = tmp_path / "app.pid"
    probe.publish(f"vehicle/{car.vin}/manifest/apply/req/f1/follow", app_manifest("app", pid_file))
    page.wait(lambda: len(page.outcomes()) == 1, 10)
    assert "added app" in page.outcomes()[0]
    page.wait(lambda: pid_file.exists() and pid_file.read_text(), 10)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    page.wait(lambda: len(page.outcomes()) == 2, 10)
    followed = page.outcomes()[0]
    assert f"{car.vin} apply f1" in followed
    assert "followed: failed; app failed (failed/ExecFailed)" in followed
    item = page.driver.find_element("css selector", "#outcomes li")
    assert "failed" in (item.get_attribute("class") or "")
