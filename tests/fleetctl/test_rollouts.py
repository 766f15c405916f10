"""``fleetctl rollout``: rollouts as data, recorded car by car, resumable; rollback, history.

Each test starts the cars it needs (an emulated Ankaios and a connector each) on the
session's mosquitto; cars a test names but does not start have no connector at all.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Broker, MqttProbe
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleetctl.cli import main
from fleetctl.rollouts.spec import RampUp, Rate

SENDER = MANIFESTS / "vehicle-data-sender.yaml"
READ_ONLY = {"allowRules": [{"type": "StateRule", "operation": "Read", "filterMasks": ["*"]}]}


@dataclass
class Cars:
    broker: Broker
    directory: Path
    emulators: dict[str, Emulator] = field(default_factory=dict)
    connectors: dict[str, Connector] = field(default_factory=dict)

    def start(
        self, vin: str, *, read_only: bool = False, failing: bool = False, **config: Any
    ) -> Connector:
        """A car; ``read_only``: applies are ACCESS_DENIED; ``failing``: workloads fail."""
        emulator = self.emulators.get(vin)
        if emulator is None:
            args: dict[str, Any] = {"access": READ_ONLY} if read_only else {}
            if failing:
                # Processes without an image map: every workload fails to start.
                args["runtime"] = "process"
            emulator = Emulator(control_interface=self.directory / vin, **args).start()
            self.emulators[vin] = emulator
        connector = Connector(
            Config(
                vin=vin,
                broker=BrokerSettings(host=self.broker.host, port=self.broker.port),
                control_interface=emulator.control_interface,
                client_id=f"fleet-connector-{vin}",
                **config,
            )
        )
        connector.start()
        assert connector.control_interface.wait_connected(20)
        assert connector.mqtt.wait_subscribed(20)
        self.connectors[vin] = connector
        return connector

    def stop(self, vin: str) -> None:
        self.connectors.pop(vin).stop()

    def updates(self, vin: str) -> int:
        return update_requests(self.emulators[vin])


@pytest.fixture
def cars(broker: Broker, tmp_path: Path) -> Iterator[Cars]:
    started = Cars(broker, tmp_path / "cars")
    yield started
    for connector in started.connectors.values():
        connector.stop()
    for emulator in started.emulators.values():
        emulator.stop()


def prefix() -> str:
    return f"R{uuid.uuid4().hex[:6].upper()}"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def fleetctl(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    db = tmp_path / "rollouts.sqlite3"

    def run(*argv: str) -> Run:
        capsys.readouterr()
        with_db = [*argv, "--db", str(db)] if argv[0] == "rollout" else list(argv)
        code = main(with_db, broker.env())
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    run.db = db  # type: ignore[attr-defined]
    return run


@pytest.fixture
def rollout_file(tmp_path: Path) -> Callable[..., Path]:
    def write(**fields: Any) -> Path:
        path = tmp_path / f"rollout-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(json.dumps({"manifest": str(SENDER), **fields}))
        return path

    return write


class RequestCounter:
    """Counts the apply requests each car is sent, as the broker carries them."""

    def __init__(self, broker: Broker) -> None:
        self.probe = MqttProbe(broker)
        self.probe.subscribe("vehicle/+/manifest/apply/req/#")

    def counts(self, at_least: int = 0) -> Counter[str]:
        """Requests by VIN: the first ``at_least`` awaited, then whatever has arrived."""
        seen: Counter[str] = Counter()
        for _ in range(at_least):
            seen[self.probe.expect(timeout=10).topic.split("/")[1]] += 1
        while not self.probe.messages.empty():
            seen[self.probe.messages.get().topic.split("/")[1]] += 1
        return seen


def rollout_id(run: Run) -> str:
    return str(run.json()["id"])


def test_a_failing_canary_aborts_before_the_first_wave(
    cars: Cars, broker: Broker, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    canaries = [f"{p}C1", f"{p}C2"]
    cars.start(canaries[0])
    cars.start(canaries[1], read_only=True)
    fleet = [*canaries, *(f"{p}{n:03d}" for n in range(48))]
    counter = RequestCounter(broker)
    spec = rollout_file(
        cars={"vins": ",".join(fleet)},
        canary={"vins": ",".join(canaries)},
        batchSize=10,
        progressDeadline=10,
    )
    run = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert run.code == 1
    status = run.json()
    assert status["status"] == "aborted"
    assert "canary group did not succeed" in status["reason"]
    assert f"{canaries[1]}: ACCESS_DENIED" in status["reason"]
    assert status["totals"] == {
        "cars": 50,
        "ok": 1,
        "failed": 1,
        "offline": 0,
        "sent": 0,
        "pending": 48,
    }
    assert status["failures"]["rejected"] == 1
    # Only the canaries were sent anything; the 48 others got no request at all.
    assert counter.counts(at_least=2) == Counter({canaries[0]: 1, canaries[1]: 1})
    assert cars.updates(canaries[0]) == 1
    # Aborted means aborted: resume refuses.
    again = fleetctl("rollout", "resume", status["id"])
    assert again.code == 1
    assert "was aborted" in again.err


def test_twenty_percent_failures_abort_at_the_threshold(
    cars: Cars, broker: Broker, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    fleet = [f"{p}{n:02d}" for n in range(1, 11)]
    failing = {fleet[4], fleet[7]}  # waves 3 and 4 of 2 cars
    for vin in fleet:
        cars.start(vin, read_only=vin in failing)
    counter = RequestCounter(broker)
    spec = rollout_file(
        cars={"vins": ",".join(fleet)},
        batchSize=2,
        progressDeadline=10,
        abort={"minCars": 4, "rejected": "20%"},
    )
    run = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert run.code == 1
    status = run.json()
    assert status["status"] == "aborted"
    # After wave 3, 1 of 6 (17 %) had failed: on. After wave 4, 2 of 8 (25 %): stop.
    assert status["reason"] == "abort threshold rejected 20% reached: 2 of 8 cars finished"
    assert status["totals"]["ok"] == 6
    assert status["totals"]["failed"] == 2
    assert status["totals"]["pending"] == 2
    assert [w["wave"] for w in status["waves"]] == [1, 2, 3, 4, 5]
    assert status["waves"][4] == {"wave": 5, "pending": 2}
    assert set(counter.counts(at_least=8)) == set(fleet[:8])


def test_sigkill_of_fleetctl_mid_rollout_then_resume_does_no_car_twice(
    cars: Cars, broker: Broker, rollout_file: Callable[..., Path], tmp_path: Path, fleetctl: Any
) -> None:
    p = prefix()
    fleet = [f"{p}{n:02d}" for n in range(1, 9)]
    for vin in fleet:
        cars.start(vin)
    counter = RequestCounter(broker)
    spec = rollout_file(
        cars={"vins": ",".join(fleet)},
        batchSize=2,
        progressDeadline=20,
        rate={"perMinute": 240},  # a car every 0.25 s: the rollout takes about 2 s
    )
    db = fleetctl.db
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetctl", "rollout", "start", str(spec), "--db", str(db)],
        env={**os.environ, **broker.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = 0
        while seen < 3:  # the third request is on the broker: kill it mid-rollout
            counter.probe.expect(timeout=30)
            seen += 1
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
    listed = fleetctl("rollout", "list", "-o", "json").json()["rollouts"]
    [killed] = [r for r in listed if r["file"] == str(spec)]
    assert killed["status"] == "interrupted"  # recorded as running, its process is gone
    assert killed["totals"]["ok"] + killed["totals"]["sent"] < 8
    resumed = fleetctl("rollout", "resume", killed["id"], "-o", "json")
    assert resumed.code == 0, resumed.err
    status = resumed.json()
    assert status["status"] == "done"
    assert status["totals"] == {
        "cars": 8,
        "ok": 8,
        "failed": 0,
        "offline": 0,
        "sent": 0,
        "pending": 0,
    }
    # Each car carried out the apply once, whatever it was sent again.
    assert {vin: cars.updates(vin) for vin in fleet} == dict.fromkeys(fleet, 1)
    # A request sent again carries its first id: at most one extra request for each car.
    requests = counter.counts()
    assert set(requests) <= set(fleet)
    assert all(n <= 2 for n in requests.values())


def test_an_offline_car_is_pending_and_resume_picks_it_up(
    cars: Cars, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    online, away = f"{p}ON", f"{p}AWAY"
    cars.start(online)
    cars.start(away)
    cars.stop(away)  # its session stays on the broker, which keeps requests for it
    spec = rollout_file(cars=[online, away], progressDeadline=1)
    first = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert first.code == 1
    status = first.json()
    assert status["status"] == "incomplete"
    assert status["reason"] == "1 car(s) offline; resume picks them up"
    assert [c["state"] for c in status["cars"]] == ["ok", "offline"]
    cars.start(away)  # back: it carries out what the broker kept for it
    resumed = fleetctl("rollout", "resume", status["id"], "-o", "json")
    assert resumed.code == 0, resumed.out
    assert [c["state"] for c in resumed.json()["cars"]] == ["ok", "ok"]
    assert cars.updates(away) == 1


def test_retry_failed_sends_again_to_the_failed_cars_only(
    cars: Cars, broker: Broker, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    good, bad = f"{p}GOOD", f"{p}BAD"
    cars.start(good)
    cars.start(bad, read_only=True)
    counter = RequestCounter(broker)
    spec = rollout_file(cars=[good, bad], progressDeadline=10)
    first = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert first.code == 1
    assert first.json()["status"] == "done-with-failures"
    retried = fleetctl("rollout", "retry-failed", first.json()["id"], "-o", "json")
    assert retried.code == 1
    [good_car, bad_car] = retried.json()["cars"]
    assert (good_car["state"], good_car["attempt"]) == ("ok", 1)
    assert (bad_car["state"], bad_car["attempt"], bad_car["error"]["code"]) == (
        "failed",
        2,
        "ACCESS_DENIED",
    )
    assert counter.counts(at_least=3) == Counter({good: 1, bad: 2})


def test_status_abort_and_list(
    cars: Cars, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    away = f"{p}AWAY"
    cars.start(away)
    cars.stop(away)
    spec = rollout_file(cars=[away], progressDeadline=0.5)
    started = fleetctl("rollout", "start", str(spec), "-o", "json")
    rid = rollout_id(started)
    status = fleetctl("rollout", "status", rid)
    assert status.code == 1
    assert f"rollout {rid}: incomplete" in status.out
    aborted = fleetctl("rollout", "abort", rid, "-o", "json")
    assert aborted.json()["status"] == "aborted"
    assert aborted.json()["reason"] == "aborted by the operator"
    listing = fleetctl("rollout", "list")
    assert rid in listing.out and "aborted" in listing.out
    unknown = fleetctl("rollout", "status", "r-nope")
    assert unknown.code == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cars": "1-3", "batchSize": "0"}, "batchSize"),
        ({"cars": "1-3", "abort": {"rejected": "120%"}}, "abort.rejected"),
        ({"cars": "1-3", "canary": {"vins": "9"}}, "canary car 9 is not among the cars"),
        ({"cars": "1-3", "operation": "explode"}, "operation must be apply or delete"),
        ({"cars": "1-3", "speed": 3}, "unknown key 'speed'"),
        ({"manifest": "/no/such.yaml", "cars": "1"}, "cannot read manifest"),
        ({"batchSize": 1}, "cars is missing"),
        ({"cars": "1", "soakTime": 5}, "soakTime needs wait: running"),
    ],
)
def test_bad_rollout_files_are_usage_errors(
    fleetctl: Any, tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"manifest": str(SENDER), **fields}))
    run = fleetctl("rollout", "start", str(path))
    assert run.code == 2
    assert message in run.err


def test_rollback_and_history_commands(cars: Cars, fleetctl: Any, tmp_path: Path) -> None:
    vin = f"{prefix()}J"
    cars.start(vin, state_dir=tmp_path / "state")
    assert fleetctl("apply", str(SENDER), "--vin", vin).code == 0
    history = fleetctl("history", "--vin", vin, "-o", "json")
    assert history.code == 0
    [entry] = history.json()["cars"][0]["reply"]["entries"]
    assert entry["operation"] == "apply"
    table = fleetctl("history", "--vin", vin)
    assert f"#{entry['entry']} " in table.out and " apply OK " in table.out
    undone = fleetctl("rollback", "--vin", vin, "-o", "json")
    assert undone.code == 0
    reply = undone.json()["cars"][0]["reply"]
    assert reply["rolled_back"]["entry"] == entry["entry"]
    assert [w["workload_name"] for w in reply["deleted_workloads"]] == ["vehicle-data-sender"]
    nothing = fleetctl("rollback", "--vin", vin, "-o", "json")
    assert nothing.code == 1
    assert nothing.json()["cars"][0]["error"]["code"] == "INVALID_REQUEST"


def test_a_terminal_gets_a_live_table_of_the_waves(
    cars: Cars, broker: Broker, rollout_file: Callable[..., Path], tmp_path: Path
) -> None:
    p = prefix()
    fleet = [f"{p}1", f"{p}2", f"{p}3"]
    for vin in fleet:
        cars.start(vin)
    spec = rollout_file(cars=fleet, canary={"count": 1}, batchSize=1, progressDeadline=10)
    db = tmp_path / "tty.sqlite3"
    leader, follower = pty.openpty()
    screen: list[bytes] = []

    def drain() -> None:
        # Read as it comes: a full terminal buffer would block the writer.
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the writer side is closed
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetctl", "rollout", "start", str(spec), "--db", str(db)],
            env={**os.environ, **broker.env(), "COLUMNS": "100", "TERM": "xterm"},
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    text = b"".join(screen).decode("utf-8", "replace")
    assert process.returncode == 0
    for word in ("wave", "done", "running", "failed", "pending", "canary"):
        assert word in text
    # stdout stays the plain final table.
    assert "\x1b[" not in out
    assert out.splitlines()[0].split() == ["VIN", "WAVE", "STATE", "DETAIL"]
    assert "3 car(s): 3 ok" in out


def test_rate_with_exponential_ramp_up() -> None:
    rate = Rate(per_minute=30, ramp_up=RampUp(start=5, factor=2))
    # One car at once, then 5 in the first minute, 10 in the second, 20, then 30 a minute.
    assert rate.allowed(0) == 1
    assert rate.allowed(60) == pytest.approx(1 + 5)
    assert rate.allowed(120) == pytest.approx(1 + 5 + 10)
    assert rate.allowed(240) == pytest.approx(1 + 5 + 10 + 20 + 30)
    assert Rate(per_minute=120).allowed(30) == pytest.approx(1 + 60)


def test_wait_running_with_soak_time_counts_workloads_that_fail_as_failed(
    cars: Cars, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    good, bad = f"{p}RUNS", f"{p}FAILS"
    cars.start(good)
    cars.start(bad, failing=True)
    spec = rollout_file(cars=[good, bad], wait="running", soakTime=0.3, progressDeadline=20)
    run = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert run.code == 1
    status = run.json()
    assert status["status"] == "done-with-failures"
    [ran, failed] = status["cars"]
    assert ran["state"] == "ok"
    assert (failed["state"], failed["error"]["kind"]) == ("failed", "failed")


def test_abort_stops_a_rollout_running_in_another_process(
    cars: Cars, broker: Broker, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    fleet = [f"{p}{n}" for n in range(1, 7)]
    for vin in fleet:
        cars.start(vin)
    counter = RequestCounter(broker)
    spec = rollout_file(cars=fleet, batchSize=1, rate={"perMinute": 60}, progressDeadline=10)
    command = ["rollout", "start", str(spec), "-o", "json", "--db", str(fleetctl.db)]
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetctl", *command],
        env={**os.environ, **broker.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        started = process.stderr.readline()
        rid = started.split()[2]
        assert started == f"fleetctl: rollout {rid} started\n"
        counter.probe.expect(timeout=30)  # the first car is under way
        aborted = fleetctl("rollout", "abort", rid, "-o", "json")
        assert aborted.code == 0
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    final = json.loads(out)
    assert (final["status"], final["reason"]) == ("aborted", "aborted by the operator")
    assert final["totals"]["pending"] >= 3
    sent = 1 + sum(counter.counts().values())
    assert sent == final["totals"]["cars"] - final["totals"]["pending"]
