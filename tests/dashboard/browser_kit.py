"""The dashboard's test kit: ``fleetctl dashboard`` as a process, Debian's chromium driven
headless through its chromedriver (Selenium), the page read as a user reads it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait
from testkit import Broker
from testkit.live import ALL_LOGS

from ankaios_emulator import Emulator
from fleet_connector import Connector

SECOND = 1.0
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The flags of a headless browser on a machine without outside network.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,900",
]
# How often a wait looks at the page: small against the one second the page is allowed.
POLL = 0.02

# The page's rows, read in one round trip: the cells' text, as the user sees it.
ROWS_SCRIPT = """
const rows = {};
for (const row of document.querySelectorAll(arguments[0])) {
  const key = row.dataset.vin || row.dataset.workload || row.dataset.agent;
  rows[key] = Array.from(row.cells || row.children, (cell) => cell.textContent);
}
return rows;
"""


def start_chromium(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The dashboard in the browser, read as a user reads it."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver = driver
        self.url = url

    def open(self) -> Page:
        self.driver.get(self.url)
        self.wait(lambda: self.driver.find_element("id", "link").text == "live", 10)
        return self

    def wait(self, condition: Callable[[], Any], timeout: float = 1.0) -> Any:
        """Waits for ``condition`` to be truthy; fails after ``timeout`` seconds."""
        return WebDriverWait(self.driver, timeout, poll_frequency=POLL).until(
            lambda driver: condition()
        )

    def cars(self) -> dict[str, list[str]]:
        rows: dict[str, list[str]] = self.driver.execute_script(ROWS_SCRIPT, "#car-rows .row")
        return rows

    def car_order(self) -> list[str]:
        return list(self.cars())

    def workloads(self) -> dict[str, list[str]]:
        rows: dict[str, list[str]] = self.driver.execute_script(ROWS_SCRIPT, "#workloads tbody tr")
        return rows

    def agents(self) -> dict[str, list[str]]:
        rows: dict[str, list[str]] = self.driver.execute_script(ROWS_SCRIPT, "#agents tbody tr")
        return rows

    def text(self, element_id: str) -> str:
        text: str = self.driver.find_element("id", element_id).text
        return text

    def select_car(self, vin: str) -> None:
        self.driver.find_element("css selector", f'#car-rows [data-vin="{vin}"]').click()
        self.wait(lambda: self.text("car-vin") == vin)

    def outcomes(self) -> list[str]:
        texts: list[str] = self.driver.execute_script(
            'return Array.from(document.querySelectorAll("#outcomes li"), (li) => li.innerText);'
        )
        return texts

    def severe_console_messages(self) -> list[str]:
        return [m["message"] for m in self.driver.get_log("browser") if m["level"] == "SEVERE"]


@dataclass
class Dashboard:
    process: subprocess.Popen[str]
    url: str
    """As printed: with the token, which opening it turns into the cookie."""
    stderr: list[str] = field(default_factory=list)

    @property
    def cookie(self) -> dict[str, str]:
        """The header a browser sends after opening ``url``, for plain HTTP clients."""
        address = urllib.parse.urlsplit(self.url)
        token = urllib.parse.parse_qs(address.query)["token"][0]
        return {"Cookie": f"fleetctl_dashboard_{address.port}={token}"}

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(10)
        finally:
            if self.process.stderr:
                self.stderr.extend(self.process.stderr.read().splitlines())


def start_dashboard(broker: Broker, *args: str) -> Dashboard:
    """``fleetctl dashboard`` on a free port; returns once it says where it serves."""
    command = [sys.executable, "-m", "fleetctl", "dashboard", "--port", "0", *args]
    env = {**os.environ, **broker.env(), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "dashboard on " in line:
            url = line.split("dashboard on ", 1)[1].split()[0]
            return Dashboard(process, url, lines)
    process.kill()
    process.wait()
    raise AssertionError(f"the dashboard did not start: {lines}")


@dataclass
class Car:
    vin: str
    emulator: Emulator
    connector: Connector | None

    def stop_connector(self) -> None:
        connector, self.connector = self.connector, None
        if connector is not None:
            connector.stop()


IMAGE = "example.org/dashboard/app:1"
TICKER = "example.org/dashboard/ticker:1"
HOSTILE_LINE = "<script>document.title='pwned';window.pwned=1</script>"
# The workload: says who it is, prints a few lines (one with markup) and waits to be
# stopped (or killed).
PROGRAM = f"""
import os, sys, time
with open(os.environ["PID_FILE"], "w") as f:
    f.write(str(os.getpid()))
for n in range(1, 4):
    print(f"app line {{n}}", flush=True)
print({HOSTILE_LINE!r}, flush=True)
time.sleep(3600)
"""
# A workload that prints a line every 0.1 s, to follow.
TICKING = """
import time
n = 0
while True:
    n += 1
    print("tick", n, flush=True)
    time.sleep(0.1)
"""


def app_manifest(name: str, pid_file: Path, image: str = IMAGE) -> str:
    return f"""apiVersion: v0.1
workloads:
  {name}:
    runtime: podman
    agent: agent_A
    restartPolicy: NEVER
    runtimeConfig: |
      image: {image}
      commandOptions: ["-e", "PID_FILE={pid_file}"]
"""


def process_car(make_car: Callable[..., Car], vin: str, tmp_path: Path) -> Car:
    """A car whose emulator runs workloads as processes: the image runs PROGRAM."""
    return make_car(
        vin,
        runtime="process",
        run_dir=tmp_path / vin / "run",
        image_map={IMAGE: [sys.executable, "-c", PROGRAM], TICKER: [sys.executable, "-c", TICKING]},
        access=ALL_LOGS,
    )
