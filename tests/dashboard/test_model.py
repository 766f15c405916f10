"""The dashboard's model of the fleet (what a message changes, and what it may not), and
which addresses it treats as loopback."""

from __future__ import annotations

import json

import pytest

from fleetctl.dashboard import is_loopback, model
from fleetctl.dashboard.model import (
    MAX_PER_CAR,
    MAX_TEXT,
    FleetModel,
    Topic,
    parse_topic,
)
from fleetctl.dashboard.server import allowed_hosts


def update(model: FleetModel, topic: str, payload: object) -> list[dict[str, object]]:
    parsed = parse_topic(topic)
    assert parsed is not None, topic
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return model.update(parsed, data)


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("vehicle/1/status", Topic("1", "status")),
        ("vehicle/1/workloads/app", Topic("1", "workload", "app")),
        ("vehicle/1/agents/agent_A", Topic("1", "agent", "agent_A")),
        ("vehicle/1/manifest/apply/resp", Topic("1", "outcome", "apply")),
        ("vehicle/1/manifest/delete/resp/r-1", Topic("1", "outcome", "delete", "r-1")),
        ("vehicle/1/logs/resp/dash-1", Topic("1", "logs", request_id="dash-1")),
        ("vehicle/1/manifest/apply/req/r-1", None),
        ("vehicle/1/state/resp", None),
        ("vehicle/1/workloads/a/b", None),
        ("vehicle//status", None),
        ("other/1/status", None),
    ],
)
def test_topics_are_taken_apart(topic: str, parsed: Topic | None) -> None:
    assert parse_topic(topic) == parsed


def test_a_workload_is_set_changed_and_removed_with_one_change_each() -> None:
    model = FleetModel()
    state = {
        "agent": "agent_A",
        "instance_id": "i",
        "state": "running",
        "substate": "ok",
        "info": "",
        "since": "t",
    }
    [change] = update(model, "vehicle/C/workloads/app", state)
    assert change == {"t": "wl", "vin": "C", "name": "app", "value": state}
    assert update(model, "vehicle/C/workloads/app", state) == []  # a repeat changes nothing
    [change] = update(model, "vehicle/C/workloads/app", {**state, "state": "failed"})
    assert change["value"]["state"] == "failed"  # type: ignore[index]
    [change] = update(model, "vehicle/C/workloads/app", b"")
    assert change == {"t": "wl", "vin": "C", "name": "app", "value": None}
    assert model.cars["C"].workloads == {}


def test_values_become_bounded_text() -> None:
    model = FleetModel()
    update(
        model,
        "vehicle/C/workloads/app",
        {"state": 1, "info": "x" * 10_000, "substate": {"a": [1]}, "since": None},
    )
    value = model.cars["C"].workloads["app"]
    assert value["state"] == "1"
    assert len(value["info"]) == MAX_TEXT
    assert value["substate"] == '{"a":[1]}'
    assert value["since"] == ""
    update(model, "vehicle/C/workloads/bad", b"<not json>")
    assert model.cars["C"].workloads["bad"]["state"] == "invalid"


def test_a_car_cannot_grow_the_model_without_bound() -> None:
    model = FleetModel()
    for n in range(MAX_PER_CAR + 10):
        update(model, f"vehicle/C/workloads/w{n}", {"state": "running"})
    assert len(model.cars["C"].workloads) == MAX_PER_CAR


def test_the_whole_fleets_states_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each car within its limits, many cars together may not exceed the model's."""
    monkeypatch.setattr(model, "MAX_MODEL_CHARS", 2_000)
    fleet = FleetModel()
    info = {"state": "running", "info": "i" * 400}
    kept = [n for n in range(10) if update(fleet, f"vehicle/V{n}/workloads/app", info)]
    assert kept == [0, 1, 2, 3]
    assert fleet.chars <= 2_000
    assert update(fleet, "vehicle/V9/workloads/app", info) == []
    # What is kept may still change, shrink, or go, which makes room again.
    assert update(fleet, "vehicle/V0/workloads/app", {"state": "failed"})
    assert update(fleet, "vehicle/V1/workloads/app", b"")
    assert update(fleet, "vehicle/V9/workloads/app", info)


def test_made_up_vins_cannot_grow_the_model_without_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "MAX_CARS", 3)
    fleet = FleetModel()
    for n in range(5):
        update(fleet, f"vehicle/V{n}/status", {"status": "online"})
    assert list(fleet.cars) == ["V0", "V1", "V2"]


def test_with_cars_named_others_are_ignored_and_the_named_are_known() -> None:
    model = FleetModel(["A", "B"])
    assert update(model, "vehicle/X/status", {"status": "online"}) == []
    assert update(model, "vehicle/A/status", {"status": "online"})
    snapshot = model.snapshot()
    assert [car["vin"] for car in snapshot["cars"]] == ["A", "B"]
    assert snapshot["cars"][1]["presence"] is None  # never seen


def test_outcomes_say_what_the_reply_says() -> None:
    model = FleetModel()
    update(
        model,
        "vehicle/C/manifest/apply/resp/r1",
        {
            "added_workloads": [{"workload_name": "app", "agent_name": "a", "workload_id": "1"}],
            "deleted_workloads": [],
        },
    )
    update(
        model, "vehicle/C/manifest/delete/resp", {"error": {"code": "REJECTED", "message": "no"}}
    )
    update(
        model,
        "vehicle/C/manifest/apply/resp/r1",
        {
            "outcome": "failed",
            "workloads": {
                "app": {"outcome": "failed", "state": "failed", "substate": "exec_failed"}
            },
        },
    )
    followed, refused, applied = model.outcomes
    assert (applied["operation"], applied["request_id"], applied["ok"]) == ("apply", "r1", "yes")
    assert applied["summary"] == "added app; deleted nothing"
    assert (refused["ok"], refused["summary"]) == ("no", "REJECTED: no")
    assert followed["ok"] == "no"
    assert followed["summary"] == "followed: failed; app failed (failed/exec_failed)"
    assert update(model, "vehicle/C/manifest/apply/resp", b"") == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.0.2.10", False),
        ("dashboard.example", False),
    ],
)
def test_only_loopback_addresses_go_without_a_warning(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_loopback_dashboard_answers_only_its_own_host_names() -> None:
    assert allowed_hosts("127.0.0.1", 8080) == {"127.0.0.1:8080", "localhost:8080", "[::1]:8080"}


def test_a_dashboard_on_every_address_keeps_the_host_check() -> None:
    """DNS rebinding: a page of attacker.example, whose name now resolves to the dashboard's
    address, sends Host attacker.example and must be refused on 0.0.0.0 as on loopback."""
    everywhere = allowed_hosts("0.0.0.0", 8080, ["dash.example", "10.1.2.3", "fd00::5"])
    assert "attacker.example:8080" not in everywhere
    assert "0.0.0.0:8080" not in everywhere
    assert {"localhost:8080", "dash.example:8080", "10.1.2.3:8080", "[fd00::5]:8080"} <= everywhere
    assert "192.0.2.10:80" in allowed_hosts("192.0.2.10", 80)
    assert "192.0.2.10" in allowed_hosts("192.0.2.10", 80)
