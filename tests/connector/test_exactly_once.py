"""Exactly once under SIGKILL: replies per request and updates Ankaios got, per crash point.

The connector runs as a process and kills itself with a real SIGKILL at the point
``FLEET_CONNECTOR_CRASH_AT`` names (see fleet_connector/journal/crashpoints.py): timing a kill from
outside cannot hit a window between two lines. Then it is started again on the same MQTT
session, the broker redelivers the unacknowledged request, and we count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Broker, MqttProbe, Requester
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.signatures import Claims, SigningKey, sign

SENDER_MANIFEST = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()

# crash point -> (replies to the request, updates Ankaios received), with and without journal
WITH_JOURNAL = {
    "before-ankaios": (1, 1),
    "after-ankaios": (1, 1),
    "after-journal": (1, 1),
    "after-reply": (1, 1),
}
WITHOUT_JOURNAL = {
    "before-ankaios": (1, 1),
    "after-ankaios": (1, 2),
    "after-reply": (2, 2),
}


def start(
    broker: Broker,
    vin: str,
    ci: Path,
    state_dir: Path | None,
    crash_at: str | None,
    *,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **(extra_env or {}),
        **broker.env(),
        "VIN": vin,
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(ci),
        "MQTT_CLIENT_ID": f"fleet-connector-{vin}",
    }
    env.pop("FLEET_CONNECTOR_CRASH_AT", None)
    env.pop("STATE_DIR", None)
    if state_dir is not None:
        env["STATE_DIR"] = str(state_dir)
    if crash_at is not None:
        env["FLEET_CONNECTOR_CRASH_AT"] = crash_at
    with (ci.parent / "connector.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet_connector"], env=env, stdout=log, stderr=log
        )


def count_after_crash(
    broker: Broker,
    probe: MqttProbe,
    vin: str,
    tmp_path: Path,
    *,
    point: str,
    journal: bool,
    payload: bytes = SENDER_MANIFEST,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, int, list[dict[str, Any]]]:
    state_dir = tmp_path / "state" if journal else None
    requester = Requester(probe, vin)
    probe.subscribe(requester.topics.status)
    # One client sees the replies in the order the connector published them.
    counter = MqttProbe(broker)
    reply_topic = requester.topics.response(Operation.APPLY, "once")
    later_topic = requester.topics.response(Operation.STATE, "later")
    counter.subscribe(reply_topic)
    counter.subscribe(later_topic)
    with Emulator(control_interface=tmp_path / "ci", pace_frames=False) as emu:
        crashing = start(broker, vin, emu.control_interface, state_dir, point, extra_env=extra_env)
        try:
            requester.wait_online(timeout=60)  # a loaded machine starts Python slowly
            probe.publish(requester.topics.request(Operation.APPLY, "once"), payload)
            assert crashing.wait(timeout=60) == -9, "the connector did not crash"
        finally:
            if crashing.poll() is None:
                crashing.kill()
        again = start(broker, vin, emu.control_interface, state_dir, None, extra_env=extra_env)
        replies = []
        try:
            # Requests are carried out in order and the redelivered one comes first, so
            # once a later request is answered the redelivery has been dealt with.
            probe.publish(requester.topics.request(Operation.STATE, "later"), "[]")
            while (message := counter.expect(timeout=60)).topic != later_topic:
                replies.append(json.loads(message.payload))
        finally:
            again.terminate()
            again.wait(timeout=10)
        counter.close()
        return len(replies), update_requests(emu), replies


@pytest.mark.parametrize("point", sorted(WITH_JOURNAL))
def test_with_the_journal_one_reply_and_one_update(
    broker: Broker, probe: MqttProbe, vin: str, tmp_path: Path, point: str
) -> None:
    replies, updates, bodies = count_after_crash(
        broker, probe, vin, tmp_path, point=point, journal=True
    )
    assert (replies, updates) == WITH_JOURNAL[point]
    [body] = bodies
    added: list[dict[str, str]] = body["added_workloads"]
    assert [w["workload_name"] for w in added] == ["vehicle-data-sender"]


@pytest.mark.parametrize("point", sorted(WITHOUT_JOURNAL))
def test_without_the_journal_what_at_least_once_gives(
    broker: Broker, probe: MqttProbe, vin: str, tmp_path: Path, point: str
) -> None:
    replies, updates, _ = count_after_crash(
        broker, probe, vin, tmp_path, point=point, journal=False
    )
    assert (replies, updates) == WITHOUT_JOURNAL[point]


@pytest.mark.parametrize("point", ["after-journal", "after-reply"])
def test_a_signed_change_redelivered_after_a_crash_is_no_replay(
    broker: Broker, probe: MqttProbe, vin: str, tmp_path: Path, point: str
) -> None:
    """Its counter was used by its first delivery; the journal, not a refusal, answers."""
    key = SigningKey.generate("ops-1")
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(key.trusted_line() + "\n")
    claims = Claims(key.key_id, Operation.APPLY, (vin,), 1, int(time.time()) + 600)
    envelope = sign(key, claims, SENDER_MANIFEST).envelope()
    replies, updates, bodies = count_after_crash(
        broker,
        probe,
        vin,
        tmp_path,
        point=point,
        journal=True,
        payload=envelope,
        extra_env={"TRUSTED_KEYS": str(trusted), "REQUIRE_SIGNED": "true"},
    )
    assert (replies, updates) == (1, 1)
    assert "added_workloads" in bodies[0], bodies
