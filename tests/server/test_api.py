"""The REST API: roles, labels and selectors, errors, audit, metrics, health, attackers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import requests
from testkit import MqttProbe
from testkit.server import Api, FakeCar, RunningServer, make_token, wait_until

from fleet_server.api.app import routes
from fleet_server.auth import Role


def known(api: Api, vin: str) -> None:
    wait_until(lambda: api.get(f"/api/v1/cars/{vin}").status_code == 200)


@pytest.fixture
def car(make_car: Callable[[str], FakeCar], vin: str) -> FakeCar:
    c = make_car(vin)
    c.presence(labels={"region": "eu", "model": "x"})
    c.workload("sender")
    return c


ROLE_ORDER = ["viewer", "operator", "admin"]


def test_role_matrix_every_route(api: Api, vin: str, car: FakeCar) -> None:
    """No token or an unknown one: 401; a lower role: 403; enough: anything but those."""
    known(api, vin)
    api.tokens["revoked"] = make_token(api.database, "gone", "admin")
    from fleet_server.__main__ import main

    assert main(["tokens", "revoke", "gone", "--database", api.database], environ={}) == 0
    for route in routes():
        path = re.sub(r"\{\w+\}", "NO-SUCH-THING", route.path)
        for who in (None, "bogus", "revoked", *ROLE_ORDER):
            headers = (
                {}
                if who is None
                else {"Authorization": f"Bearer {api.tokens.get(who, 'fst_bogus')}"}
            )
            status = requests.request(
                route.method, api.server.url + path, headers=headers, timeout=30
            ).status_code
            if route.role is None:
                assert status == 200, (route.path, who)
            elif who not in ROLE_ORDER:
                assert status == 401, (route.method, route.path, who)
            elif Role.parse(who) < route.role:
                assert status == 403, (route.method, route.path, who)
            else:
                assert status not in (401, 403), (route.method, route.path, who)


def test_errors_are_json_with_codes(api: Api) -> None:
    response = api.get("/api/v1/cars", role=None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    response = api.get("/api/v1/cars", role=None, headers={"Authorization": "Basic eDp5"})
    assert response.status_code == 401
    response = api.call("PATCH", "/api/v1/cars/X/labels", role="viewer", json={})
    assert (response.status_code, response.json()["error"]["code"]) == (403, "FORBIDDEN")
    assert "has role viewer; this needs operator" in response.json()["error"]["message"]
    response = api.get("/api/v1/cars/NOPE")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "NOT_FOUND")
    response = api.get("/api/v1/nothing-here")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "NOT_FOUND")
    response = api.call("DELETE", "/api/v1/cars")
    assert (response.status_code, response.json()["error"]["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_labels_set_removed_and_winning_over_the_car_s_own(
    api: Api, vin: str, car: FakeCar
) -> None:
    known(api, vin)
    response = api.call(
        "PATCH", f"/api/v1/cars/{vin}/labels", json={"region": "us", "ring": "canary"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["labels"] == {"region": "us", "model": "x", "ring": "canary"}
    assert body["labels_set"] == {"region": "us", "ring": "canary"}
    assert body["labels_reported"] == {"region": "eu", "model": "x"}

    response = api.call("PATCH", f"/api/v1/cars/{vin}/labels", json={"region": None})
    assert response.json()["labels"] == {"region": "eu", "model": "x", "ring": "canary"}

    entries = api.get(f"/api/v1/cars/{vin}/audit").json()["items"]
    assert [(e["actor"], e["action"], e["detail"]) for e in entries] == [
        ("operator-token", "car.labels", {"labels": {"region": "us", "ring": "canary"}}),
        ("operator-token", "car.labels", {"labels": {"region": None}}),
    ]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"region": "<script>alert(1)</script>"}, "the value must be"),
        ({"bad key": "x"}, "label key 'bad key'"),
        ({"region": 5}, "the value is a string or null"),
        (["region"], "the body is a JSON object"),
        ("not json at all", "the body is not valid JSON"),
    ],
)
def test_bad_labels_are_refused_and_change_nothing(
    api: Api, vin: str, car: FakeCar, body: object, says: str
) -> None:
    known(api, vin)
    raw = body if isinstance(body, str) else json.dumps(body)
    response = api.call("PATCH", f"/api/v1/cars/{vin}/labels", data=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
    assert says in response.json()["error"]["message"]
    assert api.get(f"/api/v1/cars/{vin}").json()["labels"] == {"region": "eu", "model": "x"}
    assert api.get(f"/api/v1/cars/{vin}/audit").json()["items"] == []


def test_selectors_online_and_paging(
    api: Api, make_car: Callable[[str], FakeCar], vin: str
) -> None:
    fleet = f"f{vin.lower()}"
    vins = [f"{vin}-{i}" for i in range(5)]
    for i, v in enumerate(vins):
        c = make_car(v)
        c.presence(
            status="online" if i % 2 == 0 else "offline",
            labels={"fleet": fleet, "ring": f"r{i % 3}"},
        )
    wait_until(
        lambda: api.get("/api/v1/cars", params={"selector": f"fleet={fleet}"}).json()["total"] == 5
    )

    def chosen(**params: str) -> list[str]:
        body = api.get("/api/v1/cars", params={"selector": f"fleet={fleet}", **params}).json()
        return [item["vin"] for item in body["items"]]

    assert chosen() == vins
    assert chosen(online="true") == [vins[0], vins[2], vins[4]]
    assert chosen(online="false") == [vins[1], vins[3]]
    assert chosen(selector=f"fleet={fleet},ring in (r0,r2)") == [vins[0], vins[2], vins[3]]
    assert chosen(selector=f"fleet={fleet},ring!=r0") == [vins[1], vins[2], vins[4]]
    assert chosen(limit="2", offset="1") == vins[1:3]
    body = api.get("/api/v1/cars", params={"selector": f"fleet={fleet}", "limit": "2"}).json()
    assert body["total"] == 5 and len(body["items"]) == 2


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"selector": "region in (eu"}, "selector: column 14: expected ',' or ')'"),
        ({"selector": "region=<b>"}, "selector: column 8: label 'region'"),
        ({"online": "yes"}, "online must be true or false"),
        ({"limit": "-1"}, "limit must be from 0 to 1000"),
        ({"offset": "x"}, "offset must be a whole number"),
    ],
)
def test_bad_queries_say_what_is_wrong(api: Api, params: dict[str, str], says: str) -> None:
    response = api.get("/api/v1/cars", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(says)


def test_an_oversized_body_is_413(
    database_url: str,
    make_server: Callable[..., RunningServer],
    make_car: Callable[[str], FakeCar],
    vin: str,
) -> None:
    make_car(vin).presence()
    token = make_token(database_url, "op", "operator")
    server = make_server(database_url, max_body=2048)
    wait_until(lambda: server.get(f"/api/v1/cars/{vin}", token).status_code == 200)
    response = server.request("POST", f"/api/v1/cars/{vin}/manifest/apply", token, data=b"x" * 4096)
    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "PAYLOAD_TOO_LARGE",
        "message": "the body is larger than 2048 bytes",
    }


def test_vins_with_topic_characters_reach_no_topic(api: Api, probe: MqttProbe) -> None:
    """A VIN with / + or # cannot address other cars' topics: nothing is published."""
    probe.subscribe("vehicle/#")
    while not probe.messages.empty():
        probe.messages.get()
    for vin in ("a%2Fb", "a+b", "%2B", "%23", "x%2F..%2Fy", "..", "a%00b"):
        response = api.call("POST", f"/api/v1/cars/{vin}/state", data="[]")
        assert response.status_code == 404, vin
        assert response.json()["error"]["code"] == "NOT_FOUND"
    received = []
    while not probe.messages.empty():
        msg = probe.messages.get()
        if not msg.retain:
            received.append(msg.topic)
    assert not any("/state/req" in topic for topic in received)


def test_a_car_cannot_plant_markup_in_labels(
    api: Api, make_car: Callable[[str], FakeCar], vin: str
) -> None:
    make_car(vin).presence(labels={"x": "<img src=x onerror=alert(1)>", "ok": "1"})
    known(api, vin)
    assert api.get(f"/api/v1/cars/{vin}").json()["labels"] == {"ok": "1"}


def test_metrics_without_token(api: Api, vin: str, car: FakeCar) -> None:
    known(api, vin)
    response = api.get("/metrics", role=None)
    assert response.status_code == 200
    text = response.text
    assert 'fleet_server_cars{presence="online"}' in text
    assert 'fleet_server_workloads{state="running"}' in text
    assert 'fleet_server_rollouts{state="running"} 0.0' in text
    assert "fleet_server_ingest_lag_seconds_bucket" in text
    lag_count = next(
        line
        for line in text.splitlines()
        if line.startswith("fleet_server_ingest_lag_seconds_count")
    )
    assert float(lag_count.split()[-1]) >= 2


def test_metrics_on_a_listener_of_their_own(
    database_url: str, make_server: Callable[..., RunningServer]
) -> None:
    from testkit import free_port

    port = free_port()
    server = make_server(database_url, metrics_listen=("127.0.0.1", port))
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
    assert server.get("/metrics").status_code == 404


def test_health_and_readiness(api: Api) -> None:
    assert api.get("/healthz", role=None).json() == {"status": "ok"}
    ready = api.get("/readyz", role=None)
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"database": True, "broker": True, "inventory": True},
    }


def test_not_ready_without_the_broker(
    database_url: str, make_broker: Callable[..., object], make_server: Callable[..., RunningServer]
) -> None:
    from fleet_connector.mqtt.broker import BrokerSettings

    broker = make_broker()
    server = make_server(database_url, broker=BrokerSettings(host=broker.host, port=broker.port))  # type: ignore[attr-defined]
    assert server.get("/readyz").status_code == 200
    broker.kill()  # type: ignore[attr-defined]
    # (a requests.Response is falsy for an error status: compare the status)
    wait_until(lambda: server.get("/readyz").status_code == 503)
    assert server.get("/readyz").json()["checks"]["broker"] is False
    assert server.get("/healthz").status_code == 200


def test_admins_manage_tokens_through_the_api(api: Api) -> None:
    created = api.call(
        "POST", "/api/v1/tokens", role="admin", json={"name": "ci", "role": "viewer"}
    )
    assert created.status_code == 201
    token = created.json()["token"]
    assert api.server.get("/api/v1/cars", token).status_code == 200
    listed = api.get("/api/v1/tokens", role="admin").json()["items"]
    assert {t["name"]: t["role"] for t in listed}["ci"] == "viewer"
    assert token not in json.dumps(listed)
    again = api.call("POST", "/api/v1/tokens", role="admin", json={"name": "ci", "role": "admin"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "CONFLICT")

    assert api.call("DELETE", "/api/v1/tokens/ci", role="admin").status_code == 200
    assert api.server.get("/api/v1/cars", token).status_code == 401
    assert api.call("DELETE", "/api/v1/tokens/ci", role="admin").status_code == 404
    actions = [
        (e["actor"], e["action"], e["detail"]) for e in api.get("/api/v1/audit").json()["items"]
    ]
    assert actions == [
        ("admin-token", "token.create", {"name": "ci", "role": "viewer"}),
        ("admin-token", "token.revoke", {"name": "ci"}),
    ]
