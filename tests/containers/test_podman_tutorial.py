"""The whole tutorial with real containers: the emulator's podman runtime runs the
fleet-connector image from a startup state like the tutorial's state.yaml, and the
connector applies, re-configures and deletes the vehicle-data-sender container over MQTT.

Differences from the tutorial's files: the locally built images, the test broker's
address/port and a VIN of the test's own; INTERVAL 0.2 then 2 (not 1 then 10) to keep it quick.
The connector runs as its image's non-root user with only CAP_DAC_OVERRIDE, which is what
lets it open the root-owned 0600 FIFOs (docs/containers.md).
"""

from __future__ import annotations

import itertools
import re
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from containers.podman_kit import Images, containers_with, podman, remove_containers_with
from paho.mqtt.enums import CallbackAPIVersion
from testkit import MANIFESTS, Broker, MqttProbe, Requester

from ankaios_emulator import Emulator
from ankaios_emulator.runtimes.podman import PodmanRuntime

pytestmark = pytest.mark.containers

SENDER = "vehicle-data-sender"
CONFIG = "vehicle-data-sender-config"
CONNECTOR = "fleetconnector"
# What the connector gets in commandOptions on top of the tutorial's (docs/containers.md).
LEAST_PRIVILEGE = ["--cap-drop=all", "--cap-add=DAC_OVERRIDE", "--security-opt=no-new-privileges"]


def connector_state(image: str, broker: Broker, vin: str) -> dict[str, Any]:
    """The tutorial's state.yaml with our image, our broker and our VIN."""
    state: dict[str, Any] = yaml.safe_load((MANIFESTS / "state.yaml").read_text())
    workload = state["workloads"][CONNECTOR]
    tutorial = yaml.safe_load(workload["runtimeConfig"])
    assert tutorial["commandOptions"][0] == "--net=host"
    options = [
        "--net=host",
        *LEAST_PRIVILEGE,
        "-e",
        f"VIN={vin}",
        "-e",
        f"MQTT_BROKER_ADDR={broker.host}",
        "-e",
        f"MQTT_BROKER_PORT={broker.port}",
    ]
    workload["runtimeConfig"] = yaml.safe_dump({"image": image, "commandOptions": options})
    return state


def sender_env(broker: Broker, vin: str, interval: str) -> list[dict[str, str]]:
    return [
        {"key": "MQTT_BROKER_ADDR", "value": "localhost"},
        {"key": "MQTT_BROKER_PORT", "value": str(broker.port)},
        {"key": "TOPIC", "value": f"vehicle/{vin}/sensors/speed"},
        {"key": "INTERVAL", "value": interval},
    ]


def sender_manifest(image: str, broker: Broker, vin: str, interval: str) -> str:
    """The tutorial's vehicle-data-sender.yaml with our image, broker, topic and interval."""
    manifest: dict[str, Any] = yaml.safe_load((MANIFESTS / "vehicle-data-sender.yaml").read_text())
    workload = manifest["workloads"][SENDER]
    workload["runtimeConfig"], n = re.subn(
        r"(?m)^image: .*$", f"image: {image}", workload["runtimeConfig"]
    )
    assert n == 1
    env = manifest["configs"][CONFIG]["env"]
    assert [e["key"] for e in env] == ["MQTT_BROKER_ADDR", "MQTT_BROKER_PORT", "TOPIC", "INTERVAL"]
    manifest["configs"][CONFIG]["env"] = sender_env(broker, vin, interval)
    return yaml.safe_dump(manifest, sort_keys=False)


def config_manifest(broker: Broker, vin: str, interval: str) -> str:
    """The tutorial's config.yaml (only the config) with a new interval."""
    manifest: dict[str, Any] = yaml.safe_load((MANIFESTS / "config.yaml").read_text())
    assert list(manifest) == ["apiVersion", "configs"]
    manifest["configs"][CONFIG]["env"] = sender_env(broker, vin, interval)
    return yaml.safe_dump(manifest, sort_keys=False)


class Speeds:
    """Every speed value on the topic, with its arrival time."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.values: list[tuple[float, int]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"speeds-{uuid.uuid4()}")
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.on_connect = lambda client, *args: client.subscribe(topic, 0)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert subscribed.wait(10), "speed subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.values.append((time.monotonic(), int(msg.payload)))
            self._cond.notify_all()

    def wait_count(self, count: int, since: float, timeout: float) -> list[tuple[float, int]]:
        """The values that arrived after ``since`` once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [v for v in self.values if v[0] >= since]
                if len(got) >= count:
                    return got
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(got)} of {count} speed values in {timeout} s")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def gaps(values: list[tuple[float, int]]) -> list[float]:
    return [b[0] - a[0] for a, b in itertools.pairwise(values)]


def consecutive(values: list[tuple[float, int]]) -> bool:
    """The sender's triangle wave moves by exactly 1 per value."""
    return all(abs(b[1] - a[1]) == 1 for a, b in itertools.pairwise(values))


def instances(emulator: Emulator, name: str) -> dict[str, Any]:
    states = emulator.complete_state(["workloadStates"]).get("workloadStates", {})
    found: dict[str, Any] = states.get("agent_A", {}).get(name, {})
    return found


def runtime_of(emulator: Emulator) -> PodmanRuntime:
    runtime = emulator._runtime  # the emulator has no public accessor for its runtime
    assert isinstance(runtime, PodmanRuntime)
    return runtime


@pytest.fixture
def emulator(images: Images, broker: Broker, vin: str, tmp_path: Path) -> Iterator[Emulator]:
    state = tmp_path / "state.yaml"
    state.write_text(yaml.safe_dump(connector_state(images.connector, broker, vin)))
    emu = Emulator(state=state, runtime="podman", run_dir=tmp_path / "run")
    label: str | None = None
    try:
        emu.start()
        label = runtime_of(emu).label
        yield emu
    finally:
        emu.stop()
        if label is not None:
            left = containers_with(label)
            remove_containers_with(label)
            assert left == [], f"containers left after the emulator stopped: {left}"


def test_tutorial_with_containers(
    emulator: Emulator, images: Images, broker: Broker, probe: MqttProbe, vin: str
) -> None:
    runtime = runtime_of(emulator)
    requester = Requester(probe, vin)
    speeds = Speeds(broker, f"vehicle/{vin}/sensors/speed")
    try:
        _run_tutorial(
            emulator=emulator,
            runtime=runtime,
            images=images,
            broker=broker,
            requester=requester,
            speeds=speeds,
            vin=vin,
        )
    finally:
        speeds.close()


def _run_tutorial(
    *,
    emulator: Emulator,
    runtime: PodmanRuntime,
    images: Images,
    broker: Broker,
    requester: Requester,
    speeds: Speeds,
    vin: str,
) -> None:
    # -- the connector container comes up and answers --------------------------------
    requester.wait_online(timeout=60)
    [connector] = containers_with(runtime.label, f"name={CONNECTOR}")
    assert connector["State"] == "running"
    assert connector["Image"] == images.connector
    uid = podman("exec", str(connector["Id"]), "id", "-u").stdout.strip()
    assert uid == "10001", "the connector must not run as root"
    [(connector_id, connector_state)] = instances(emulator, CONNECTOR).items()
    assert connector_state["state"] == "Running"

    # -- apply: the sender container publishes every 0.2 s ---------------------------
    applied = requester.apply(sender_manifest(images.sender, broker, vin, "0.2"))
    [added] = applied["added_workloads"]
    assert added["workload_name"] == SENDER
    first_id = added["workload_id"]
    emulator.wait_for(
        lambda e: instances(e, SENDER).get(first_id, {}).get("state") == "Running", timeout=30
    )
    fast = speeds.wait_count(12, since=0.0, timeout=30)[1:]  # the first gap includes startup
    assert consecutive(fast), fast
    fast_gap = statistics.median(gaps(fast))
    assert 0.1 <= fast_gap <= 0.5, f"median gap {fast_gap:.2f} s with INTERVAL 0.2"

    state = requester.state(["workloadStates"])
    execution = state["workload_states"]["agent_A"][SENDER][first_id]
    assert (execution["state"], execution["substate"]) == ("RUNNING", "RUNNING_OK")
    [first_container] = containers_with(runtime.label, f"name={SENDER}")
    assert first_container["Image"] == images.sender
    instance_name = f"{SENDER}.{first_id}.agent_A"
    assert first_container["Names"] == [instance_name]
    # logs requests are served from `podman logs`
    deadline = time.monotonic() + 10
    while not any("connected" in line for line in emulator.logs(instance_name)):
        assert time.monotonic() < deadline, emulator.logs(instance_name)
        time.sleep(0.1)

    # -- re-configure: Ankaios replaces the container; values come 10 times less often
    reconfigured = requester.apply(config_manifest(broker, vin, "2"))
    [deleted] = reconfigured["deleted_workloads"]
    [restarted] = reconfigured["added_workloads"]
    assert deleted["workload_id"] == first_id
    second_id = restarted["workload_id"]
    assert second_id != first_id
    emulator.wait_for(
        lambda e: (
            set(instances(e, SENDER)) == {second_id}
            and instances(e, SENDER)[second_id]["state"] == "Running"
        ),
        timeout=30,
    )
    # The old sender stopped on SIGTERM by itself (exit 0, no SIGKILL after podman's -t).
    assert runtime.exit_codes[instance_name] == 0
    [second_container] = containers_with(runtime.label, f"name={SENDER}")
    assert second_container["Id"] != first_container["Id"]
    restarted_at = time.monotonic()
    slow = speeds.wait_count(3, since=restarted_at, timeout=30)
    slow_gap = statistics.median(gaps(slow))
    assert 1.5 <= slow_gap <= 3.0, f"median gap {slow_gap:.2f} s with INTERVAL 2"
    assert 4 <= slow_gap / fast_gap <= 25, (fast_gap, slow_gap)

    # -- delete: the container is stopped and removed ----------------------------------
    removed = requester.delete(sender_manifest(images.sender, broker, vin, "0.2"))
    assert [w["workload_id"] for w in removed["deleted_workloads"]] == [second_id]
    emulator.wait_for(lambda e: not instances(e, SENDER), timeout=30)
    assert containers_with(runtime.label, f"name={SENDER}") == []
    assert runtime.exit_codes[f"{SENDER}.{second_id}.agent_A"] == 0
    last = len(speeds.values)
    time.sleep(2.5)  # longer than INTERVAL 2: a live sender would have published
    assert len(speeds.values) == last, "values still arrive after delete"

    # -- the connector as PID 1 stops cleanly on SIGTERM -------------------------------
    started = time.monotonic()
    podman("stop", "-t", "10", str(connector["Id"]))
    took = time.monotonic() - started
    assert took < 5, f"podman stop took {took:.1f} s: SIGTERM not handled?"
    emulator.wait_for(
        lambda e: instances(e, CONNECTOR).get(connector_id, {}).get("state") == "Succeeded",
        timeout=10,
    )
