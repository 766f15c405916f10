"""fleet-server's dashboard in Debian's chromium: login, what a viewer and an operator see
and may do, CSRF, markup shown as text, the layout at 1,400 px, outcomes after a restart.

The page is fleetctl dashboard's own (fleetctl/dashboard/static) served by fleet-server from
its inventory; actions are the API's requests with the session cookie and its CSRF token.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from dashboard.browser_kit import Page, start_chromium
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from server.conftest import IMAGES
from testkit import Broker, MqttProbe
from testkit.live import ALL_LOGS, manifest, retained
from testkit.scripted import ScriptedCar
from testkit.server import FakeCar, RunningServer, make_token, wait_until

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_server.auth import revoke_token
from fleet_server.db import connect
from fleet_server.inventory.store import set_labels

MARKUP = "<img src=x onerror=\"document.title='pwned';window.pwned=1\">"
# Where the 1,400 px screenshot goes (a path of the test's own unless set).
SCREENSHOT_ENV = "FLEET_DASHBOARD_SCREENSHOT"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with tempfile.TemporaryDirectory(prefix="server-dashboard-chromium-") as profile:
        driver = start_chromium(Path(profile))
        try:
            yield driver
        finally:
            driver.quit()


class Dashboard(Page):
    """fleet-server's dashboard, logged in through its login page."""

    def login(self, token: str, path: str = "/") -> Dashboard:
        driver = self.driver
        driver.get(self.url + path)
        driver.delete_all_cookies()  # cookies are per host, not per port: other tests' servers
        driver.get_log("browser")  # what earlier pages logged is not this page's
        driver.get(self.url + path)
        self.wait(lambda: driver.current_url.startswith(self.url + "/login"), 5)
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "login").click()
        try:
            self.wait(lambda: self.text("link") == "live", 10)
        except TimeoutException:
            raise AssertionError(
                f"not live at {driver.current_url}: {self.severe_console_messages()} "
                f"{driver.page_source[:2000]}"
            ) from None
        return self

    def visible(self, element_id: str) -> bool:
        shown: bool = self.driver.find_element(By.ID, element_id).is_displayed()
        return shown

    def click(self, element_id: str) -> None:
        self.driver.find_element(By.ID, element_id).click()

    def session_cookie(self) -> dict[str, Any]:
        cookie = self.driver.get_cookie("fleet_session")
        assert cookie is not None
        return cookie

    def not_pwned(self) -> None:
        assert self.driver.title == "Fleet dashboard"
        assert self.driver.execute_script("return window.pwned === undefined")


@dataclass
class Site:
    """A fleet-server with a viewer's and an operator's token, and the browser."""

    server: RunningServer
    database: str
    tokens: dict[str, str]
    browser: webdriver.Chrome

    def page(self, role: str, path: str = "/") -> Dashboard:
        return Dashboard(self.browser, self.server.url).login(self.tokens[role], path)

    def audit(self, vin: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.server.get(
            f"/api/v1/cars/{vin}/audit", self.tokens["viewer"]
        ).json()["items"]
        return items


@pytest.fixture
def site(
    sqlite_url: str, make_server: Callable[..., RunningServer], browser: webdriver.Chrome
) -> Iterator[Site]:
    tokens = {
        role: make_token(sqlite_url, f"{role}-token", role) for role in ("viewer", "operator")
    }
    yield Site(make_server(sqlite_url), sqlite_url, tokens, browser)
    browser.get("about:blank")  # the page's event stream ends before the server does


def fake_fleet(make_car: Callable[[str], FakeCar], vin: str, count: int) -> list[str]:
    # 17 characters, as real VINs have.
    vins = [f"{vin[:15]}{n:02d}" for n in range(count)]
    for v in vins:
        car = make_car(v)
        car.presence(labels={"region": "eu"})
        for name in ("navigation", "telemetry-uploader", "hvac-control"):
            car.workload(name, info="container started, health ok")
        car.publish(
            "agents/agent_A",
            {
                "connected": True,
                "cpu_usage": 3.2,
                "free_memory": 2 * 2**30,
                "since": "2026-12-07T08:00:00.000+00:00",
            },
        )
    return vins


def test_the_dashboard_needs_a_login_and_refuses_a_wrong_token(
    site: Site, make_car: Callable[[str], FakeCar], vin: str
) -> None:
    make_car(vin).presence()
    browser = site.browser
    browser.get(site.server.url + "/")
    browser.delete_all_cookies()
    browser.get(site.server.url + f"/cars/{vin}")
    page = Dashboard(browser, site.server.url)
    page.wait(lambda: "/login?next=" in browser.current_url, 5)
    browser.find_element(By.ID, "token").send_keys("fst_not-a-token")
    browser.find_element(By.ID, "login").click()
    page.wait(lambda: "unknown or revoked" in browser.page_source, 5)
    assert browser.get_cookie("fleet_session") is None
    # Without a session, the feed and the API say 401, not the fleet.
    assert requests.get(site.server.url + "/events", timeout=5).status_code == 401
    page = site.page("viewer", f"/cars/{vin}")
    assert browser.current_url == site.server.url + f"/cars/{vin}"
    cookie = page.session_cookie()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert not browser.execute_script("return document.cookie")  # not readable by a script


def test_a_viewer_sees_the_fleet_with_labels_and_history_and_no_actions(
    site: Site, make_car: Callable[[str], FakeCar], vin: str
) -> None:
    vins = fake_fleet(make_car, vin, 2)
    page = site.page("viewer")
    # The session's broker may hold other tests' cars too: the server sees every car.
    page.wait(lambda: set(vins) <= set(page.cars()), 5)
    assert page.cars()[vins[0]][:3] == [vins[0], "online", "connected"]
    assert page.text("who") == "viewer-token (viewer)"

    page.select_car(vins[1])
    assert site.browser.current_url == site.server.url + f"/cars/{vins[1]}"  # a link to the car
    page.wait(lambda: len(page.workloads()) == 3)
    assert page.text("car-labels") == "region=eu"
    page.wait(lambda: page.driver.find_element(By.ID, "car-history").text, 5)
    # No action for a viewer: no manifest, no roll back, no log requests.
    assert not page.visible("car-actions")
    assert page.driver.find_elements(By.CSS_SELECTOR, "#workloads button") == []
    page.click("nav-rollouts")
    page.wait(lambda: page.visible("rollouts-view"))
    assert page.driver.find_elements(By.CSS_SELECTOR, "#rollouts button") == []
    assert page.severe_console_messages() == []


def test_the_rollouts_view_shows_stage_waiting_and_approvals_and_acts(
    site: Site, make_car: Callable[[str], FakeCar], broker: Broker, vin: str
) -> None:
    canary = ScriptedCar(broker, f"{vin}C")  # answers: the canary succeeds
    try:
        make_car(vin).presence("offline")  # waits for it after the approval: nothing is sent
        for each in (canary.vin, vin):
            wait_until(
                lambda each=each: site.server.get(f"/api/v1/cars/{each}", site.tokens["viewer"]).ok
            )
        body = {
            "manifest": manifest("sender"),
            "cars": {"vins": [canary.vin, vin]},
            "canary": {"vins": [canary.vin]},
            "pauseAfter": ["canary"],
        }
        created = site.server.request(
            "POST", "/api/v1/rollouts", site.tokens["operator"], json=body
        )
        assert created.status_code == 201, created.text
        rollout_id = created.json()["id"]
        page = site.page("operator", "/rollouts")
        row = f'#rollouts tr[data-rollout="{rollout_id}"]'

        def row_text() -> str:
            # Read in one script: the table is redrawn every 2 s, so a found element goes stale.
            text: str = page.driver.execute_script(
                "const r = document.querySelector(arguments[0]); return r ? r.innerText : '';",
                row,
            )
            return text

        def click(verb: str) -> None:
            page.driver.execute_script(
                "document.querySelector(arguments[0] + ' .rollout-' + arguments[1]).click();",
                row,
                verb,
            )

        page.wait(lambda: "approval of canary needed" in row_text(), 10)
        assert not page.visible("rollouts-missing")
        text = row_text()
        assert "waiting" in text and "stage canary" in text and "succeeded 1" in text
        click("approve")
        page.wait(lambda: "approved canary by operator-token" in row_text(), 5)
        page.wait(lambda: "stage wave 1" in row_text(), 5)
        click("pause")
        page.wait(lambda: "paused" in row_text(), 5)
        click("resume")
        page.wait(lambda: "paused" not in row_text() and "running" in row_text(), 5)
        click("abort")  # it cannot be undone: the first click asks
        page.wait(lambda: "Confirm abort" in row_text(), 5)
        viewer = site.server.get(f"/api/v1/rollouts/{rollout_id}", site.tokens["viewer"])
        assert viewer.json()["state"] == "running"
        click("abort")
        page.wait(lambda: "aborted" in row_text(), 5)
        assert "Abort" not in row_text()  # final: nothing more to do
        rollout = site.server.get(f"/api/v1/rollouts/{rollout_id}", site.tokens["viewer"]).json()
        assert rollout["approvals"][0]["by"] == "operator-token"
        actions = [e["action"] for e in site.audit(canary.vin)]
        assert "rollout.car.succeeded" in actions
        assert page.severe_console_messages() == []
    finally:
        canary.close()


@pytest.fixture
def journal_car(tmp_path: Path, broker: Broker, vin: str) -> Iterator[Connector]:
    """A real car that keeps a journal (STATE_DIR), so that a change can be rolled back."""
    emulator = Emulator(
        control_interface=tmp_path / "ci",
        runtime="process",
        image_map=IMAGES,
        access=ALL_LOGS,
        pace_frames=False,
    ).start()
    connector = Connector(
        Config(
            vin=vin,
            broker=BrokerSettings(host=broker.host, port=broker.port),
            control_interface=emulator.control_interface,
            client_id=f"fleet-connector-{vin}",
            state_dir=tmp_path / "state",
        )
    )
    connector.start()
    try:
        assert connector.control_interface.wait_connected(10), "control interface not connected"
        assert connector.mqtt.wait_subscribed(10), "MQTT not subscribed"
        yield connector
    finally:
        connector.stop()
        emulator.stop()
        probe = MqttProbe(broker)
        for topic in [*retained(probe, f"vehicle/{vin}/#"), f"vehicle/{vin}/status"]:
            probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        probe.close()


def test_an_operator_sends_a_manifest_and_rolls_back_through_the_page(
    site: Site, journal_car: Connector, vin: str
) -> None:
    page = site.page("operator", f"/cars/{vin}")
    page.wait(lambda: page.text("car-vin") == vin, 5)
    page.wait(lambda: page.visible("car-actions"), 5)
    page.driver.find_element(By.ID, "manifest").send_keys(manifest("sim"))
    page.click("action-apply")
    page.wait(
        lambda: (
            page.driver.find_element(By.TAG_NAME, "body").get_attribute("data-action")
            in ("ok", "failed")
        ),
        15,
    )
    reply = page.text("action-reply")
    assert reply.startswith("HTTP 200"), reply
    assert '"workload_name": "sim"' in reply
    page.wait(lambda: page.workloads().get("sim", ["", "", ""])[2] == "running", 10)
    assert [(e["actor"], e["action"]) for e in site.audit(vin)] == [
        ("operator-token", "car.manifest.apply"),
        ("operator-token", "car.manifest.apply.reply"),
    ]
    # The outcome is listed, and the car's history names who did it.
    page.wait(lambda: any(vin in o and "sent by operator-token" in o for o in page.outcomes()), 5)
    page.wait(lambda: "car.manifest.apply.reply → ok" in page.text("car-history"), 5)

    page.click("action-rollback")
    assert page.visible("action-rollback-confirm")  # asked once more: it changes the car
    page.click("action-rollback-confirm")
    page.wait(lambda: page.text("action-reply").startswith("HTTP "), 15)
    assert page.text("action-reply").startswith("HTTP 200"), page.text("action-reply")
    page.wait(lambda: "sim" not in page.workloads(), 10)
    assert site.audit(vin)[-1]["action"] == "car.manifest.rollback.reply"


def test_a_forged_request_without_the_csrf_token_is_refused_and_sends_nothing(
    site: Site, real_car: Connector, probe: MqttProbe, vin: str
) -> None:
    page = site.page("operator", f"/cars/{vin}")
    page.wait(lambda: page.visible("car-actions"), 5)
    cookie = {"fleet_session": page.session_cookie()["value"]}
    probe.subscribe(f"vehicle/{vin}/manifest/apply/req/#")
    url = site.server.url + f"/api/v1/cars/{vin}/manifest/apply"
    forged = [
        {},  # what a form on another site could send: the cookie alone
        {"X-CSRF-Token": "guessed"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example"},
    ]
    for headers in forged:
        response = requests.post(
            url, data=manifest("x"), cookies=cookie, headers=headers, timeout=5
        )
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["error"]["code"] == "FORBIDDEN"
    logout = requests.post(
        site.server.url + "/logout", cookies=cookie, timeout=5, allow_redirects=False
    )
    assert logout.status_code == 403  # a forged logout is refused too
    probe.expect_nothing(0.3)
    assert site.audit(vin) == []
    # The page itself, with its token, may.
    page.driver.find_element(By.ID, "manifest").send_keys(manifest("sim"))
    page.click("action-plan")
    page.wait(lambda: page.text("action-reply").startswith("HTTP "), 15)
    assert page.text("action-reply").startswith("HTTP 200"), page.text("action-reply")


def test_markup_from_a_car_or_in_a_label_value_shows_as_text(
    site: Site, make_car: Callable[[str], FakeCar], vin: str
) -> None:
    car = make_car(vin)
    car.presence(connector_version=MARKUP, ankaios=MARKUP)
    car.workload("w", info=MARKUP, substate=MARKUP)
    wait_until(lambda: site.server.get(f"/api/v1/cars/{vin}", site.tokens["viewer"]).ok)
    # The API refuses such a label value; one in the database anyway (written by hand, by an
    # older server) is still only text on the page.
    db = connect(site.database)
    try:
        with db.transaction() as tx:
            assert set_labels(tx, vin, {"note": MARKUP})
    finally:
        db.close()
    page = site.page("viewer", f"/cars/{vin}")
    page.wait(lambda: page.text("car-labels") == f"note={MARKUP}", 5)
    page.wait(lambda: page.workloads().get("w", [""] * 5)[4] == MARKUP, 5)
    assert page.cars()[vin][2] == MARKUP
    assert page.cars()[vin][4] == MARKUP
    page.not_pwned()


def test_outcomes_and_history_survive_a_restart_of_the_server(
    site: Site,
    make_server: Callable[..., RunningServer],
    real_car: Connector,
    vin: str,
) -> None:
    wait_until(
        lambda: site.server.get(f"/api/v1/cars/{vin}", site.tokens["viewer"]).json().get("online")
    )
    response = site.server.request(
        "POST", f"/api/v1/cars/{vin}/manifest/apply", site.tokens["operator"], data=manifest("sim")
    )
    assert response.status_code == 200, response.text
    site.server.stop()
    site.server = make_server(site.database)
    page = site.page("viewer", f"/cars/{vin}")
    page.wait(lambda: any("sent by operator-token" in o for o in page.outcomes()), 5)
    assert f"{vin} apply" in page.outcomes()[0]
    page.wait(lambda: "car.manifest.apply.reply → ok" in page.text("car-history"), 5)


def test_an_operator_reads_a_workload_s_logs_in_the_page(
    site: Site, journal_car: Connector, vin: str
) -> None:
    wait_until(lambda: site.server.get(f"/api/v1/cars/{vin}", site.tokens["viewer"]).ok)
    response = site.server.request(
        "POST",
        f"/api/v1/cars/{vin}/manifest/apply",
        site.tokens["operator"],
        data=manifest("talker", image="talker:1"),
    )
    assert response.status_code == 200, response.text
    page = site.page("operator", f"/cars/{vin}")
    page.wait(lambda: page.workloads().get("talker", ["", "", ""])[2] == "running", 10)
    page.driver.find_element(By.CSS_SELECTOR, '#workloads [data-workload="talker"] button').click()
    page.wait(
        lambda: (
            page.driver.find_element(By.TAG_NAME, "body").get_attribute("data-logs")
            in ("ended", "error")
        ),
        10,
    )
    assert page.text("log-lines").splitlines() == [f"line {n}" for n in range(1, 6)]
    assert page.text("log-status").startswith("ended")
    assert site.audit(vin)[-1]["action"] == "car.logs"  # asked as the operator, audited


def test_revoking_the_token_ends_its_browser_sessions(site: Site) -> None:
    url = site.server.url
    login = requests.post(
        url + "/login",
        data={"token": site.tokens["viewer"], "next": "/cars/X"},
        allow_redirects=False,
        timeout=5,
    )
    assert login.status_code == 303 and login.headers["Location"] == "/cars/X"
    cookie = {"fleet_session": login.cookies["fleet_session"]}
    assert (
        requests.get(url + "/", cookies=cookie, allow_redirects=False, timeout=5).status_code == 200
    )
    # The session is the API's too, for reading; never for a role it lacks.
    assert requests.get(url + "/api/v1/cars", cookies=cookie, timeout=5).status_code == 200
    db = connect(site.database)
    try:
        with db.transaction() as tx:
            revoke_token(tx, "viewer-token")
    finally:
        db.close()
    page = requests.get(url + "/", cookies=cookie, allow_redirects=False, timeout=5)
    assert page.status_code == 303 and page.headers["Location"].startswith("/login")
    assert requests.get(url + "/events", cookies=cookie, timeout=5).status_code == 401
    assert requests.get(url + "/api/v1/cars", cookies=cookie, timeout=5).status_code == 401
    # A next that leads elsewhere is not followed after login.
    other = requests.post(
        url + "/login",
        data={"token": site.tokens["operator"], "next": "//evil.example/"},
        allow_redirects=False,
        timeout=5,
    )
    assert other.headers["Location"] == "/"


def test_an_offline_car_s_workloads_are_last_known_not_running(
    site: Site, make_car: Callable[[str], FakeCar], vin: str
) -> None:
    car = make_car(vin)
    car.presence("offline")
    car.workload("app", "running")
    page = site.page("viewer", f"/cars/{vin}")
    page.wait(lambda: page.cars().get(vin, ["", ""])[1] == "offline", 5)
    page.wait(lambda: "app" in page.workloads(), 5)
    row = page.workloads()["app"]
    assert row[2] == "running (last known)"
    assert row[4].startswith("car offline since ")


def test_layout_at_1400_px(
    site: Site, make_car: Callable[[str], FakeCar], vin: str, tmp_path: Path
) -> None:
    """What a new user saw: the car panel scrolled sideways, "Logs" cut to "Log", dates on
    four lines while the cars left half the width empty. The screenshot is for a person."""
    vins = fake_fleet(make_car, vin, 12)
    page = site.page("operator", f"/cars/{vins[0]}")
    browser = site.browser
    assert browser.get_window_size()["width"] == 1400
    page.driver.find_element(By.ID, "filter-vin").send_keys(vin[:15])  # other tests' cars
    page.wait(lambda: set(page.cars()) == set(vins), 5)
    page.wait(lambda: len(page.workloads()) == 3, 5)
    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard-1400.png")
    browser.save_screenshot(str(shot))
    geometry = browser.execute_script(LAYOUT_SCRIPT)
    # The car panel does not scroll sideways, and neither do the cars.
    assert geometry["carPanel"]["scroll"] <= geometry["carPanel"]["client"], geometry
    assert geometry["carsPanel"]["scroll"] <= geometry["carsPanel"]["client"], geometry
    # "Logs" whole, inside the panel.
    assert geometry["logs"] and all(b["text"] == "Logs" for b in geometry["logs"]), geometry
    assert all(b["right"] <= geometry["carPanel"]["right"] for b in geometry["logs"]), geometry
    # Dates on one line, in the car panel and in the cars' rows; VINs and headings whole.
    assert all(lines == 1 for lines in geometry["sinceLines"]), geometry
    assert geometry["cutCells"] == [], geometry


# What a user would see as broken, measured in the page.
LAYOUT_SCRIPT = """
const box = (el) => el.getBoundingClientRect();
const panel = document.getElementById("car-panel");
const cars = document.getElementById("cars-panel");
const cut = [];
for (const row of document.querySelectorAll("#car-rows .row")) {
  for (const i of [0, 3]) {
    const cell = row.children[i];
    if (cell.scrollWidth > cell.clientWidth) cut.push(cell.textContent);
  }
}
for (const cell of document.querySelectorAll("#cars .row.head > span")) {
  if (cell.scrollWidth > cell.clientWidth) cut.push(cell.textContent);
}
return {
  carPanel: {scroll: panel.scrollWidth, client: panel.clientWidth, right: box(panel).right},
  carsPanel: {scroll: cars.scrollWidth, client: cars.clientWidth},
  logs: Array.from(document.querySelectorAll("#workloads button.logs"), (b) => ({
    text: b.innerText, right: box(b).right,
  })),
  sinceLines: Array.from(document.querySelectorAll("td.since"), (td) => {
    const text = document.createRange();
    text.selectNodeContents(td);
    return new Set(Array.from(text.getClientRects(), (r) => Math.round(r.top))).size;
  }),
  cutCells: cut,
};
"""
