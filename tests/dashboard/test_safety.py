"""Whatever a car (or anyone who can publish) sends is shown as text and runs nothing.

The hostile values are published by hand here: an attacker is exactly someone who publishes.
The page must show the markup literally, create no element from it, and run no script of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from dashboard.browser_kit import Dashboard, Page
from testkit import MqttProbe

SCRIPT = "<script>document.title='pwned';window.pwned=1</script>"
IMAGE = "<img src=x onerror=\"document.title='pwned';window.pwned=1\">"
# What the page would have made of them, had it parsed them as HTML.
PARSED_SCRIPT = (
    "return document.querySelectorAll('body script, body img, #log-lines *, "
    "#workloads td *:not(span):not(button)').length"
)


def not_pwned(page: Page) -> None:
    assert page.driver.title == "Fleet dashboard"
    assert page.driver.execute_script("return window.pwned === undefined")
    assert page.driver.execute_script(PARSED_SCRIPT) == 0


def test_markup_in_workload_states_shows_as_text(
    open_dashboard: Callable[..., tuple[Dashboard, Page]], probe: MqttProbe, vins: list[str]
) -> None:
    vin = vins[0]
    name = "<svg onload=\"document.title='pwned'\">"  # a workload name has no "/"
    state = {
        "agent": IMAGE,
        "instance_id": "1",
        "state": f"failed{SCRIPT}",
        "substate": SCRIPT,
        "info": IMAGE,
        "since": "2026-12-01T00:00:00+00:00",
    }
    probe.client.publish(f"vehicle/{vin}/workloads/{name}", json.dumps(state), 1, retain=True)
    agent = {"connected": True, "tags": {IMAGE: SCRIPT}, "cpu_usage": SCRIPT, "since": IMAGE}
    probe.client.publish(f"vehicle/{vin}/agents/{name}", json.dumps(agent), 1, retain=True)
    status = {"status": "online", "ankaios": SCRIPT, "connector_version": IMAGE, "since": SCRIPT}
    probe.client.publish(f"vehicle/{vin}/status", json.dumps(status), 1, retain=True)
    probe.client.publish(
        f"vehicle/{vin}/manifest/apply/resp",
        json.dumps({"error": {"code": SCRIPT, "message": IMAGE}}),
        1,
    ).wait_for_publish(5)
    try:
        _, page = open_dashboard("--vin", vin)
        page.wait(lambda: page.cars().get(vin, ["", ""])[2] == SCRIPT, 5)
        page.select_car(vin)
        # The car's status and its workloads may reach the page in different batches.
        page.wait(lambda: name in page.workloads(), 5)
        row = page.workloads()[name]
        assert row[:6] == [name, IMAGE, f"failed{SCRIPT}", SCRIPT, IMAGE, "2026-12-01 00:00:00"]
        assert page.cars()[vin][4] == IMAGE
        assert page.agents()[name][1:5] == ["connected", "", f"{IMAGE}={SCRIPT}", IMAGE]
        not_pwned(page)
    finally:
        for kind in ("workloads", "agents"):
            topic = f"vehicle/{vin}/{kind}/{name}"
            probe.client.publish(topic, b"", 1, retain=True).wait_for_publish(5)
        for topic in (f"vehicle/{vin}/status",):
            probe.client.publish(topic, b"", 1, retain=True).wait_for_publish(5)


def test_markup_in_a_log_line_shows_as_text_and_runs_nothing(
    open_dashboard: Callable[..., tuple[Dashboard, Page]], probe: MqttProbe, vins: list[str]
) -> None:
    vin = vins[0]
    state = {
        "agent": "agent_A",
        "instance_id": "1",
        "state": "running",
        "substate": "ok",
        "info": "",
        "since": "",
    }
    topic = f"vehicle/{vin}/workloads/app"
    probe.client.publish(topic, json.dumps(state), 1, retain=True).wait_for_publish(5)
    probe.subscribe(f"vehicle/{vin}/logs/req/+")
    try:
        _, page = open_dashboard("--vin", vin)
        page.wait(lambda: vin in page.cars(), 5)
        page.select_car(vin)
        page.wait(lambda: "app" in page.workloads(), 5)
        page.driver.find_element(
            "css selector", '#workloads tr[data-workload="app"] button'
        ).click()
        request = probe.expect(timeout=5)
        assert json.loads(request.payload) == {"workloads": ["app"], "tail": 100}
        request_id = request.topic.rsplit("/", 1)[1]
        lines = [
            {"workload": "app", "instance_id": "1", "line": line}
            for line in ("plain line", SCRIPT, IMAGE)
        ]
        reply = f"vehicle/{vin}/logs/resp/{request_id}"
        probe.publish(reply, json.dumps({"seq": 0, "lines": lines}))
        probe.publish(reply, json.dumps({"seq": 1, "end": "done"}))
        page.wait(lambda: page.text("log-status") == "ended (done)")
        shown = page.driver.execute_script(
            "return document.getElementById('log-lines').textContent"
        )
        assert shown == f"plain line\n{SCRIPT}\n{IMAGE}\n"
        not_pwned(page)
    finally:
        probe.client.publish(topic, b"", 1, retain=True).wait_for_publish(5)
