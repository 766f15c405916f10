"""Rollouts carried out by fleet-server, with scripted cars (tests/testkit/scripted.py), on
SQLite and PostgreSQL: late joiners, rollback and thresholds, windows, the speed gate,
disruption budgets, approvals, final aborts, and what an attacker cannot do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker, MqttProbe
from testkit.rollouts import (
    MANIFEST,
    audit_actions,
    car,
    get,
    prefix,
    start,
    states,
    wait_car,
    wait_rollout,
)
from testkit.scripted import ScriptedCar
from testkit.server import Api, RunningServer, wait_until

from fleet_connector.requests.signatures import SigningKey
from fleet_server.__main__ import main


@pytest.fixture
def scripted(broker: Broker) -> Iterator[Callable[..., ScriptedCar]]:
    made: list[ScriptedCar] = []

    def make(vin: str, **options: Any) -> ScriptedCar:
        made.append(ScriptedCar(broker, vin, **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


def _known(api: Api, *vins: str, online: bool = True) -> None:
    for vin in vins:
        wait_until(
            lambda vin=vin: (
                (r := api.get(f"/api/v1/cars/{vin}")).status_code == 200
                and r.json()["online"] is online
            )
        )


def test_selector_takes_late_joiners_new_labelled_and_back_online(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    # Labelled with the test's own fleet too: the session's broker holds other tests' cars.
    first = scripted(f"{p}1", labels={"region": "eu", "fleet": p})
    other = scripted(f"{p}2", labels={"region": "us", "fleet": p})
    away = scripted(f"{p}3", labels={"region": "eu", "fleet": p}, online=False)
    away.offline()
    _known(api, first.vin, other.vin)
    _known(api, away.vin, online=False)
    until = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    rollout_id = start(api, {"selector": f"region=eu,fleet={p}", "until": until})
    wait_car(api, rollout_id, first.vin, "succeeded")
    rollout = wait_car(api, rollout_id, away.vin, "pending")
    assert car(rollout, away.vin)["waiting"] == "offline"
    assert other.vin not in states(rollout)

    newcomer = scripted(f"{p}4", labels={"region": "eu", "fleet": p})
    wait_car(api, rollout_id, newcomer.vin, "succeeded")
    response = api.call("PATCH", f"/api/v1/cars/{other.vin}/labels", json={"region": "eu"})
    assert response.status_code == 200, response.text
    wait_car(api, rollout_id, other.vin, "succeeded")
    away.online()
    rollout = wait_car(api, rollout_id, away.vin, "succeeded")

    assert rollout["state"] == "running"  # open to late joiners until `until`
    for each in (first, other, away, newcomer):
        assert len(each.applied()) == 1, each.vin
    rollout = get(api, rollout_id)
    assert [c["vin"] for c in rollout["cars"] if c.get("joined_late")] == sorted(
        [other.vin, newcomer.vin]
    )
    joined = [e for e in audit_actions(api) if e["action"] == "rollout.car.joined"]
    assert {v for e in joined for v in e["vins"]} == {other.vin, newcomer.vin}


def test_crashes_are_rolled_back_and_the_threshold_stops_the_rollout(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    fleet = [scripted(f"{p}{i}", outcome="failed") for i in range(1, 5)]
    _known(api, *(c.vin for c in fleet))
    rollout_id = start(
        api,
        {"vins": f"{p}1-{p}4"},
        batchSize=1,
        onFailure="rollback",
        abort={"failed": 2},
    )
    rollout = wait_rollout(api, rollout_id, "aborted")

    assert [states(rollout)[c.vin] for c in fleet] == [
        "rolled_back",
        "rolled_back",
        "skipped",
        "skipped",
    ]
    assert "abort threshold failed 2 reached" in rollout["reason"]
    crashed = car(rollout, fleet[0].vin)
    assert crashed["kind"] == "failed"
    assert crashed["code"] == "NOT_RUNNING"
    assert "Exit code: '2'" in crashed["reason"]
    assert crashed["logs"]["vehicle-data-sender"][-1].startswith("error: INTERVAL")
    for each in fleet[:2]:
        (applied,) = each.applied()
        assert each.journal.rolled_back == {applied}  # its own journal, naming the request
        assert each.rollbacks() == [f"{applied}-rollback"]
    for each in fleet[2:]:
        assert each.received == []
    assert api.call("POST", f"/api/v1/rollouts/{rollout_id}/resume").status_code == 409


def test_a_closed_window_holds_every_request(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    waiting = scripted(f"{p}1")
    _known(api, waiting.vin)
    closed = {"cron": "0 3 29 2 *", "timeZone": "Europe/Berlin", "duration": 60}
    rollout_id = start(api, {"vins": [waiting.vin]}, window=closed)
    rollout = wait_until(
        lambda: (
            (r := get(api, rollout_id))["state"] == "waiting" and r["cars"][0].get("waiting") and r
        )
    )
    assert "outside the window" in rollout["waiting"]
    assert rollout["cars"][0] == {
        "vin": waiting.vin,
        "state": "pending",
        "wave": 1,
        "waiting": "window",
    }
    assert waiting.received == []

    everyday = {"cron": "* * * * *", "timeZone": "Asia/Tokyo", "duration": "1m"}
    opened = start(api, {"vins": [waiting.vin]}, window=everyday)
    wait_rollout(api, opened, "done")
    assert len(waiting.applied()) == 1
    assert get(api, rollout_id)["state"] == "waiting"


def test_speed_gate_on_the_senders_topic(
    api: Api, scripted: Callable[..., ScriptedCar], probe: MqttProbe, broker: Broker
) -> None:
    p = prefix()
    driving = scripted(f"{p}1")
    _known(api, driving.vin)
    speed = f"vehicle/{driving.vin}/sensors/speed"  # the tutorial's sender publishes here
    rollout_id = start(
        api, {"vins": [driving.vin]}, gate={"topic": "sensors/speed", "equals": 0, "for": 1}
    )
    wait_until(lambda: "no value" in (get(api, rollout_id)["cars"][0].get("waiting") or ""))

    # The car drives: the real sender publishes its speed (1, 2, ... 100, ... 0, 1, ...).
    sender = subprocess.Popen(
        [sys.executable, "-m", "vehicle_data_sender", "--topic", speed, "--interval", "0.02"],
        env={**os.environ, **broker.env()},
    )
    try:
        wait_until(
            lambda: "does not hold" in (get(api, rollout_id)["cars"][0].get("waiting") or ""),
            timeout=15,
        )
        assert driving.received == []
    finally:
        sender.terminate()
        assert sender.wait(10) == 0
    assert driving.received == []  # nothing while it drove
    stopped = time.monotonic()
    probe.publish(speed, "0", qos=0)  # parked: plain text, QoS 0, as the sender sends
    rollout = wait_rollout(api, rollout_id, "done")
    (change,) = driving.journal.changes
    assert change.started - stopped >= 1.0  # not contacted before 0 held for 1 s
    assert states(rollout) == {driving.vin: "succeeded"}


def test_disruption_budget_per_label_group(api: Api, scripted: Callable[..., ScriptedCar]) -> None:
    p = prefix()
    eu = [scripted(f"{p}{i}", labels={"region": "eu"}, delay=0.6) for i in (1, 2, 3, 4)]
    us = [scripted(f"{p}{i}", labels={"region": "us"}, delay=0.6) for i in (5, 6)]
    _known(api, *(c.vin for c in eu + us))
    rollout_id = start(
        api,
        {"vins": f"{p}1-{p}6"},
        budget={"groupBy": "region", "maxUnavailable": "50%"},
    )
    wait_until(
        lambda: any(
            (c.get("waiting") or "").startswith("budget") for c in get(api, rollout_id)["cars"]
        )
    )
    wait_rollout(api, rollout_id, "done")

    def most_at_once(group: list[ScriptedCar]) -> int:
        spans = [span for each in group for span in each.intervals()]
        return max(sum(1 for a, b in spans if a <= t < b) for t, _ in spans)

    assert most_at_once(eu) == 2  # 50% of 4 cars
    assert most_at_once(us) == 1  # 50% of 2 cars
    assert most_at_once(eu + us) == 3  # the groups' budgets are their own


def test_pause_point_waits_for_an_operators_approval(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    fleet = [scripted(f"{p}{i}") for i in (1, 2, 3)]
    _known(api, *(c.vin for c in fleet))
    rollout_id = start(api, {"vins": f"{p}1-{p}3"}, canary={"count": 1}, pauseAfter=["canary"])
    rollout = wait_rollout(api, rollout_id, "waiting")
    assert rollout["waiting"].startswith("approval of canary")
    assert states(rollout) == {
        fleet[0].vin: "succeeded",
        fleet[1].vin: "pending",
        fleet[2].vin: "pending",
    }

    denied = api.call("POST", f"/api/v1/rollouts/{rollout_id}/approve", role="viewer")
    assert denied.status_code == 403
    assert fleet[1].received == []
    approved = api.call("POST", f"/api/v1/rollouts/{rollout_id}/approve")
    assert approved.status_code == 200, approved.text
    rollout = wait_rollout(api, rollout_id, "done")
    assert rollout["approvals"][0]["stage"] == "canary"
    assert rollout["approvals"][0]["by"] == "operator-token"
    (entry,) = [e for e in audit_actions(api) if e["action"] == "rollout.approve"]
    assert entry["actor"] == "operator-token"
    assert entry["detail"]["rollout"] == rollout_id
    again = api.call("POST", f"/api/v1/rollouts/{rollout_id}/approve")
    assert again.status_code == 409


def test_an_aborted_rollout_is_final_and_offers_the_remaining_cars(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    fleet = [scripted(f"{p}{i}") for i in (1, 2, 3)]
    _known(api, *(c.vin for c in fleet))
    rollout_id = start(api, {"vins": f"{p}1-{p}3"}, canary={"count": 1}, pauseAfter=["canary"])
    wait_rollout(api, rollout_id, "waiting")
    aborted = api.call("POST", f"/api/v1/rollouts/{rollout_id}/abort")
    assert aborted.status_code == 200, aborted.text
    assert aborted.json()["state"] == "aborted"

    for action in ("resume", "approve", "pause", "abort"):
        refused = api.call("POST", f"/api/v1/rollouts/{rollout_id}/{action}")
        assert refused.status_code == 409, action
        assert "final" in refused.json()["error"]["message"]
    rollout = get(api, rollout_id)
    assert rollout["state"] == "aborted"
    assert states(rollout) == {
        fleet[0].vin: "succeeded",
        fleet[1].vin: "skipped",
        fleet[2].vin: "skipped",
    }
    assert fleet[1].received == [] and fleet[2].received == []
    remaining = rollout["remaining"]
    assert remaining["cars"] == {"vins": [fleet[1].vin, fleet[2].vin]}
    assert remaining["manifest"] == MANIFEST

    response = api.call("POST", "/api/v1/rollouts", json=remaining)
    assert response.status_code == 201, response.text
    wait_rollout(api, response.json()["id"], "done")
    assert [len(c.applied()) for c in fleet] == [1, 1, 1]


def test_attackers(api: Api, scripted: Callable[..., ScriptedCar]) -> None:
    p = prefix()
    target = scripted(f"{p}1", labels={"region": "eu"})
    _known(api, target.vin)
    body = {"manifest": MANIFEST, "cars": {"vins": [target.vin]}}
    assert api.call("POST", "/api/v1/rollouts", role="viewer", json=body).status_code == 403
    assert api.call("POST", "/api/v1/rollouts", role=None, json=body).status_code == 401

    for forged in ("ro-000000000000", "ro-1' OR '1'='1", "..%2f..%2fcars", "ro-ZZZZZZZZZZZZ"):
        for method, path in (("GET", ""), ("POST", "/approve"), ("POST", "/abort")):
            response = api.call(method, f"/api/v1/rollouts/{forged}{path}")
            assert response.status_code == 404, (forged, path, response.text)
            assert "'1'='1" not in response.text

    everything = {"manifest": MANIFEST, "cars": {"selector": ""}}
    refused = api.call("POST", "/api/v1/rollouts", json=everything)
    assert refused.status_code == 400
    assert '"all": true' in refused.json()["error"]["message"]
    for wrong in ({"selector": "", "all": "yes"}, {"selector": "region=eu", "all": True}):
        response = api.call("POST", "/api/v1/rollouts", json={**everything, "cars": wrong})
        assert response.status_code == 400, wrong
    assert target.received == []

    second = scripted(f"{p}2")
    _known(api, second.vin)
    rollout_id = start(
        api, {"vins": [target.vin, second.vin]}, canary={"count": 1}, pauseAfter=["canary"]
    )
    wait_rollout(api, rollout_id, "waiting")
    assert (
        api.call("POST", f"/api/v1/rollouts/{rollout_id}/approve", role="viewer").status_code == 403
    )
    assert (
        api.call("POST", f"/api/v1/rollouts/{rollout_id}/abort", role="viewer").status_code == 403
    )
    assert get(api, rollout_id)["approvals"] == []
    assert not [e for e in audit_actions(api) if e["action"] == "rollout.approve"]
    assert second.received == []


def test_pause_resume_every_change_audited_and_in_metrics(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    fleet = [scripted(f"{p}{i}") for i in (1, 2)]
    _known(api, *(c.vin for c in fleet))
    rollout_id = start(api, {"vins": f"{p}1-{p}2"}, batchSize=1, pauseAfter=[1], name="two cars")
    wait_rollout(api, rollout_id, "waiting")
    metrics = api.get("/metrics", role=None).text
    assert 'fleet_server_rollouts{state="waiting"} 1.0' in metrics
    assert f'fleet_server_rollout_cars{{rollout="{rollout_id}",state="pending"}} 1.0' in metrics

    paused = api.call("POST", f"/api/v1/rollouts/{rollout_id}/pause")
    assert paused.json()["state"] == "paused"
    assert api.call("POST", f"/api/v1/rollouts/{rollout_id}/approve").status_code == 200
    rollout = wait_until(
        lambda: (r := get(api, rollout_id))["cars"][1].get("waiting") == "paused" and r
    )
    assert rollout["state"] == "paused"
    assert fleet[1].received == []
    resumed = api.call("POST", f"/api/v1/rollouts/{rollout_id}/resume")
    assert resumed.status_code == 200, resumed.text
    assert api.call("POST", f"/api/v1/rollouts/{rollout_id}/resume").status_code == 409
    wait_rollout(api, rollout_id, "done")

    trail = [
        (e["action"], e["detail"].get("state"), e["detail"].get("stage"), e["vins"])
        for e in audit_actions(api)
        if e["detail"].get("rollout") == rollout_id
    ]
    first, second = (c.vin for c in fleet)
    assert trail == [
        ("rollout.create", "running", None, [first, second]),
        ("rollout.state", "running", 1, []),  # the empty canary stage passed
        ("rollout.car.sent", "sent", None, [first]),
        ("rollout.car.succeeded", "succeeded", None, [first]),
        ("rollout.state", "waiting", 1, []),
        ("rollout.pause", "paused", None, []),
        ("rollout.approve", "paused", 1, []),
        ("rollout.resume", "running", None, []),
        ("rollout.state", "running", 2, []),
        ("rollout.car.sent", "sent", None, [second]),
        ("rollout.car.succeeded", "succeeded", None, [second]),
        ("rollout.state", "done", 2, []),
    ]
    listed = api.get("/api/v1/rollouts").json()
    (mine,) = [r for r in listed["items"] if r["id"] == rollout_id]
    assert (mine["name"], mine["state"], mine["counts"]) == ("two cars", "done", {"succeeded": 2})
    assert 'fleet_server_rollouts{state="done"} 1.0' in wait_until(
        lambda: (
            (m := api.get("/metrics", role=None).text)
            and 'fleet_server_rollouts{state="done"} 1.0' in m
            and m
        )
    )
    assert main(["audit", "verify", "--database", api.database], environ={}) == 0


def test_cars_in_flight_finish_after_the_threshold_aborts(
    api: Api, scripted: Callable[..., ScriptedCar]
) -> None:
    p = prefix()
    crashing = scripted(f"{p}1", outcome="failed")
    slow = [scripted(f"{p}{i}", delay=1.0) for i in (2, 3)]
    later = scripted(f"{p}4")
    _known(api, crashing.vin, later.vin, *(c.vin for c in slow))
    rollout_id = start(api, {"vins": f"{p}1-{p}4"}, batchSize=3, abort={"failed": 1})
    rollout = wait_rollout(api, rollout_id, "aborted")
    assert states(rollout)[crashing.vin] == "failed"
    assert states(rollout)[later.vin] == "skipped"
    # Aborted is final for what is not sent yet; what is in flight is still followed.
    rollout = wait_until(
        lambda: all(states(r := get(api, rollout_id))[c.vin] == "succeeded" for c in slow) and r
    )
    assert rollout["state"] == "aborted"
    assert later.received == []


def test_a_signature_that_ran_out_before_the_car_got_it_is_a_new_attempt(
    api: Api,
    scripted: Callable[..., ScriptedCar],
    make_server: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    key = tmp_path / "rollouts.key"
    key.write_text(SigningKey.generate("rollouts-2026").to_text())
    signing = {"sign_key": key, "sign_valid_for": 1.0}
    api.server.stop()
    api.server = make_server(api.database, instance="first", **signing)
    p = prefix()
    missed = scripted(f"{p}1", lose_first=True)
    _known(api, missed.vin)
    rollout_id = start(api, {"vins": [missed.vin]})
    wait_car(api, rollout_id, missed.vin, "sent")
    api.server.stop()  # before it could tell the car had nothing

    api.server = make_server(api.database, instance="second", **signing)
    rollout = wait_rollout(api, rollout_id, "done")
    second = f"{rollout_id}-{missed.vin}-2"
    assert car(rollout, missed.vin)["request_id"] == second
    assert missed.applied() == [second]  # the first never arrived; nothing twice
    sent = [e for e in audit_actions(api) if e["action"] == "rollout.car.sent"]
    assert [(e["detail"]["attempt"], e["key_id"]) for e in sent] == [
        (1, "rollouts-2026"),
        (2, "rollouts-2026"),
    ]


def test_a_rollback_the_car_carried_out_is_not_asked_again_after_a_restart(
    api: Api, scripted: Callable[..., ScriptedCar], make_server: Callable[..., RunningServer]
) -> None:
    api.server.stop()
    api.server = make_server(api.database, instance="first")
    p = prefix()
    crashing = scripted(f"{p}1", outcome="failed", rollback_delay=30)
    _known(api, crashing.vin)
    rollout_id = start(api, {"vins": [crashing.vin]}, onFailure="rollback")
    wait_until(crashing.rollbacks, timeout=15)
    api.server.stop()  # the rollback is done, its reply not yet there: nothing recorded
    api.server = make_server(api.database, instance="second")
    rollout = wait_rollout(api, rollout_id, "done-with-failures")
    assert car(rollout, crashing.vin)["state"] == "rolled_back"
    assert len(crashing.rollbacks()) == 1  # its journal said so: not rolled back twice
    assert [op for op, _ in crashing.received].count("manifest/rollback") == 1
