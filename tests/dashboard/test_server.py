"""``fleetctl dashboard`` over HTTP: its headers, what it refuses, its command line."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from dashboard.browser_kit import Dashboard, start_dashboard
from testkit import Broker, MqttProbe, free_port

from fleetctl.cli import main as fleetctl


@pytest.fixture
def dashboard(broker: Broker, vin: str) -> Iterator[Dashboard]:
    started = start_dashboard(broker, "--vin", vin)
    yield started
    started.stop()


def get(
    dashboard: Dashboard, path: str, headers: dict[str, str] | None = None, *, cookie: bool = True
) -> http.client.HTTPResponse:
    """GET as the operator's browser does, with the dashboard's cookie (unless ``cookie``
    is False)."""
    address = urllib.parse.urlsplit(dashboard.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    sent = {**(dashboard.cookie if cookie else {}), **(headers or {})}
    connection.request("GET", path, headers=sent)
    return connection.getresponse()


def test_every_response_forbids_inline_script_and_foreign_sources(dashboard: Dashboard) -> None:
    page = get(dashboard, "/")
    assert page.status == 200
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self';" in policy
    assert "unsafe" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.read().decode()
    # Every script is a file of the dashboard's own; no handler attributes.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js" defer>']
    assert not re.search(r"\son\w+=", html)
    for path in ("/static/app.js", "/static/style.css", "/nothing", "/logs?vin=a/b"):
        assert "script-src 'self'" in get(dashboard, path).headers["Content-Security-Policy"]


def test_the_script_never_writes_html(dashboard: Dashboard) -> None:
    script = get(dashboard, "/static/app.js").read().decode()
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "document.write" not in script


def test_another_host_name_and_other_sites_are_refused(dashboard: Dashboard) -> None:
    port = urllib.parse.urlsplit(dashboard.url).port
    # DNS rebinding: a foreign name that resolves to 127.0.0.1 sends its own Host.
    assert get(dashboard, "/", {"Host": f"attacker.example:{port}"}).status == 403
    assert get(dashboard, "/", {"Host": f"localhost:{port}"}).status == 200
    cross = get(dashboard, "/logs?vin=X&workload=app", {"Sec-Fetch-Site": "cross-site"})
    assert cross.status == 403


@pytest.mark.parametrize(
    "query",
    [
        "vin=a/b&workload=app",
        "vin=A&workload=a%2Bb",
        "vin=A&workload=",
        "vin=A&workload=w&tail=0",
        "vin=A&workload=w&tail=many",
    ],
)
def test_a_log_request_the_dashboard_will_not_send_is_a_bad_request(
    dashboard: Dashboard, query: str
) -> None:
    assert get(dashboard, f"/logs?{query}").status == 400


def test_the_page_gets_the_fleet_once_then_changes(
    dashboard: Dashboard, probe: MqttProbe, vin: str
) -> None:
    events = get(dashboard, "/events")
    assert events.headers["Content-Type"] == "text/event-stream"
    first = json.loads(events.readline().removeprefix(b"data: "))
    assert first == {
        "t": "snapshot",
        "cars": [{"vin": vin, "presence": None, "workloads": {}, "agents": {}}],
        "outcomes": [],
        "broker": True,
    }
    assert events.readline() == b"\n"
    probe.publish(f"vehicle/{vin}/agents/agent_A", json.dumps({"connected": True}))
    change = json.loads(events.readline().removeprefix(b"data: "))
    assert change == {
        "t": "changes",
        "changes": [{"t": "agent", "vin": vin, "name": "agent_A", "value": {"connected": "true"}}],
    }


def test_a_log_tail_is_cancelled_when_the_page_leaves(
    dashboard: Dashboard, probe: MqttProbe, vin: str
) -> None:
    probe.subscribe(f"vehicle/{vin}/logs/#")
    tail = get(dashboard, f"/logs?vin={vin}&workload=app&tail=5&follow=1")
    request = probe.expect(timeout=5)
    assert request.topic.startswith(f"vehicle/{vin}/logs/req/dash-")
    assert json.loads(request.payload) == {"workloads": ["app"], "tail": 5, "follow": 600}
    request_id = request.topic.rsplit("/", 1)[1]
    probe.publish(
        f"vehicle/{vin}/logs/resp/{request_id}",
        json.dumps({"seq": 0, "lines": [{"workload": "app", "instance_id": "1", "line": "one"}]}),
    )
    assert json.loads(tail.readline().removeprefix(b"data: ")) == {
        "seq": "0",
        "lines": [{"workload": "app", "instance_id": "1", "line": "one"}],
    }
    tail.close()
    probe.expect(f"vehicle/{vin}/logs/cancel/{request_id}", timeout=5)


def test_sigterm_with_a_page_open_exits_0_at_once(broker: Broker, vin: str) -> None:
    started = start_dashboard(broker, "--vin", vin)
    events = get(started, "/events")
    assert events.readline().startswith(b"data: ")
    stopping = time.monotonic()
    assert started.stop() == 0
    assert time.monotonic() - stopping < 3


def test_usage_errors_exit_2_and_an_unusable_broker_exits_1(broker: Broker) -> None:
    assert fleetctl(["dashboard", "--port", "70000"], broker.env()) == 2
    assert fleetctl(["dashboard", "--port", "x"], broker.env()) == 2
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = {**broker.env(), "MQTT_BROKER_PORT": str(closed.getsockname()[1])}
        assert fleetctl(["dashboard", "--port", "0"], env) == 1


def test_without_its_extra_the_dashboard_says_what_to_install(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As if aiohttp were not installed: importing the server fails.
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    monkeypatch.setitem(sys.modules, "fleetctl.dashboard.server", None)
    assert fleetctl(["dashboard", "--port", "0"], broker.env()) == 1
    assert "pip install 'ankaios-fleet-connector[dashboard]'" in capsys.readouterr().err


def test_a_port_in_use_exits_1_with_the_reason(broker: Broker) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fleetctl", "dashboard", "--port", str(port)],
            env={**broker.env(), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1 port {port}" in result.stderr


def test_another_address_warns_and_says_which_host_names_it_answers(broker: Broker) -> None:
    # 192.0.2.1 (documentation range) is no address of this machine: the warning comes
    # before the dashboard tries to listen, which then fails; nothing leaves the host.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "fleetctl", "dashboard", "--port", "0"),
            *("--listen", "192.0.2.1", "--allow-host", "dash.example"),
        ],
        env={**broker.env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "warning: the dashboard listens on 192.0.2.1" in result.stderr
    assert (
        "It answers only requests addressed to localhost, 127.0.0.1, [::1], dash.example "
        "or 192.0.2.1: add the name browsers use for it with --allow-host NAME"
    ) in result.stderr
    assert "cannot serve on 192.0.2.1" in result.stderr


@pytest.mark.parametrize("path", ["/", "/events", "/logs?vin=A&workload=app&tail=5"])
def test_without_the_printed_token_nobody_sees_the_fleet_or_asks_for_logs(
    dashboard: Dashboard, probe: MqttProbe, vin: str, path: str
) -> None:
    """Another user of the machine reaches 127.0.0.1 too; the token is in what the
    operator's terminal shows, not in any address book of theirs."""
    probe.subscribe(f"vehicle/{vin}/logs/#")
    path = path.replace("vin=A", f"vin={vin}")
    refused = get(dashboard, path, cookie=False)
    assert refused.status == 401
    assert "open the address fleetctl dashboard printed" in refused.read().decode()
    port = urllib.parse.urlsplit(dashboard.url).port
    forged = get(dashboard, path, {"Cookie": f"fleetctl_dashboard_{port}=guess"}, cookie=False)
    assert forged.status == 401
    assert get(dashboard, "/?token=guess", cookie=False).status == 401
    # Nothing was asked of the car.
    assert probe.messages.empty()


def test_the_printed_address_sets_the_cookie_and_leads_to_the_page(
    dashboard: Dashboard,
) -> None:
    address = urllib.parse.urlsplit(dashboard.url)
    opened = get(dashboard, f"/?{address.query}", cookie=False)
    assert opened.status == 303
    assert opened.headers["Location"] == "/"
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith(dashboard.cookie["Cookie"] + ";")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert get(dashboard, "/").status == 200
    assert get(dashboard, "/static/app.js", cookie=False).status == 200  # no secret in it
