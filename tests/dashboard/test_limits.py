"""What clients of ``fleetctl dashboard`` can cost it: pages that never read, many of them."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard.browser_kit import Dashboard, start_dashboard
from testkit import Broker, MqttProbe

CARS = 1500
WORKLOADS = 3
INFO = "x" * 400  # within the model's limit: a fleet this size is a legitimate one
CLIENTS = 300
MAX_PAGES = 100  # event streams a dashboard serves at once (docs/fleetctl.md)
# What 300 stuck pages may add to the dashboard's memory. Before the limits each one held
# its own encoded copy of the model (about 3 MB here): 300 of them, about a gigabyte.
GROWTH_BOUND = 80 * 2**20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def workload(vin: str, name: str, state: str) -> tuple[str, bytes]:
    value = {"agent": "agent_A", "state": state, "substate": "ok", "info": INFO}
    return f"vehicle/{vin}/workloads/{name}", json.dumps(value).encode()


def first_event(dashboard: Dashboard) -> dict[str, Any]:
    address = urllib.parse.urlsplit(dashboard.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.request("GET", "/events", headers=dashboard.cookie)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        data: dict[str, Any] = json.loads(response.readline().removeprefix(b"data: "))
        return data
    finally:
        connection.close()


@pytest.fixture
def big_fleet(broker: Broker, tmp_path: Path) -> Iterator[tuple[Dashboard, list[str], MqttProbe]]:
    """A dashboard watching CARS cars, each with WORKLOADS workloads it has seen."""
    tag = uuid.uuid4().hex[:6].upper()
    vins = [f"BIG{tag}{n:05d}" for n in range(CARS)]
    listed = tmp_path / "vins.txt"
    listed.write_text("\n".join(vins) + "\n")
    dashboard = start_dashboard(broker, "--vins-file", str(listed))
    probe = MqttProbe(broker)
    try:
        last = None
        for vin in vins:
            for n in range(WORKLOADS):
                last = probe.client.publish(*workload(vin, f"app{n}", "running"), qos=1)
        assert last is not None
        last.wait_for_publish(30)
        # The dashboard has them all once a page's model has the last car's workloads.
        deadline = time.monotonic() + 60
        while True:
            cars = first_event(dashboard)["cars"]
            if len(cars[-1]["workloads"]) == WORKLOADS:
                break
            assert time.monotonic() < deadline, "the dashboard did not get the fleet"
        yield dashboard, vins, probe
    finally:
        probe.close()
        dashboard.stop()


def replay(events: http.client.HTTPResponse, state: str) -> tuple[dict[str, Any], int]:
    """Workloads by car, as a page applying the events has them once every car's app0 is in
    ``state`` (a model sent car by car may show some cars older than others until the
    changes that follow it are applied); and how many times the page got the model."""
    cars: dict[str, Any] = {}
    snapshots = 0
    while True:
        line = events.readline()
        assert line, "the stream ended"
        if not line.startswith(b"data: "):
            continue
        event = json.loads(line.removeprefix(b"data: "))
        if event["t"] == "snapshot":
            cars = {car["vin"]: car["workloads"] for car in event["cars"]}
            snapshots += 1
        for change in event.get("changes", []):
            if change["t"] == "wl":
                cars[change["vin"]][change["name"]] = change["value"]
        if all(workloads["app0"]["state"] == state for workloads in cars.values()):
            return cars, snapshots


def test_pages_that_never_read_cost_the_dashboard_a_bounded_amount(
    big_fleet: tuple[Dashboard, list[str], MqttProbe],
) -> None:
    dashboard, vins, probe = big_fleet
    pid = dashboard.process.pid
    before = rss(pid)
    address = urllib.parse.urlsplit(dashboard.url)
    reader = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    reader.request("GET", "/events", headers=dashboard.cookie)
    page = reader.getresponse()
    assert json.loads(page.readline().removeprefix(b"data: "))["t"] == "snapshot"
    # A page that reads only once the fleet has changed: by then far behind.
    slow = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    slow.sock = socket.socket()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 128 * 1024)
    slow.sock.connect((address.hostname, address.port))
    slow.request("GET", "/events", headers=dashboard.cookie)
    [(_, cookie)] = dashboard.cookie.items()
    request = f"GET /events HTTP/1.1\r\nHost: {address.netloc}\r\nCookie: {cookie}\r\n\r\n"
    stuck = []
    try:
        for _ in range(CLIENTS - 2):
            client = socket.socket()
            # A client that reads nothing, with a receive window as small as it gets.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect((address.hostname, address.port))
            client.sendall(request.encode())
            stuck.append(client)
        # The fleet keeps changing: every stuck page's queue overflows.
        rounds = ["pending", "running"] * 5 + ["failed"]
        for state in rounds:
            for vin in vins:
                probe.client.publish(*workload(vin, "app0", state), qos=1)
        # The page that reads sees the last change: the stuck ones had their chance to grow.
        final = {"t": "wl", "vin": vins[-1], "name": "app0"}
        while True:
            line = page.readline()
            if not line.startswith(b"data: "):
                continue
            changes = json.loads(line.removeprefix(b"data: ")).get("changes", [])
            if any(
                c.items() >= final.items() and c["value"]["state"] == rounds[-1] for c in changes
            ):
                break
        grown = rss(pid) - before
        assert grown < GROWTH_BOUND, f"{grown / 2**20:.0f} MiB more with {CLIENTS} stuck pages"
        # Beyond MAX_PAGES, a page is refused at once instead of costing anything.
        answers: dict[str, int] = {}
        for client in stuck:
            client.settimeout(30)
            status = client.recv(12).decode()
            answers[status] = answers.get(status, 0) + 1
        assert answers == {"HTTP/1.1 200": MAX_PAGES - 2, "HTTP/1.1 503": CLIENTS - MAX_PAGES}
        # The slow page, reading at last, was sent the fleet again and ends up where it is.
        seen, snapshots = replay(slow.getresponse(), rounds[-1])
        assert snapshots >= 2  # it fell behind, and was resynced
        assert sorted(seen) == sorted(vins)
        assert {len(workloads) for workloads in seen.values()} == {WORKLOADS}
    finally:
        reader.close()
        slow.close()
        for client in stuck:
            client.close()


def test_vins_and_names_no_car_can_have_stay_out_of_the_page(broker: Broker) -> None:
    """Anyone who may publish under vehicle/ could otherwise make every page's model huge
    with 64 KiB VINs (300 of them: an 18.6 MB snapshot)."""
    dashboard = start_dashboard(broker)
    probe = MqttProbe(broker)
    try:
        tag = uuid.uuid4().hex[:8].upper()
        status = json.dumps({"status": "online"})
        for n in range(300):
            probe.client.publish(f"vehicle/{tag}{n:03d}{'V' * 60_000}/status", status, qos=1)
        legit = f"REAL{tag}"
        probe.client.publish(f"vehicle/{legit}/workloads/{'w' * 300}", json.dumps({}), qos=1)
        probe.publish(f"vehicle/{legit}/status", status)
        # Messages of one client arrive in order: once the real car is there, all were read.
        deadline = time.monotonic() + 30
        while True:
            snapshot = first_event(dashboard)
            cars = {car["vin"]: car for car in snapshot["cars"] if tag in car["vin"]}
            if legit in cars:
                break
            assert time.monotonic() < deadline, "the dashboard did not see the car"
        assert list(cars) == [legit]
        assert cars[legit]["workloads"] == {}
        # What this test's publishing costs the page (the session's broker also holds what
        # earlier tests' cars left retained, which the dashboard reads meanwhile).
        assert len(json.dumps(list(cars.values()))) < 100_000
    finally:
        probe.close()
        dashboard.stop()
