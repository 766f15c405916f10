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
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Broker, MqttProbe
from testkit.counters import kept_counters
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
                # An agent without podman runtime: every workload fails to start.
                args["agent_runtimes"] = ["containerd"]
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
    # ... and so does retry-failed, which used to send to every pending car and say done.
    retried = fleetctl("rollout", "retry-failed", status["id"])
    assert retried.code == 1
    assert "was aborted, which is final" in retried.err
    assert fleetctl("rollout", "status", status["id"], "-o", "json").json()["status"] == "aborted"
    assert counter.counts() == Counter()  # nothing more was sent
    assert cars.updates(canaries[0]) == 1


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


def test_rollback_dry_run_shows_what_would_come_back(
    cars: Cars, fleetctl: Any, tmp_path: Path
) -> None:
    vin = f"{prefix()}D"
    cars.start(vin, state_dir=tmp_path / "state")
    config = MANIFESTS / "config.yaml"
    assert fleetctl("apply", str(SENDER), "--vin", vin).code == 0
    assert fleetctl("apply", str(config), "--vin", vin).code == 0
    updates = cars.updates(vin)

    run = fleetctl("rollback", "--vin", vin, "--dry-run")
    assert run.code == 0, run.out
    lines = [line.split(None, 2)[2] for line in run.out.splitlines()[1:-1]]
    assert lines[0].startswith("would undo #2 apply of ")
    # config.yaml names only the config (the sender is re-rendered from it).
    assert lines[1:] == ["config vehicle-data-sender-config: comes back as it was before"]
    first = fleetctl("rollback", "--vin", vin, "--dry-run", "--entry", "1", "-o", "json")
    assert first.code == 1  # the config's apply changed its names after it
    [car] = first.json()["cars"]
    assert car["error"]["code"] == "WOULD_BE_INVALID"
    assert car["error"]["message"].startswith("entry 1 is superseded: entry 2 changed ")
    assert cars.updates(vin) == updates  # nothing was changed

    # What it showed is what the rollback does; then the first apply is undone: a delete.
    assert fleetctl("rollback", "--vin", vin).code == 0
    run = fleetctl("rollback", "--vin", vin, "--dry-run", "-o", "json")
    assert run.json()["cars"][0]["reply"]["workloads"] == {"vehicle-data-sender": "delete"}
    assert run.json()["cars"][0]["reply"]["would_undo"]["entry"] == 1


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


def test_rollout_shows_the_manifests_warnings_and_status_exits_0_while_running(
    cars: Cars, broker: Broker, rollout_file: Callable[..., Path], tmp_path: Path, fleetctl: Any
) -> None:
    p = prefix()
    fleet = [f"{p}{n:02d}" for n in range(1, 4)]
    for vin in fleet:
        cars.start(vin)
    typo = tmp_path / "typo.yaml"
    typo.write_text(SENDER.read_text().replace("restartPolicy:", "restartpolicy:"))
    warning = "warning: unknown key 'restartpolicy' at workloads.vehicle-data-sender"
    counter = RequestCounter(broker)
    spec = rollout_file(
        manifest=str(typo),
        cars={"vins": ",".join(fleet)},
        rate={"perMinute": 60},  # a car a second: running for about 2 s
    )
    process = subprocess.Popen(
        [
            *[sys.executable, "-m", "fleetctl"],
            "rollout",
            "start",
            str(spec),
            "--db",
            str(fleetctl.db),
        ],
        env={**os.environ, **broker.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        counter.probe.expect(timeout=30)  # the first car's request: it runs
        [running] = fleetctl("rollout", "list", "-o", "json").json()["rollouts"]
        status = fleetctl("rollout", "status", running["id"])
        assert status.code == 0, status.out
        assert f"rollout {running['id']}: running" in status.out
        assert warning in status.out
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
    finally:
        process.kill()
    lines = out.splitlines()
    assert any(line.startswith(warning) for line in lines), out
    assert lines.index(next(line for line in lines if line.startswith(warning))) < lines.index(
        f"rollout {running['id']}: done"
    )
    assert fleetctl("rollout", "status", running["id"], "-o", "json").json()["warnings"] == [
        line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")
    ]


# -- signed rollouts ----------------------------------------------------------------------


@dataclass
class Signing:
    key: Path
    config: dict[str, Any]
    """A car's options: trusts the key, carries out only signed changes."""


@pytest.fixture
def signing(fleetctl: Any, tmp_path: Path) -> Signing:
    key = tmp_path / "ops.key"
    made = fleetctl("keys", "generate", "ops", "--out", str(key))
    assert made.code == 0, made.err
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(made.out)
    return Signing(key, {"trusted_keys": trusted, "require_signed": True})


def start_signed(cars: Cars, signing: Signing, vin: str) -> None:
    # Not a new car: a new STATE_DIR refuses what may have been signed before it (#25).
    state_dir = cars.directory / f"state-{vin}"
    if not state_dir.exists():
        kept_counters(state_dir)
    cars.start(vin, state_dir=state_dir, **signing.config)


def test_a_rollout_signs_for_cars_that_require_it_and_refusals_count_as_rejected(
    cars: Cars, fleetctl: Any, rollout_file: Callable[..., Path], signing: Signing
) -> None:
    p = prefix()
    fleet = [f"{p}{n}" for n in range(1, 4)]
    for vin in fleet:
        start_signed(cars, signing, vin)
    spec = rollout_file(cars=fleet, progressDeadline=10)
    unsigned = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert unsigned.code == 1
    status = unsigned.json()
    assert {c["error"]["code"] for c in status["cars"]} == {"SIGNATURE_INVALID"}
    # Refused, nothing carried out: what the "rejected" threshold counts, not "failed".
    assert status["failures"] == {"rejected": 3, "failed": 0, "timeout": 0, "noReply": 0}

    signed = fleetctl("rollout", "start", str(spec), "--sign-key", str(signing.key), "-o", "json")
    assert signed.code == 0, signed.out + signed.err
    assert signed.json()["totals"]["ok"] == 3
    assert {vin: cars.updates(vin) for vin in fleet} == dict.fromkeys(fleet, 1)


def test_resume_signs_a_new_attempt_for_a_car_offline_longer_than_the_validity(
    cars: Cars,
    broker: Broker,
    fleetctl: Any,
    rollout_file: Callable[..., Path],
    signing: Signing,
) -> None:
    p = prefix()
    online, away = f"{p}ON", f"{p}AWAY"
    start_signed(cars, signing, online)
    start_signed(cars, signing, away)
    cars.stop(away)  # its session stays on the broker, which keeps requests for it
    spec = rollout_file(cars=[online, away], progressDeadline=1)
    started = time.time()
    first = fleetctl(
        *("rollout", "start", str(spec), "-o", "json"),
        *("--sign-key", str(signing.key), "--sign-valid-for", "2"),
    )
    assert first.code == 1
    status = first.json()
    assert [c["state"] for c in status["cars"]] == ["ok", "offline"]
    # The car stays away longer than the validity: the request the broker kept for it
    # runs out. Waiting for the clock itself, nothing else to wait for.
    while time.time() < started + 3:
        time.sleep(0.1)
    replies = MqttProbe(broker)
    replies.subscribe(f"vehicle/{away}/manifest/apply/resp/+")
    start_signed(cars, signing, away)
    kept = json.loads(replies.expect(timeout=10).payload)
    assert kept["error"]["code"] == "SIGNATURE_INVALID"
    # Resume signs it again: a new attempt, with its own id, counter and not-after, and
    # without --sign-key: the rollout recorded the key.
    resumed = fleetctl("rollout", "resume", status["id"], "-o", "json")
    assert resumed.code == 0, resumed.out + resumed.err
    [_, car] = resumed.json()["cars"]
    assert (car["state"], car["attempt"]) == ("ok", 2)
    assert cars.updates(away) == 1
    replies.close()


def test_resume_within_the_validity_sends_the_same_signed_request(
    cars: Cars, broker: Broker, fleetctl: Any, rollout_file: Callable[..., Path], signing: Signing
) -> None:
    """Signed anew on resume, the request the broker kept would be a second one to carry out."""
    p = prefix()
    online, away = f"{p}ON", f"{p}AWAY"
    start_signed(cars, signing, online)
    start_signed(cars, signing, away)
    cars.stop(away)
    counter = RequestCounter(broker)
    spec = rollout_file(cars=[online, away], progressDeadline=1)
    first = fleetctl("rollout", "start", str(spec), "--sign-key", str(signing.key), "-o", "json")
    assert first.code == 1
    start_signed(cars, signing, away)
    resumed = fleetctl("rollout", "resume", first.json()["id"], "-o", "json")
    assert resumed.code == 0, resumed.out + resumed.err
    [_, car] = resumed.json()["cars"]
    assert (car["state"], car["attempt"]) == ("ok", 1)
    assert cars.updates(away) == 1
    [kept, again] = [
        m.payload for m in (counter.probe.expect(timeout=10) for _ in range(3)) if away in m.topic
    ]
    assert kept == again


def test_a_signed_rollout_needs_its_key_to_resume(
    cars: Cars, fleetctl: Any, rollout_file: Callable[..., Path], signing: Signing
) -> None:
    p = prefix()
    away = f"{p}AWAY"
    start_signed(cars, signing, away)
    cars.stop(away)
    spec = rollout_file(cars=[away], progressDeadline=1)
    first = fleetctl("rollout", "start", str(spec), "--sign-key", str(signing.key), "-o", "json")
    assert first.code == 1
    moved = signing.key.with_name("moved.key")
    signing.key.rename(moved)
    refused = fleetctl("rollout", "resume", first.json()["id"])
    assert refused.code == 2
    assert "cannot read signing key" in refused.err
    assert fleetctl("rollout", "status", first.json()["id"], "-o", "json").json()["status"] == (
        "incomplete"
    )
    # Another key file: given on resume, recorded from then on.
    start_signed(cars, signing, away)
    resumed = fleetctl("rollout", "resume", first.json()["id"], "--sign-key", str(moved))
    assert resumed.code == 0, resumed.out + resumed.err
    assert fleetctl("rollout", "list", "--sign-key", str(moved)).code == 2


def test_a_second_rollout_on_cars_a_running_one_has_is_refused(
    cars: Cars, broker: Broker, fleetctl: Any, rollout_file: Callable[..., Path]
) -> None:
    p = prefix()
    fleet = [f"{p}{n}" for n in range(1, 5)]
    for vin in fleet:
        cars.start(vin)
    away = f"{p}AWAY"
    cars.start(away)
    cars.stop(away)
    # An earlier rollout, left incomplete (a car was offline), that shares a car.
    spec = rollout_file(cars=[away, fleet[-1]], progressDeadline=1)
    earlier = fleetctl("rollout", "start", str(spec), "-o", "json")
    assert earlier.json()["status"] == "incomplete"
    counter = RequestCounter(broker)
    slow = rollout_file(cars=fleet, batchSize=1, rate={"perMinute": 30}, progressDeadline=10)
    command = ["rollout", "start", str(slow), "-o", "json", "--db", str(fleetctl.db)]
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetctl", *command],
        env={**os.environ, **broker.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        running = process.stderr.readline().split()[2]
        counter.probe.expect(timeout=30)  # under way
        other = rollout_file(cars=[fleet[-1], f"{p}NEW"], progressDeadline=5)
        refused = fleetctl("rollout", "start", str(other))
        assert refused.code == 1
        assert f"rollout {running} is running on 1 of these cars (process {process.pid})" in (
            refused.err
        )
        assert f"fleetctl rollout abort {running}" in refused.err
        # Refused before anything was recorded or sent.
        listed = fleetctl("rollout", "list", "-o", "json").json()["rollouts"]
        assert [r["id"] for r in listed] == [running, earlier.json()["id"]]
        # Resuming the earlier one now would race the same way.
        resumed = fleetctl("rollout", "resume", earlier.json()["id"])
        assert resumed.code == 1
        assert f"rollout {running} is running on 1 of these cars" in resumed.err
        # Cars it does not have are no conflict.
        apart = fleetctl(
            "rollout", "start", str(rollout_file(cars=[f"{p}NEW"], progressDeadline=1))
        )
        assert "is running on" not in apart.err
        fleetctl("rollout", "abort", running)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
