"""The journal in STATE_DIR: history, rollback, bounds; without STATE_DIR a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import MANIFESTS, Requester

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.journal.store import DATABASE
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.policy import Policy

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
