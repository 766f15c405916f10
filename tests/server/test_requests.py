"""Requests to a car through the API, answered with the car's own reply (real connectors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from testkit import MqttProbe
from testkit.live import manifest
from testkit.server import FakeCar, RunningServer, make_token, wait_until

from fleet_connector import Connector


def _server(
    make_server: Callable[..., RunningServer], url: str, **overrides: object
) -> tuple[RunningServer, str]:
    return make_server(url, **overrides), make_token(url, "ops", "operator")


def _wait_known(server: RunningServer, token: str, vin: str, online: bool = True) -> None:
    wait_until(
        lambda: (
            (r := server.get(f"/api/v1/cars/{vin}", token)).status_code == 200
            and r.json()["online"] is online
        )
    )


def test_apply_is_sent_once_answered_with_the_reply_audited_and_seen_running(
    database_url: str,
    make_server: Callable[..., RunningServer],
    real_car: Connector,
    probe: MqttProbe,
    vin: str,
) -> None:
    server, token = _server(make_server, database_url)
    _wait_known(server, token, vin)
    probe.subscribe(f"vehicle/{vin}/manifest/apply/req/#")

    response = server.request(
        "POST", f"/api/v1/cars/{vin}/manifest/apply", token, data=manifest("sender")
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert [w["workload_name"] for w in reply["added_workloads"]] == ["sender"]
    request_id = response.headers["X-Request-Id"]

    sent = probe.expect(f"vehicle/{vin}/manifest/apply/req/{request_id}")
    assert sent.payload.decode() == manifest("sender")
    probe.expect_nothing(0.3)  # once, not twice

    car = wait_until(
        lambda: (
            (c := server.get(f"/api/v1/cars/{vin}", token).json())["workloads"]
            and c["workloads"][0]["state"] == "running"
            and c
        )
    )
    assert car["workloads"][0]["name"] == "sender"

    entries = server.get(f"/api/v1/cars/{vin}/audit", token).json()["items"]
    assert [(e["actor"], e["action"], e["request_ids"]) for e in entries] == [
        ("ops", "car.manifest.apply", [request_id]),
        ("ops", "car.manifest.apply.reply", [request_id]),
    ]
    assert entries[1]["detail"] == {"outcome": "ok"}
    metrics = server.get("/metrics").text
    assert 'fleet_server_requests_total{operation="manifest/apply",outcome="ok"} 1.0' in metrics


def test_the_car_s_error_keeps_its_code(
    sqlite_url: str, make_server: Callable[..., RunningServer], real_car: Connector, vin: str
) -> None:
    server, token = _server(make_server, sqlite_url)
    _wait_known(server, token, vin)
    response = server.request(
        "POST", f"/api/v1/cars/{vin}/manifest/apply", token, data="workloads: ["
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    response = server.request("POST", f"/api/v1/cars/{vin}/history", token, data="{}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "NO_JOURNAL"


def test_state_plan_and_logs(
    sqlite_url: str, make_server: Callable[..., RunningServer], real_car: Connector, vin: str
) -> None:
    server, token = _server(make_server, sqlite_url)
    _wait_known(server, token, vin)
    talker = manifest("talker", image="talker:1")
    plan = server.request("POST", f"/api/v1/cars/{vin}/manifest/plan", token, data=talker)
    assert plan.status_code == 200, plan.text
    assert (
        server.request("POST", f"/api/v1/cars/{vin}/manifest/apply", token, data=talker).status_code
        == 200
    )
    wait_until(
        lambda: (
            (c := server.get(f"/api/v1/cars/{vin}", token).json())["workloads"]
            and c["workloads"][0]["state"] == "running"
        )
    )

    state = server.request("POST", f"/api/v1/cars/{vin}/state", token, json=["workloadStates"])
    assert state.status_code == 200
    assert "talker" in json.dumps(state.json()["workload_states"])
    bad = server.request("POST", f"/api/v1/cars/{vin}/state", token, data='{"not": "a list"}')
    assert bad.status_code == 400 and "a JSON list of field masks" in bad.json()["error"]["message"]

    def lines_logged() -> list[str]:
        logs = server.request(
            "POST",
            f"/api/v1/cars/{vin}/logs",
            token,
            json={"workloads": ["talker"], "tail": 10},
            stream=True,
        )
        assert logs.status_code == 200
        assert logs.headers["Content-Type"] == "application/x-ndjson"
        batches = [json.loads(line) for line in logs.iter_lines() if line]
        assert batches[-1]["end"] == "done"
        return [entry["line"] for batch in batches for entry in batch.get("lines", [])]

    assert wait_until(lambda: lines_logged() == [f"line {i}" for i in range(1, 6)])


def test_no_reply_is_504_and_an_offline_car_gets_it_queued(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    probe: MqttProbe,
    vin: str,
) -> None:
    silent = make_car(vin)
    silent.presence()  # says online, but no connector answers
    server, token = _server(make_server, sqlite_url, request_timeout=0.5)
    _wait_known(server, token, vin)
    response = server.request("POST", f"/api/v1/cars/{vin}/state", token, json=[])
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "NO_REPLY"
    assert response.json()["request_id"] == response.headers["X-Request-Id"]

    silent.presence("offline")
    _wait_known(server, token, vin, online=False)
    probe.subscribe(f"vehicle/{vin}/state/req/#")
    response = server.request("POST", f"/api/v1/cars/{vin}/state", token, json=[])
    assert response.status_code == 202
    body = response.json()
    assert body["queued"] is True
    probe.expect(f"vehicle/{vin}/state/req/{body['request_id']}")
    logs = server.request("POST", f"/api/v1/cars/{vin}/logs", token, json={"workloads": ["w"]})
    assert (logs.status_code, logs.json()["error"]["code"]) == (409, "OFFLINE")


def test_a_followed_outcome_becomes_the_car_s_last_outcome(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    real_car: Connector,
    probe: MqttProbe,
    vin: str,
) -> None:
    server, token = _server(make_server, sqlite_url)
    _wait_known(server, token, vin)
    probe.publish(f"vehicle/{vin}/manifest/apply/req/r1/follow;settle=0.2", manifest("sim"))
    car = wait_until(
        lambda: (c := server.get(f"/api/v1/cars/{vin}", token).json())["last_outcome"] and c
    )
    outcome = car["last_outcome"]
    # When the server saw it, as a time: the dashboard shows it beside the outcome.
    assert datetime.fromisoformat(outcome.pop("at")).tzinfo is not None
    assert outcome == {
        "outcome": "running",
        "operation": "apply",
        "request_id": "r1",
        "workloads": {"sim": "running"},
    }


def test_an_apply_followed_through_the_api_reports_its_outcome(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    real_car: Connector,
    probe: MqttProbe,
    vin: str,
) -> None:
    server, token = _server(make_server, sqlite_url)
    _wait_known(server, token, vin)
    probe.subscribe(f"vehicle/{vin}/manifest/apply/req/#")
    response = server.request(
        "POST",
        f"/api/v1/cars/{vin}/manifest/apply?follow=true&settle=0.2&deadline=30",
        token,
        data=manifest("followed"),
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-Id"]
    sent = probe.expect()
    assert (
        sent.topic == f"vehicle/{vin}/manifest/apply/req/{request_id}/follow;settle=0.2;deadline=30"
    )
    car = wait_until(
        lambda: (c := server.get(f"/api/v1/cars/{vin}", token).json())["last_outcome"] and c
    )
    outcome = car["last_outcome"]
    # When the server saw it, as a time: the dashboard shows it beside the outcome.
    assert datetime.fromisoformat(outcome.pop("at")).tzinfo is not None
    assert outcome == {
        "outcome": "running",
        "operation": "apply",
        "request_id": request_id,
        "workloads": {"followed": "running"},
    }
    bad = server.request(
        "POST", f"/api/v1/cars/{vin}/manifest/apply?follow=true&settle=-1", token, data="x: 1"
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "settle must be a number from 0 to 600"


def test_a_signed_request_is_passed_on_as_it_is_and_its_key_audited(
    sqlite_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    probe: MqttProbe,
    vin: str,
) -> None:
    make_car(vin).presence("offline")
    server, token = _server(make_server, sqlite_url)
    _wait_known(server, token, vin, online=False)
    envelope = (
        "ANKAIOS-SIGNED-REQUEST-V1\nkey: ops-2026\noperation: manifest/apply\n"
        f"target: {vin}\ncounter: 1\nnot-after: 1796173600\nsignature: AAAA\n\n"
        + manifest("signed")
    ).encode()
    probe.subscribe(f"vehicle/{vin}/manifest/apply/req/#")
    response = server.request("POST", f"/api/v1/cars/{vin}/manifest/apply", token, data=envelope)
    assert response.status_code == 202
    assert probe.expect().payload == envelope
    (entry,) = server.get(f"/api/v1/cars/{vin}/audit", token).json()["items"]
    assert entry["key_id"] == "ops-2026"
