"""The vehicle data sender as a process: what arrives on the broker, and how it starts and stops.

Every test runs the real program (`python -m vehicle_data_sender` or the console script)
against a mosquitto the session owns, and waits for messages on an MQTT probe rather than
sleeping. Timing assertions use wide bounds: they tell 5 values per second from 10, not
200 ms from 210 ms.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from testkit import Broker, Message, MqttProbe, free_port
from testkit.proxy import Mqtt311OnlyProxy

SENDER_ENV_VARS = ("MQTT_BROKER_ADDR", "MQTT_BROKER_PORT", "TOPIC", "INTERVAL")
PROG = "vehicle-data-sender"


# -- helpers --------------------------------------------------------------------------


def console_script() -> str | None:
    """The installed `vehicle-data-sender` next to the interpreter running the tests."""
    beside = Path(sys.executable).parent / PROG
    if beside.exists():
        return str(beside)
    return shutil.which(PROG)


@dataclass
class SenderProcess:
    proc: subprocess.Popen[bytes]
    stdout_file: Path
    stderr_file: Path

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_file.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """The first stderr line matching `pattern`, once the sender has written it."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            for line in self.stderr.splitlines():
                if regex.search(line):
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"sender exited ({self.proc.returncode}) before logging {pattern!r}:\n"
                    f"{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line {pattern!r} within {timeout}s:\n{self.stderr}")
            time.sleep(0.02)

    def signal_and_wait(self, signum: int, timeout: float = 10.0) -> tuple[int, float]:
        """Sends `signum`; returns the exit status and the seconds until the process ended."""
        start = time.monotonic()
        self.proc.send_signal(signum)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - start


RunSender = Callable[..., SenderProcess]


@pytest.fixture
def run_sender(tmp_path: Path) -> Iterator[RunSender]:
    """Starts sender processes; whatever is still running at the end is killed by pid."""
    started: list[SenderProcess] = []

    def run(env: dict[str, str], *args: str, launcher: str = "module") -> SenderProcess:
        if "MQTT_BROKER_PORT" not in env and "--broker-port" not in args:
            raise AssertionError("tests must name the broker port (never the default 1883)")
        full_env = {k: v for k, v in os.environ.items() if k not in SENDER_ENV_VARS}
        full_env.update(env)
        if launcher == "module":
            cmd = [sys.executable, "-m", "vehicle_data_sender"]
        else:
            script = console_script()
            if script is None:
                pytest.skip(f"console script {PROG} is not installed")
            cmd = [script]
        n = len(started)
        out, err = tmp_path / f"sender{n}.out", tmp_path / f"sender{n}.err"
        with out.open("wb") as out_f, err.open("wb") as err_f:
            proc = subprocess.Popen([*cmd, *args], env=full_env, stdout=out_f, stderr=err_f)
        sp = SenderProcess(proc, out, err)
        started.append(sp)
        return sp

    yield run
    for sp in started:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait()


def sender_env(broker: Broker, topic: str, interval: str | None = None) -> dict[str, str]:
    env = {**broker.env(), "TOPIC": topic}
    if interval is not None:
        env["INTERVAL"] = interval
    return env


def speed_topic(vin: str) -> str:
    return f"vehicle/{vin}/sensors/speed"


@dataclass
class Arrival:
    at: float  # time.monotonic() when the probe handed it over
    message: Message

    @property
    def value(self) -> int:
        return int(self.message.payload.decode("ascii"))


def next_arrival(probe: MqttProbe, topic: str, timeout: float = 10.0) -> Arrival:
    msg = probe.expect(topic, timeout=timeout)
    return Arrival(time.monotonic(), msg)


def collect(probe: MqttProbe, topic: str, seconds: float) -> list[Arrival]:
    """Every message on `topic` arriving within the next `seconds`."""
    deadline = time.monotonic() + seconds
    got: list[Arrival] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msg = probe.messages.get(timeout=remaining)
        except queue.Empty:
            break
        if msg.topic == topic:
            got.append(Arrival(time.monotonic(), msg))
    return got


def assert_consecutive(values: Sequence[int]) -> None:
    """Each value is the next one of the rising wave: no gap, no repeat."""
    assert all(b == a + 1 for a, b in itertools.pairwise(values)), values


def client_id_publishing_to(broker: Broker, topic: str, timeout: float = 5.0) -> str:
    """The client id mosquitto logged for the publisher of `topic`."""
    regex = re.compile(r"Received PUBLISH from (\S+) \(d\d, q\d, r\d, m\d+, '" + re.escape(topic))
    deadline = time.monotonic() + timeout
    while True:
        m = regex.search(broker.log_text())
        if m:
            return m.group(1)
        if time.monotonic() > deadline:
            raise AssertionError(f"mosquitto logged no PUBLISH to {topic}")
        time.sleep(0.02)


def wait_for_broker_log(broker: Broker, needle: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in broker.log_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"mosquitto never logged {needle!r}")
        time.sleep(0.02)


# -- what arrives ---------------------------------------------------------------------


@pytest.mark.parametrize("launcher", ["module", "console-script"])
def test_values_arrive_as_1_2_3_in_order(
    broker: Broker, probe: MqttProbe, vin: str, run_sender: RunSender, launcher: str
) -> None:
    topic = speed_topic(vin)
    probe.subscribe(topic)
    sender = run_sender(sender_env(broker, topic, interval="0.05"), launcher=launcher)

    arrivals = [next_arrival(probe, topic) for _ in range(10)]

    assert [a.message.payload for a in arrivals[:3]] == [b"1", b"2", b"3"]
    assert [a.value for a in arrivals] == list(range(1, 11))
    assert not any(a.message.retain for a in arrivals)
    start_line = sender.wait_for_log(r"starting: ")
    assert f"topic={topic}" in start_line
    assert f"broker=mqtt://{broker.host}:{broker.port}" in start_line
    assert "interval=0.05s" in start_line
    sender.wait_for_log(rf"connected to {re.escape(broker.host)}:{broker.port}")


def test_interval_sets_the_rate(
    broker: Broker, probe: MqttProbe, vin: str, run_sender: RunSender
) -> None:
    topic = speed_topic(vin)
    probe.subscribe(topic)
    run_sender(sender_env(broker, topic, interval="0.2"))

    first = next_arrival(probe, topic)
    window = collect(probe, topic, 3.0)

    # Ticks at +0.2 s ... +3.0 s: 15 values. A doubled loop would give ~30, INTERVAL
    # misread as whole seconds ~3.
    assert 12 <= len(window) <= 17, [a.value for a in window]
    assert_consecutive([first.value] + [a.value for a in window])
    mean_gap = (window[-1].at - first.at) / len(window)
    assert 0.15 <= mean_gap <= 0.25, mean_gap


def test_fractional_interval_is_accepted(
    broker: Broker, probe: MqttProbe, vin: str, run_sender: RunSender
) -> None:
    topic = speed_topic(vin)
    probe.subscribe(topic)
    run_sender(sender_env(broker, topic, interval="0.35"))

    first = next_arrival(probe, topic)
    window = collect(probe, topic, 2.1)

    assert first.value == 1
    assert 4 <= len(window) <= 8, [a.value for a in window]  # 6 expected


def test_flags_override_the_environment(
    broker: Broker, probe: MqttProbe, vin: str, run_sender: RunSender
) -> None:
    topic = speed_topic(vin)
    probe.subscribe(f"vehicle/{vin}/#")
    unused_port = free_port()
    env = {
        "MQTT_BROKER_ADDR": "127.0.0.2",
        "MQTT_BROKER_PORT": str(unused_port),
        "TOPIC": f"vehicle/{vin}/wrong",
        "INTERVAL": "not a number",  # never looked at: the flag wins
    }
    args = (
        *("--broker-addr", broker.host),
        *("--broker-port", str(broker.port)),
        *("--topic", topic),
        *("--interval", "0.1"),
    )
    run_sender(env, *args)

    arrivals = [next_arrival(probe, f"vehicle/{vin}/sensors/speed") for _ in range(3)]

    assert [a.value for a in arrivals] == [1, 2, 3]
    assert arrivals[-1].at - arrivals[0].at < 1.0  # 0.1 s apart, not 5 or 1


# -- configuration errors -------------------------------------------------------------

BAD_CONFIGS: dict[str, tuple[dict[str, str | None], tuple[str, ...]]] = {
    "no TOPIC": ({"TOPIC": None}, ()),
    "empty TOPIC": ({"TOPIC": ""}, ()),
    "INTERVAL 0": ({"INTERVAL": "0"}, ()),
    "INTERVAL -1": ({"INTERVAL": "-1"}, ()),
    "INTERVAL abc": ({"INTERVAL": "abc"}, ()),
    "INTERVAL nan": ({"INTERVAL": "nan"}, ()),
    "INTERVAL inf": ({"INTERVAL": "inf"}, ()),
    "port abc": ({"MQTT_BROKER_PORT": "abc"}, ()),
    "port 70000": ({"MQTT_BROKER_PORT": "70000"}, ()),
    "port 0": ({"MQTT_BROKER_PORT": "0"}, ()),
    "port with a newline": ({"MQTT_BROKER_PORT": "12\nx"}, ()),
    "wildcard topic": ({"TOPIC": "vehicle/+/sensors/speed"}, ()),
    "--interval 0": ({}, ("--interval", "0")),
    "--interval without value": ({}, ("--interval",)),
    "--broker-port abc": ({}, ("--broker-port", "abc")),
    "unknown flag": ({}, ("--bogus",)),
    "positional argument": ({}, ("extra",)),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configuration_exits_2_with_one_line(broker: Broker, vin: str, case: str) -> None:
    overrides, args = BAD_CONFIGS[case]
    env = {k: v for k, v in os.environ.items() if k not in SENDER_ENV_VARS}
    # A valid base pointing at the session broker: were the case accepted by mistake, the
    # run would time out here instead of reaching for port 1883.
    env.update({**broker.env(), "TOPIC": speed_topic(vin), "INTERVAL": "1"})
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value

    result = subprocess.run(
        [sys.executable, "-m", "vehicle_data_sender", *args],
        env=env,
        capture_output=True,
        timeout=10,
        check=False,
    )

    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    assert result.stdout == b""


def test_help_documents_every_option_and_variable() -> None:
    script = console_script()
    cmd = [script] if script else [sys.executable, "-m", "vehicle_data_sender"]
    result = subprocess.run(
        [*cmd, "--help"], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, result.stderr
    for word in (
        "--broker-addr",
        "--broker-port",
        "--topic",
        "--interval",
        *SENDER_ENV_VARS,
    ):
        assert word in result.stdout, word


# -- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_disconnects_cleanly_and_exits_0(
    broker: Broker, probe: MqttProbe, vin: str, run_sender: RunSender, signum: int
) -> None:
    topic = speed_topic(vin)
    probe.subscribe(topic)
    sender = run_sender(sender_env(broker, topic, interval="0.1"))
    next_arrival(probe, topic)
    client_id = client_id_publishing_to(broker, topic)

    rc, seconds = sender.signal_and_wait(signum)

    assert rc == 0, sender.stderr
    assert seconds < 1.0
    wait_for_broker_log(broker, f"Received DISCONNECT from {client_id}")
    assert "Traceback" not in sender.stderr
    assert "stopped on" in sender.stderr


def test_sigterm_while_broker_is_down_exits_0_within_1s(run_sender: RunSender, vin: str) -> None:
    port = free_port()  # nothing listens here
    sender = run_sender(
        {"MQTT_BROKER_ADDR": "127.0.0.1", "MQTT_BROKER_PORT": str(port), "TOPIC": speed_topic(vin)}
    )
    sender.wait_for_log(r"cannot connect to 127\.0\.0\.1")

    rc, seconds = sender.signal_and_wait(signal.SIGTERM)

    assert rc == 0, sender.stderr
    assert seconds < 1.0
    assert "Traceback" not in sender.stderr


# -- broker outages -------------------------------------------------------------------


def test_broker_restart_continues_at_the_same_rate(
    make_broker: Callable[..., Broker], vin: str, run_sender: RunSender
) -> None:
    topic = speed_topic(vin)
    b = make_broker()
    probe = MqttProbe(b)
    try:
        probe.subscribe(topic)
        sender = run_sender(sender_env(b, topic, interval="0.2"))
        before = [next_arrival(probe, topic) for _ in range(3)]
        assert [a.value for a in before] == [1, 2, 3]
    finally:
        probe.close()
    last_value = before[-1].value

    for outage in ("stop", "kill"):  # a clean shutdown, then a crash
        b.stop() if outage == "stop" else b.kill()
        b.start()  # same port
        probe = MqttProbe(b)
        try:
            probe.subscribe(topic)
            first = next_arrival(probe, topic, timeout=15)
            window = collect(probe, topic, 2.0)
        finally:
            probe.close()

        values = [first.value] + [a.value for a in window]
        # It continues where it was (the reference restarted no counter, but doubled its
        # rate on every reconnect; ours must not).
        assert first.value > last_value, (outage, last_value, values)
        assert_consecutive(values)
        assert 7 <= len(window) <= 13, (outage, values)  # 10 expected; doubled would be ~20
        last_value = values[-1]

    assert sender.proc.poll() is None
    assert sender.stderr.count("lost connection") == 2, sender.stderr
    assert "Traceback" not in sender.stderr


def test_starts_while_broker_is_down_and_publishes_once_it_is_up(
    make_broker: Callable[..., Broker], vin: str, run_sender: RunSender
) -> None:
    topic = speed_topic(vin)
    port = free_port()
    sender = run_sender(
        {
            "MQTT_BROKER_ADDR": "127.0.0.1",
            "MQTT_BROKER_PORT": str(port),
            "TOPIC": topic,
            "INTERVAL": "0.2",
        }
    )
    sender.wait_for_log(r"cannot connect to 127\.0\.0\.1")
    assert sender.proc.poll() is None

    b = make_broker(port=port)
    probe = MqttProbe(b)
    try:
        probe.subscribe(topic)
        arrivals = [next_arrival(probe, topic, timeout=15) for _ in range(3)]
    finally:
        probe.close()

    assert [a.value for a in arrivals] == [1, 2, 3]  # nothing was lost while it was down
    sender.wait_for_log(rf"connected to 127\.0\.0\.1:{port}")


# -- protocol -------------------------------------------------------------------------


@pytest.mark.parametrize("configured", [None, "5"])
def test_broker_without_mqtt5(
    proxy_311: Mqtt311OnlyProxy,
    probe: MqttProbe,
    vin: str,
    run_sender: RunSender,
    configured: str | None,
) -> None:
    topic = speed_topic(vin)
    probe.subscribe(topic)
    env = {
        **sender_env(proxy_311.upstream, topic, interval="0.05"),
        "MQTT_BROKER_PORT": str(proxy_311.port),
    }
    if configured is not None:
        env["MQTT_PROTOCOL"] = configured
    sender = run_sender(env)
    if configured is None:
        assert [next_arrival(probe, topic).value for _ in range(3)] == [1, 2, 3]
        assert proxy_311.refused == 1
        sender.wait_for_log(r"does not speak MQTT 5; using 3\.1\.1")
    else:
        # It keeps asking in MQTT 5, as configured, and so never gets to publish.
        assert proxy_311.wait_refused(2)
        sender.wait_for_log(r"refused the connection: Unsupported protocol version")
        probe.expect_nothing(0.3)
