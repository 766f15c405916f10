"""status from the retained presence messages; watch, in process and as a program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import yaml


def test_status_lists_every_car(fleet: Any, fleetctl: Any) -> None:
    run = fleetctl("status", "-o", "json", "--listen", "0.3")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    cars = {car["vin"]: car for car in result["cars"]}
    assert sorted(cars) == [f"CAR{n:02d}" for n in range(1, 22)]
    assert result["summary"] == {"total": 21, "online": 20, "offline": 1}
    assert cars[fleet.offline]["status"] == "offline"
    assert cars["CAR05"]["status"] == "online"
    assert cars["CAR05"]["ankaios"] == "connected"
    assert cars["CAR05"]["sdk_version"] == "1.0.1"
    assert cars["CAR05"]["since"]


def test_status_table(fleet: Any, fleetctl: Any) -> None:
    run = fleetctl("status", "--listen", "0.3")
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0].split() == ["VIN", "STATUS", "ANKAIOS", "SINCE", "CONNECTOR", "SDK", "STARTED"]
    assert lines[1].split()[:3] == ["CAR01", "online", "connected"]
    assert lines[-1] == "21 car(s): 20 online, 1 offline"


def test_status_of_named_cars_sets_the_exit_code(fleet: Any, fleetctl: Any) -> None:
    assert fleetctl("status", "--vins", "CAR01-CAR03").code == 0
    run = fleetctl("status", "--vins", f"CAR01,{fleet.offline},{fleet.unknown}", "-o", "yaml")
    assert run.code == 1
    statuses = [car["status"] for car in yaml.safe_load(run.out)["cars"]]
    assert statuses == ["online", "offline", "unknown"]


def test_watch_raw_count_prints_topic_and_payload(fleet: Any, fleetctl: Any) -> None:
    # Each car has its retained presence and the live state of its agent.
    run = fleetctl("watch", "--raw", "--vins", "CAR01-CAR20", "--count", "40")
    assert run.code == 0
    lines = run.out.splitlines()
    assert len(lines) == 40
    topics = set()
    for line in lines:
        topic, payload = line.split(" ", 1)
        topics.add(topic)
        if topic.endswith("/status"):
            assert json.loads(payload)["status"] == "online"
        else:
            assert topic.endswith("/agents/agent_A") and json.loads(payload)["connected"]
    cars = range(1, 21)
    assert {f"vehicle/CAR{n:02d}/status" for n in cars} <= topics


def test_watch_program_follows_replies_until_sigterm(fleet: Any, fleetctl: Any) -> None:
    env = {**os.environ, **fleet.env(), "PYTHONUNBUFFERED": "1"}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "fleetctl", "watch", "--raw", "--vin", "CAR04"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # A stuck watcher must not hang the suite.
    killer = threading.Timer(20, watcher.kill)
    killer.start()
    try:
        assert watcher.stdout is not None
        # Retained messages come first, so from the presence on the watcher is subscribed.
        first = watcher.stdout.readline()
        while not first.startswith("vehicle/CAR04/status {"):
            assert first.startswith(("vehicle/CAR04/agents/", "vehicle/CAR04/workloads/"))
            first = watcher.stdout.readline()
        run = fleetctl("state", "workloadStates", "--vin", "CAR04", "-o", "json")
        request_id = json.loads(run.out)["cars"][0]["request_id"]
        # Requests go under the car's topics too, so the watcher sees both.
        request = watcher.stdout.readline()
        while request.startswith(("vehicle/CAR04/agents/", "vehicle/CAR04/workloads/")):
            request = watcher.stdout.readline()
        assert request == f'vehicle/CAR04/state/req/{request_id} ["workloadStates"]\n'
        reply = watcher.stdout.readline()
        assert reply.startswith(f"vehicle/CAR04/state/resp/{request_id} {{")
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(10) == 0
        assert watcher.stderr is not None
        assert watcher.stderr.read() == ""
    finally:
        killer.cancel()
        watcher.kill()
        watcher.wait()
