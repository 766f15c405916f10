"""Drift after Ankaios restarts from its startup state: reported, and with RECONCILE put back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, MqttProbe, Requester
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.mqtt.topics import Operation

SENDER = "vehicle-data-sender"
CONFIG = "vehicle-data-sender-config"
SENDER_MANIFEST = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()
STARTUP = {
    "apiVersion": "v1",
    "workloads": {
        "navigation": {
            "agent": "agent_A",
            "runtime": "podman",
            "runtimeConfig": "image: example/navigation:1\n",
        }
    },
}


def desired(emulator: Emulator) -> dict[str, Any]:
    state: dict[str, Any] = emulator.complete_state(["desiredState"])["desiredState"]
    return state


def drift_report(probe: MqttProbe, requester: Requester) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(probe.expect(requester.topics.drift).payload)
    return report


def test_a_car_reboot_with_reconcile_brings_back_what_the_cloud_applied(
    start_connector: Callable[..., Connector],
    requester: Requester,
    probe: MqttProbe,
    tmp_path: Path,
) -> None:
    ci = tmp_path / "ci"
    with Emulator(control_interface=ci, pace_frames=False) as before:
        connector = start_connector(ci, state_dir=tmp_path / "state", reconcile=True)
        [added] = requester.apply(SENDER_MANIFEST)["added_workloads"]
    probe.subscribe(requester.topics.drift)
    # The car restarts: Ankaios comes back with its startup state only.
    with Emulator(control_interface=ci, pace_frames=False) as after:
        report = drift_report(probe, requester)
        assert report["drift"] is True
        assert report["missing"] == {"workloads": [SENDER], "configs": [CONFIG]}
        assert report["reconciled"] is True
        assert [w["workload_id"] for w in report["result"]["added_workloads"]] == [
            added["workload_id"]
        ]
        assert SENDER in desired(after)["workloads"]
        assert CONFIG in desired(after)["configs"]
        assert update_requests(after) == 1
        entries = requester.call(Operation.HISTORY, "{}", "h")["entries"]
        assert entries[0]["operation"] == "reconcile"
        assert connector.control_interface.connected
    assert before.connected is False


def test_without_reconcile_the_drift_is_only_reported(
    start_connector: Callable[..., Connector],
    requester: Requester,
    probe: MqttProbe,
    tmp_path: Path,
) -> None:
    ci = tmp_path / "ci"
    with Emulator(control_interface=ci, pace_frames=False):
        start_connector(ci, state_dir=tmp_path / "state")
        requester.apply(SENDER_MANIFEST)
    probe.subscribe(requester.topics.drift)
    with Emulator(control_interface=ci, pace_frames=False) as after:
        report = drift_report(probe, requester)
        assert report["missing"] == {"workloads": [SENDER], "configs": [CONFIG]}
        assert report["reconciled"] is False
        assert "result" not in report
        assert SENDER not in desired(after).get("workloads", {})
        assert update_requests(after) == 0
    # Retained: whoever looks later sees it.
    late = MqttProbe(probe.broker)
    try:
        late.subscribe(requester.topics.drift)
        retained = late.expect(requester.topics.drift)
        assert retained.retain
        assert json.loads(retained.payload)["missing"]["workloads"] == [SENDER]
    finally:
        late.close()


def test_a_deleted_startup_workload_that_came_back_is_deleted_again(
    start_connector: Callable[..., Connector],
    requester: Requester,
    probe: MqttProbe,
    tmp_path: Path,
) -> None:
    ci = tmp_path / "ci"
    navigation = json.dumps(STARTUP)  # JSON is YAML
    with Emulator(control_interface=ci, state=STARTUP, pace_frames=False):
        start_connector(ci, state_dir=tmp_path / "state", reconcile=True)
        assert requester.delete(navigation)["deleted_workloads"]
    probe.subscribe(requester.topics.drift)
    with Emulator(control_interface=ci, state=STARTUP, pace_frames=False) as after:
        report = drift_report(probe, requester)
        assert report["returned"] == {"workloads": ["navigation"], "configs": []}
        assert [w["workload_name"] for w in report["result"]["deleted_workloads"]] == ["navigation"]
        assert "navigation" not in desired(after).get("workloads", {})


def test_no_drift_no_report(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    probe: MqttProbe,
    tmp_path: Path,
) -> None:
    connector = start_connector(emulator.control_interface, state_dir=tmp_path, reconcile=True)
    requester.apply(SENDER_MANIFEST)
    probe.subscribe(requester.topics.drift)
    emulator.restart_agent()  # a reconnect: the connector checks, and finds nothing lost
    assert connector.control_interface.wait_connected(10)
    # Queued behind the check, so answered after it.
    assert requester.call(Operation.HISTORY, '{"limit": 1}', "h")["entries"]
    probe.expect_nothing(0.3)
    assert update_requests(emulator) == 1


@pytest.mark.parametrize("reconcile", [True, False])
def test_an_ankaios_server_restart(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    probe: MqttProbe,
    *,
    tmp_path: Path,
    reconcile: bool,
) -> None:
    # The connector learns of the restart at its next request to Ankaios, at the latest its
    # periodic read of the agents' load (AGENT_INTERVAL).
    start_connector(
        emulator.control_interface, state_dir=tmp_path, reconcile=reconcile, agent_interval=0.5
    )
    [added] = requester.apply(SENDER_MANIFEST)["added_workloads"]
    probe.subscribe(requester.topics.drift)
    emulator.restart_server()
    report = drift_report(probe, requester)
    assert report["missing"] == {"workloads": [SENDER], "configs": [CONFIG]}
    assert report["reconciled"] is reconcile
    if reconcile:
        # What was applied is back, with the instance it had.
        assert [w["workload_id"] for w in report["result"]["added_workloads"]] == [
            added["workload_id"]
        ]
        assert SENDER in desired(emulator)["workloads"]
        assert update_requests(emulator) == 2
    else:
        assert "result" not in report
        assert SENDER not in desired(emulator).get("workloads", {})
        assert update_requests(emulator) == 1
    # The connector still serves after the restart.
    assert requester.call(Operation.HISTORY, '{"limit": 1}', "after")["entries"]
