"""fleet-sim and a real car (connector + emulated Ankaios), each as its command in a process.

Used by tests/sim: the simulator is held to the connector's shapes on the wire only, so
neither is imported here.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from testkit.broker import Broker
from testkit.live import ALL_LOGS

REPO = Path(__file__).resolve().parents[2]


class Sim:
    """A running fleet-sim; its JSON event lines are read on a thread of their own."""

    def __init__(self, broker: Broker, prefix: str, args: list[str]) -> None:
        self.prefix = prefix
        self.args = args
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet_sim",
                "--broker-addr",
                broker.host,
                "--broker-port",
                str(broker.port),
                "--vin-prefix",
                prefix,
                *args,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(json.loads(line))

    def vin(self, number: int, width: int = 6) -> str:
        return f"{self.prefix}{number:0{width}d}"

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next event of that kind; fails with the sim's stderr if none comes in time."""
        try:
            while True:
                found = self.events.get(timeout=timeout)
                if found["event"] == event:
                    return found
        except queue.Empty:
            raise AssertionError(f"fleet-sim said no {event!r} within {timeout} s") from None

    def stop(self) -> dict[str, Any]:
        """SIGTERM; returns the ``stopped`` event (its statistics)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        stopped = self.expect("stopped", 15)
        assert self.process.wait(10) == 0
        return stopped

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


IMAGES = {
    "crash:1": ["sh", "-c", "echo starting; echo working; sleep 0.5; echo boom >&2; exit 3"],
    "steady:1": ["sh", "-c", "echo up; exec sleep 120"],
    "steady:2": ["sh", "-c", "echo up again; exec sleep 120"],
}


class RealCar:
    """An emulated Ankaios running workloads as processes, and the connector's command."""

    def __init__(self, broker: Broker, workdir: Path, vin: str) -> None:
        self.vin = vin
        workdir.mkdir(parents=True, exist_ok=True)
        images = workdir / "images.yaml"
        images.write_text(yaml.safe_dump(IMAGES))
        access = workdir / "access.yaml"
        access.write_text(yaml.safe_dump(ALL_LOGS))
        control_interface = workdir / "control_interface"
        self.emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ankaios_emulator",
                "--control-interface",
                str(control_interface),
                "--runtime",
                "process",
                "--image-map",
                str(images),
                "--access",
                str(access),
                "--no-pacing",
                "--no-workload-output",
                "-q",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.emulator.stdout is not None
        for line in self.emulator.stdout:  # it names its control interfaces first
            if line.strip() == "ready":
                break
        else:
            self.emulator.kill()
            self.emulator.wait()
            raise RuntimeError("the emulator ended before it was ready")
        env = {
            **os.environ,
            **broker.env(),
            "VIN": vin,
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(control_interface),
            "STATE_DIR": str(workdir / "state"),
            "MQTT_CLIENT_ID": f"fleet-connector-{vin}",
            "LOG_LEVEL": "WARNING",
        }
        self.connector = subprocess.Popen(
            [sys.executable, "-m", "fleet_connector"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        for process in (self.connector, self.emulator):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
