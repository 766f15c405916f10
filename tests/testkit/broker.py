"""A mosquitto process owned by the test session, on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@dataclass
class Broker:
    """A mosquitto process this test session owns."""

    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    extra_config: str = ""
    config_text: str | None = None
    """A whole configuration of the test's own (listeners included) instead of the default."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto drops to user "mosquitto", which cannot read pytest's tmp dirs.
        user = "user root\n" if os.geteuid() == 0 else ""
        if self.config_text is not None:
            self.config_file.write_text(
                f"{user}log_dest file {self.log_file}\nlog_type all\n{self.config_text}"
            )
            return
        self.config_file.write_text(
            f"{user}"
            "per_listener_settings false\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.log_file}\n"
            "log_type all\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            f"{self.extra_config}"
        )

    def start(self) -> Broker:
        self.write_config()
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen(
            [mosquitto, "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.host, self.port)
        except OSError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()}") from None
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crashing broker would go."""
        if self.process:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def env(self) -> dict[str, str]:
        return {"MQTT_BROKER_ADDR": self.host, "MQTT_BROKER_PORT": str(self.port)}
