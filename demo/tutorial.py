"""The tutorial "Manage a fleet of vehicles from the cloud", run locally and narrated.

Starts a mosquitto broker, the Ankaios emulator with the process runtime and the tutorial's
startup state (which starts the fleet connector for VIN 1), then sends the tutorial's
requests over MQTT and shows what arrives on ``vehicle/1/#``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
VIN = "1"


class Stopped(Exception):
    """SIGTERM or SIGHUP: stop everything the demo started, quietly."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signal(signum: int, frame: object) -> None:
    raise Stopped(signum)


def say(text: str) -> None:
    print(f"\n{_bold(f'== {text}')}", flush=True)


def _bold(text: str) -> str:
    """Bold on a terminal; plain into a file or a pipe, or with NO_COLOR set (no-color.org)."""
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return f"\033[1m{text}\033[0m"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def descendants(root: int) -> set[int]:
    """Every process below ``root``, from the parent links in /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s; waits until it is gone.

    What it started itself (the emulator's workloads run in sessions of their own) is
    killed too if it outlives it, so that nothing the demo started is left behind.
    """
    below = {pid: _start_time(pid) for pid in descendants(proc.pid)} if proc.poll() is None else {}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    while True:
        try:
            proc.wait(timeout=10)
            break
        except subprocess.TimeoutExpired:
            proc.kill()
        except (KeyboardInterrupt, Stopped):
            # A second Ctrl-C or signal while cleaning up: keep cleaning up.
            continue
    for pid, started in below.items():
        # The start time tells a leftover from a new process that got a freed pid.
        if _start_time(pid) == started:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(args, text=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        stop(proc)


class Observer:
    """``mosquitto_sub -t "vehicle/1/#" -v``, as the tutorial keeps open in a window."""

    def __init__(self, port: int) -> None:
        self.messages: queue.Queue[tuple[str, str]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-observer")
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload.decode()))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"vehicle/{VIN}/#", qos=1)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str) -> None:
        print(f"$ mosquitto_pub -t {topic} ...", flush=True)
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def until(self, topic: str, timeout: float = 30.0, show: int = 600) -> tuple[str, float]:
        """Prints messages as they come, up to the first one on ``topic``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemExit(f"demo: nothing arrived on {topic} within {timeout:g} s")
            try:
                got, payload = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            self.show(got, payload, show)
            if got == topic:
                return payload, time.monotonic()

    def quiet_for(self, topic: str, seconds: float) -> bool:
        """Prints messages for ``seconds``; whether none of them was on ``topic``."""
        deadline = time.monotonic() + seconds
        quiet = True
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                got, payload = self.messages.get(timeout=remaining)
            except queue.Empty:
                break
            self.show(got, payload)
            quiet = quiet and got != topic
        return quiet

    @staticmethod
    def show(topic: str, payload: str, limit: int = 600) -> None:
        text = payload if len(payload) <= limit else payload[:limit] + " ..."
        print(f"{topic} {text}", flush=True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def manifest(name: str, port: int, workdir: Path) -> Path:
    """The tutorial's file; with the broker on another port than 1883, a copy naming it."""
    path = MANIFESTS / name
    if port == 1883:
        return path
    copy = workdir / name
    copy.write_text(path.read_text().replace('value: "1883"', f'value: "{port}"'))
    return copy


def main() -> int:
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGHUP, stop_on_signal)
    try:
        return run()
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Stopped as stopped:
        print(f"\ndemo: {stopped}; everything it started is stopped", file=sys.stderr)
        return 128 + stopped.signum


def run() -> int:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("demo: mosquitto is not installed (make setup installs it)", file=sys.stderr)
        return 2
    port = 1883 if port_free(1883) else free_port()
    speed = f"vehicle/{VIN}/sensors/speed"
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-demo-")))
        say(f"MQTT broker: mosquitto on 127.0.0.1:{port}")
        if port != 1883:
            print("(port 1883 is taken; the demo's copies of the manifests name this port)")
        conf = workdir / "mosquitto.conf"
        user = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n")
        stack.enter_context(process([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL))
        wait_port(port)
        observer = Observer(port)
        stack.callback(observer.close)

        say("Ankaios (emulated) starts from manifests/state.yaml: the fleet connector for VIN 1")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MQTT_BROKER_ADDR": "127.0.0.1",
            "MQTT_BROKER_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        print("(lines 'fleetconnector | ...' are the connector's own log, one per request)")
        emulator = stack.enter_context(
            process(
                [
                    sys.executable,
                    "-m",
                    "ankaios_emulator",
                    "--state",
                    str(MANIFESTS / "state.yaml"),
                    "--run-dir",
                    str(workdir / "run"),
                    "--runtime",
                    "process",
                    "--image-map",
                    str(MANIFESTS / "image-map.yaml"),
                    "--quiet",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        status, _ = observer.until(f"vehicle/{VIN}/status")
        while json.loads(status).get("ankaios") != "connected":
            status, _ = observer.until(f"vehicle/{VIN}/status")

        say("Install the vehicle data sender: vehicle-data-sender.yaml -> manifest/apply/req")
        observer.publish(
            f"vehicle/{VIN}/manifest/apply/req",
            manifest("vehicle-data-sender.yaml", port, workdir).read_bytes(),
        )
        observer.until(f"vehicle/{VIN}/manifest/apply/resp")
        for _ in range(3):
            observer.until(speed)

        say('Read the workload states: ["workloadStates"] -> state/req')
        observer.publish(f"vehicle/{VIN}/state/req", '["workloadStates"]')
        observer.until(f"vehicle/{VIN}/state/resp")

        say("Re-configure the sender: config.yaml (INTERVAL 10) -> manifest/apply/req")
        observer.publish(
            f"vehicle/{VIN}/manifest/apply/req", manifest("config.yaml", port, workdir).read_bytes()
        )
        observer.until(f"vehicle/{VIN}/manifest/apply/resp")
        _, first = observer.until(speed, timeout=20)
        _, second = observer.until(speed, timeout=20)
        print(f"(speed values now arrive every {second - first:.1f} s)")

        say("Delete the sender: vehicle-data-sender.yaml -> manifest/delete/req")
        observer.publish(
            f"vehicle/{VIN}/manifest/delete/req",
            manifest("vehicle-data-sender.yaml", port, workdir).read_bytes(),
        )
        observer.until(f"vehicle/{VIN}/manifest/delete/resp")
        if observer.quiet_for(speed, 12):
            print("(no speed value for 12 s: the sender is gone)")

        say("Stop Ankaios: the emulator stops the connector, which says it is offline")
        emulator.send_signal(signal.SIGTERM)
        status, _ = observer.until(f"vehicle/{VIN}/status")
        while json.loads(status).get("status") != "offline":
            status, _ = observer.until(f"vehicle/{VIN}/status")
        stop(emulator)
        say("Done: the broker goes down with the demo.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
