"""The journal in STATE_DIR: history, rollback, bounds; without STATE_DIR a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ankaios_sdk import Ankaios, AnkaiosResponseError, ControlInterface
from testkit import MANIFESTS, Broker, Requester

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.journal.store import DATABASE
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.policy import Policy
from fleet_connector.requests.signatures import Claims, SigningKey, sign

SENDER = "vehicle-data-sender"
CONFIG = "vehicle-data-sender-config"
SENDER_MANIFEST = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()
CONFIG_MANIFEST = (MANIFESTS / "config.yaml").read_bytes()


@pytest.fixture
def start_journaled(
    emulator: Emulator, start_connector: Callable[..., Connector], tmp_path: Path
) -> Callable[..., Connector]:
    """Starts a connector with a journal (the same STATE_DIR each time) on the emulator."""

    def start(**overrides: Any) -> Connector:
        return start_connector(
            emulator.control_interface, state_dir=tmp_path / "state", **overrides
        )

    return start


@pytest.fixture
def journaled(start_journaled: Callable[..., Connector]) -> Connector:
    return start_journaled()


def history(requester: Requester, payload: str = "") -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = requester.call(Operation.HISTORY, payload, "h")["entries"]
    return entries


def ids(instances: list[dict[str, str]]) -> list[str]:
    return [i["workload_id"] for i in instances]


def sender_in_ankaios(emulator: Emulator) -> dict[str, Any] | None:
    workloads = emulator.complete_state(["desiredState.workloads"])["desiredState"]
    found: dict[str, Any] | None = workloads.get("workloads", {}).get(SENDER)
    return found


def test_history_lists_changes_newest_first_with_request_ids(
    journaled: Connector, requester: Requester
) -> None:
    requester.call(Operation.APPLY, SENDER_MANIFEST, "first")
    requester.call(Operation.APPLY, CONFIG_MANIFEST, "second")
    requester.call(Operation.DELETE, SENDER_MANIFEST, "third")
    entries = history(requester)
    assert [e["request_id"] for e in entries] == ["third", "second", "first"]
    assert [e["operation"] for e in entries] == ["delete", "apply", "apply"]
    assert all(e["outcome"] == "OK" for e in entries)
    assert entries[2]["workloads"] == [SENDER]
    assert entries[2]["replaced"] == {"workloads": [], "configs": []}
    assert entries[1]["replaced"] == {"workloads": [], "configs": [CONFIG]}
    # Reads are not changes: they leave no entry.
    requester.call(Operation.STATE, '["workloadStates"]', "read")
    assert len(history(requester, "{}")) == 3
    assert [e["request_id"] for e in history(requester, '{"limit": 1}')] == ["third"]


def test_one_entry_whole_has_manifest_snapshot_and_reply(
    journaled: Connector, requester: Requester
) -> None:
    requester.call(Operation.APPLY, SENDER_MANIFEST, "first")
    reply = requester.call(Operation.APPLY, CONFIG_MANIFEST, "second")
    newest = history(requester)[0]["entry"]
    [entry] = history(requester, json.dumps({"entry": newest}))
    assert entry["manifest"] == CONFIG_MANIFEST.decode()
    assert entry["reply"] == reply
    env = entry["snapshot"]["configs"]["configs"][CONFIG]["object"]["fields"]["env"]
    interval = env["array"]["values"][3]["object"]["fields"]
    assert interval["value"] == {"String": "1"}  # the value before the change
    error = requester.call(Operation.HISTORY, '{"entry": 999}', "x")["error"]
    assert error["code"] == "INVALID_REQUEST"
    assert "no entry 999" in error["message"]


def test_rollback_of_a_reconfiguration_brings_back_the_old_instance(
    journaled: Connector, emulator: Emulator, requester: Requester
) -> None:
    [first] = requester.apply(SENDER_MANIFEST)["added_workloads"]
    reconfigured = requester.apply(CONFIG_MANIFEST)
    assert ids(reconfigured["deleted_workloads"]) == [first["workload_id"]]
    rolled = requester.call(Operation.ROLLBACK, "", "undo-1")
    assert ids(rolled["added_workloads"]) == [first["workload_id"]]
    assert ids(rolled["deleted_workloads"]) == ids(reconfigured["added_workloads"])
    assert rolled["rolled_back"]["request_id"] != "undo-1"
    config = emulator.complete_state([f"desiredState.configs.{CONFIG}"])
    env = config["desiredState"]["configs"][CONFIG]["env"]
    assert {"key": "INTERVAL", "value": "1"} in env
    [entry, undone, _] = history(requester)
    assert entry["operation"] == "rollback"
    assert entry["rollback_of"] == undone["entry"]
    assert undone["rolled_back_by"] == entry["entry"]


def test_repeated_rollbacks_walk_back_to_before_the_first_apply(
    journaled: Connector, emulator: Emulator, requester: Requester
) -> None:
    requester.apply(SENDER_MANIFEST)
    requester.delete(SENDER_MANIFEST)
    assert sender_in_ankaios(emulator) is None
    back = requester.call(Operation.ROLLBACK, "{}", "undo-delete")
    assert [w["workload_name"] for w in back["added_workloads"]] == [SENDER]
    assert sender_in_ankaios(emulator) is not None
    gone = requester.call(Operation.ROLLBACK, "{}", "undo-apply")
    assert [w["workload_name"] for w in gone["deleted_workloads"]] == [SENDER]
    assert sender_in_ankaios(emulator) is None
    assert CONFIG not in emulator.complete_state(["desiredState.configs"])["desiredState"].get(
        "configs", {}
    )
    error = requester.call(Operation.ROLLBACK, "{}", "undo-more")["error"]
    assert error == {
        "code": "INVALID_REQUEST",
        "message": "the journal holds no change to roll back",
    }


def test_rollback_of_a_named_entry_and_bad_selectors(
    journaled: Connector, emulator: Emulator, requester: Requester
) -> None:
    requester.call(Operation.APPLY, SENDER_MANIFEST, "install")
    requester.call(Operation.APPLY, "apiVersion: v1\nworkloads: {}\n", "refused")
    by_id = requester.call(Operation.ROLLBACK, '{"request_id": "install"}', "r1")
    assert by_id["rolled_back"]["request_id"] == "install"
    assert sender_in_ankaios(emulator) is None
    again = requester.call(Operation.ROLLBACK, '{"request_id": "install"}', "r2")["error"]
    assert "already rolled back" in again["message"]
    for payload, words in [
        ("[1]", "a rollback request is"),
        ('{"entry": "x"}', "entry must be"),
        ('{"entry": 1, "request_id": "a"}', "not both"),
        ('{"entry": 4242}', "no entry 4242"),
        ('{"request_id": "nope"}', "no entry for request id"),
    ]:
        error = requester.call(Operation.ROLLBACK, payload, "bad")["error"]
        assert error["code"] == "INVALID_REQUEST"
        assert words in error["message"]


def test_without_state_dir_rollback_and_history_say_so(
    connector: Connector, requester: Requester
) -> None:
    assert requester.apply(SENDER_MANIFEST)["added_workloads"]
    for operation in (Operation.ROLLBACK, Operation.HISTORY):
        error = requester.call(operation, "{}", "no-journal")["error"]
        assert error["code"] == "NO_JOURNAL"
        assert "STATE_DIR is not set" in error["message"]


def test_the_journal_is_bounded_by_entries(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    start_connector(emulator.control_interface, state_dir=tmp_path, journal_entries=3)
    for n in range(5):
        requester.call(Operation.APPLY, SENDER_MANIFEST if n % 2 else CONFIG_MANIFEST, f"r{n}")
    assert [e["request_id"] for e in history(requester)] == ["r4", "r3", "r2"]


def test_the_journal_is_bounded_by_bytes(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    start_connector(emulator.control_interface, state_dir=tmp_path, journal_bytes=3000)
    for n in range(6):
        requester.call(Operation.APPLY, SENDER_MANIFEST if n % 2 else CONFIG_MANIFEST, f"r{n}")
    kept = [e["request_id"] for e in history(requester)]
    assert kept[0] == "r5"
    assert 1 <= len(kept) < 6


def test_a_corrupt_journal_is_set_aside_and_the_connector_serves(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    (tmp_path / DATABASE).write_bytes(b"not a database at all" * 200)
    connector = start_connector(emulator.control_interface, state_dir=tmp_path)
    assert connector.store is not None and connector.store.set_aside is not None
    assert requester.call(Operation.APPLY, SENDER_MANIFEST, "after")["added_workloads"]
    assert [e["request_id"] for e in history(requester)] == ["after"]


def test_the_journal_survives_a_restart(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    first = start_connector(emulator.control_interface, state_dir=tmp_path)
    requester.call(Operation.APPLY, SENDER_MANIFEST, "before-restart")
    first.stop()
    start_connector(emulator.control_interface, state_dir=tmp_path)
    assert [e["request_id"] for e in history(requester)] == ["before-restart"]
    assert requester.call(Operation.ROLLBACK, "", "undo")["deleted_workloads"]


def test_a_followed_outcome_is_recorded_in_the_entry(
    journaled: Connector, requester: Requester
) -> None:
    topics = requester.topics
    requester.probe.publish(
        topics.request(Operation.APPLY, "f1") + "/follow;settle=0.1;deadline=10", SENDER_MANIFEST
    )
    reply = json.loads(requester.probe.expect(topics.response(Operation.APPLY, "f1")).payload)
    assert reply["added_workloads"]
    outcome = json.loads(requester.probe.expect(topics.response(Operation.APPLY, "f1")).payload)
    assert outcome["outcome"] == "running"
    [entry] = history(requester)
    assert (entry["request_id"], entry["followed"]) == ("f1", "running")


@pytest.mark.parametrize("startup", ["state-least-privilege.yaml", "v1/state-least-privilege.yaml"])
def test_the_least_privilege_startup_states_allow_the_journal_its_reads(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester, startup: str
) -> None:
    # The snapshot reads desiredState.workloads.<name>, desiredState.configs.<name> and
    # workloadStates.*.<name> before each change; rollback writes the same masks back.
    state = yaml.safe_load((MANIFESTS / startup).read_text())
    access = state["workloads"]["fleetconnector"]["controlInterfaceAccess"]
    with Emulator(control_interface=tmp_path / "ci", access=access) as emu:
        start_connector(emu.control_interface, state_dir=tmp_path / "state")
        [first] = requester.apply(SENDER_MANIFEST)["added_workloads"]
        assert requester.apply(CONFIG_MANIFEST)["added_workloads"]
        rolled = requester.call(Operation.ROLLBACK, "", "undo")
        assert [w["workload_id"] for w in rolled["added_workloads"]] == [first["workload_id"]]
        assert [e["outcome"] for e in history(requester)] == ["OK", "OK", "OK"]


# -- what a rollback may do: the same policy as an apply, never over a later change ---------

PICKED_CONFIG = "apiVersion: v1\nconfigs:\n  picked:\n    image: {image}\n"
PICKED_WORKLOAD = """apiVersion: v1
workloads:
  picked-app:
    runtime: podman
    agent: agent_A
    restartPolicy: NEVER
    configs:
      c: picked
    runtimeConfig: |
      image: {{c.image}}
"""


def test_a_rollback_is_judged_by_the_policy_like_an_apply(
    emulator: Emulator, start_journaled: Callable[..., Connector], requester: Requester
) -> None:
    """A config put back must not re-render a later workload into a refused image."""
    start_journaled(policy=Policy(allowed_image_prefixes=("ok/",)))
    requester.call(Operation.APPLY, PICKED_CONFIG.format(image="evil/x"), "c1")  # unused: allowed
    requester.call(Operation.APPLY, PICKED_CONFIG.format(image="ok/x"), "c2")
    assert "added_workloads" in requester.call(Operation.APPLY, PICKED_WORKLOAD, "w")
    refused = requester.call(Operation.ROLLBACK, json.dumps({"request_id": "c2"}), "r")
    assert refused["error"]["code"] == "POLICY_DENIED"
    assert "evil/x" in refused["error"]["message"]
    configs = emulator.complete_state(["desiredState.configs"])["desiredState"]["configs"]
    assert configs["picked"] == {"image": "ok/x"}


def test_a_rollback_never_deletes_a_protected_workload(
    emulator: Emulator, start_journaled: Callable[..., Connector], requester: Requester
) -> None:
    first = start_journaled()
    requester.call(Operation.APPLY, SENDER_MANIFEST, "a")
    first.stop()
    # The car's owner protects the sender afterwards.
    start_journaled(policy=Policy(protected_workloads=frozenset({SENDER})))
    refused = requester.call(Operation.ROLLBACK, "{}", "r")
    assert refused["error"]["code"] == "POLICY_DENIED"
    assert sender_in_ankaios(emulator) is not None


def test_rolling_back_an_entry_a_later_change_superseded_is_refused(
    journaled: Connector, emulator: Emulator, requester: Requester
) -> None:
    requester.call(Operation.APPLY, SENDER_MANIFEST, "v1")
    requester.call(Operation.APPLY, CONFIG_MANIFEST, "v2")
    before = emulator.complete_state(["desiredState"])["desiredState"]
    refused = requester.call(Operation.ROLLBACK, json.dumps({"request_id": "v1"}), "r")
    assert refused["error"]["code"] == "INVALID_REQUEST"
    assert "superseded" in refused["error"]["message"]
    assert emulator.complete_state(["desiredState"])["desiredState"] == before


def test_history_is_read_under_the_policy_s_field_masks(
    start_journaled: Callable[..., Connector], requester: Requester
) -> None:
    """The journal holds manifests: a car that lets no one read its definitions keeps them."""
    start_journaled(policy=Policy(allowed_field_masks=("workloadStates",)))
    requester.call(Operation.APPLY, SENDER_MANIFEST, "a")
    refused = requester.call(Operation.HISTORY, json.dumps({"entry": 1}), "h")
    assert refused["error"]["code"] == "POLICY_DENIED"
    assert "desiredState.workloads" in refused["error"]["message"]
    plan = requester.call(Operation.PLAN, SENDER_MANIFEST, "p")
    assert plan["error"]["code"] == "POLICY_DENIED"


READER = """\
apiVersion: v1
workloads:
  reader:
    runtime: podman
    agent: agent_A
    restartPolicy: NEVER
    runtimeConfig: "image: reader:1"
"""
READER_RULES = """\
    controlInterfaceAccess:
      allowRules:
        - type: StateRule
          operation: Read
          filterMasks: ["workloadStates"]
"""


def running(emulator: Emulator) -> int:
    """How often ``reader`` was started, once it runs (0 while it does not)."""
    states = emulator.complete_state(["workloadStates.agent_A.reader"])
    per_id = states.get("workloadStates", {}).get("agent_A", {}).get("reader", {})
    up = [s for s in per_id.values() if s["state"] == "Running"]
    return emulator.start_count("reader") if up else 0


def test_rollback_of_an_access_rule_change_restores_the_control_interface(
    tmp_path: Path,
    start_connector: Callable[..., Connector],
    requester: Requester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Access rules do not change the instance id: Ankaios restarts the workload under
    # the same name and gives it a control interface only while it has allow rules.
    with Emulator(
        control_interface=tmp_path / "ci", run_dir=tmp_path / "run", pace_frames=False
    ) as emulator:
        start_connector(emulator.control_interface, state_dir=tmp_path / "state")
        fifo = tmp_path / "run" / "reader" / "control_interface" / "input"
        [first] = requester.apply(READER + READER_RULES)["added_workloads"]
        emulator.wait_for(lambda e: fifo.exists() and running(e) == 1)
        changed = requester.apply(READER)
        assert ids(changed["added_workloads"]) == [first["workload_id"]]
        assert ids(changed["deleted_workloads"]) == [first["workload_id"]]
        emulator.wait_for(lambda e: not fifo.exists() and running(e) == 2)

        rolled = requester.call(Operation.ROLLBACK, "", "undo-rules")
        assert ids(rolled["added_workloads"]) == [first["workload_id"]]
        assert ids(rolled["deleted_workloads"]) == [first["workload_id"]]
        emulator.wait_for(lambda e: fifo.exists() and running(e) == 3)
        reader = emulator.complete_state(["desiredState.workloads.reader"])["desiredState"]
        rules = reader["workloads"]["reader"]["controlInterfaceAccess"]["allowRules"]
        assert rules == [
            {"type": "StateRule", "operation": "Read", "filterMasks": ["workloadStates"]}
        ]
        # The workload's control interface serves the restored rules.
        monkeypatch.setattr(
            ControlInterface, "ANKAIOS_CONTROL_INTERFACE_BASE_PATH", str(fifo.parent)
        )
        with Ankaios() as ank:
            assert ank.get_state(["workloadStates"]).get_workload_states() is not None
            with pytest.raises(AnkaiosResponseError, match="Access denied"):
                ank.get_state(["desiredState"])


def test_a_read_only_state_dir_does_not_stop_the_car(
    broker: Broker, emulator: Emulator, requester: Requester, tmp_path: Path, vin: str
) -> None:
    """The connector in a mount namespace of its own whose STATE_DIR is a read-only file
    system, as a read-only host mount is (the start crashed with a traceback)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(SigningKey.generate("ops-1").trusted_line() + "\n")
    env = {
        **os.environ,
        **broker.env(),
        "VIN": vin,
        "ANKAIOS_CONTROL_INTERFACE_PATH": str(emulator.control_interface),
        "MQTT_CLIENT_ID": f"fleet-connector-{vin}",
        "STATE_DIR": str(state_dir),
        "TRUSTED_KEYS": str(trusted),
    }
    script = f'mount -t tmpfs -o ro tmpfs "{state_dir}" && exec "$0" -m fleet_connector'
    log = tmp_path / "connector.log"
    with log.open("wb") as out:
        car = subprocess.Popen(
            ["unshare", "--map-root-user", "--mount", "sh", "-c", script, sys.executable],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        status = requester.wait_online()
        assert status["state_dir"]["state"] == "error", status
        assert "unable to open database file" in status["state_dir"]["error"]
        # Changes are carried out without the journal; what needs it says why not.
        assert requester.apply(SENDER_MANIFEST)["added_workloads"]
        error = requester.call(Operation.HISTORY, "{}", "h")["error"]
        assert error["code"] == "NO_JOURNAL"
        assert "STATE_DIR cannot be used" in error["message"]
        assert "desired_state" in requester.state(["desiredState.workloads"])
    finally:
        car.terminate()
        car.wait(10)
    assert "Traceback" not in log.read_text()


def test_a_state_dir_that_cannot_be_made_refuses_signed_changes_under_require_signed(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    trusted = tmp_path / "trusted-keys"
    key = SigningKey.generate("ops-1")
    trusted.write_text(key.trusted_line() + "\n")
    connector = start_connector(
        emulator.control_interface,
        state_dir=blocker / "state",
        trusted_keys=trusted,
        require_signed=True,
    )
    assert connector.state_error is not None
    claims = Claims(key.key_id, Operation.APPLY, (connector.config.vin,), 1, int(time.time()) + 60)
    reply = requester.apply(sign(key, claims, SENDER_MANIFEST).envelope())
    assert reply["error"]["code"] == "SIGNATURE_INVALID"
    assert "cannot keep the counters that stop replays" in reply["error"]["message"]
    assert requester.apply(SENDER_MANIFEST)["error"]["code"] == "SIGNATURE_INVALID"
    assert sender_in_ankaios(emulator) is None


def test_a_full_disk_is_an_error_code_and_nothing_is_carried_out(
    emulator: Emulator, journaled: Connector, requester: Requester
) -> None:
    assert journaled.store is not None
    # SQLite's own "database or disk is full": the database may not grow by a page.
    (pages,) = journaled.store.query("PRAGMA page_count")[0]
    journaled.store.query(f"PRAGMA max_page_count = {pages}")
    big = "apiVersion: v0.1\nconfigs:\n  big: " + "x" * 200_000 + "\n"
    error = requester.call(Operation.APPLY, big, "full")["error"]
    assert error["code"] == "STORAGE_ERROR", error
    assert "disk is full" in error["message"] and "not carried out" in error["message"]
    configs = emulator.complete_state(["desiredState.configs"])["desiredState"]
    assert "big" not in configs.get("configs", {})


def test_what_the_cloud_applied_is_pruned_with_the_journal(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    tmp_path: Path,
) -> None:
    connector = start_connector(
        emulator.control_interface, state_dir=tmp_path, journal_bytes=200_000
    )
    for n in range(30):
        config = f"apiVersion: v0.1\nconfigs:\n  c{n}: {'y' * 240_000}\n"
        assert "error" not in requester.call(Operation.APPLY, config, f"r{n}")
    assert connector.store is not None
    expected = connector.store.query("SELECT kind, name FROM journal_expected")
    assert expected == [("config", "c29")]
    assert (tmp_path / DATABASE).stat().st_size < 2_000_000


@pytest.mark.parametrize("operation", [Operation.HISTORY, Operation.ROLLBACK])
@pytest.mark.parametrize("entry", [2**63, 10**30, 0, -1])
def test_an_entry_number_beyond_the_journals_is_an_invalid_request(
    journaled: Connector, requester: Requester, operation: Operation, entry: int
) -> None:
    error = requester.call(operation, json.dumps({"entry": entry}), "big")["error"]
    assert error["code"] == "INVALID_REQUEST", error
    assert "entry" in error["message"]
