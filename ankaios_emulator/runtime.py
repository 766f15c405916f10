"""The runtime interface: what the emulated agent needs from something that runs workloads.

A runtime starts and stops rendered workloads, reports execution states through a callback
and keeps each instance's output for logs requests. ``simulate`` and ``process`` implement
it; a podman runtime would be a third implementation of the same four methods.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from ankaios_model.state import RenderedWorkload


@dataclass(frozen=True)
class ExecState:
    """One execution state in Ankaios's YAML spelling (``state``/``subState``)."""

    state: str
    sub_state: str
    info: str = ""

    def to_tree(self) -> dict[str, Any]:
        return {"state": self.state, "subState": self.sub_state, "additionalInfo": self.info}

    def __str__(self) -> str:
        text = f"{self.state}({self.sub_state})"
        return f"{text}: '{self.info}'" if self.info else text


# The states Ankaios 1.0's server and agent report, with the additional info they attach
# (ankaios_api/src/ank_base/workload_state.rs).
PENDING_INITIAL = ExecState("Pending", "Initial")
PENDING_WAITING_TO_START = ExecState("Pending", "WaitingToStart")
PENDING_STARTING = ExecState("Pending", "Starting", "Triggered at runtime.")
RUNNING = ExecState("Running", "Ok")
STOPPING_REQUESTED = ExecState("Stopping", "RequestedAtRuntime")
STOPPING_WAITING_TO_STOP = ExecState("Stopping", "WaitingToStop")
SUCCEEDED = ExecState("Succeeded", "Ok")
NOT_SCHEDULED = ExecState("NotScheduled", "NotScheduled")
AGENT_DISCONNECTED = ExecState("AgentDisconnected", "AgentDisconnected")
REMOVED = ExecState("Removed", "Removed")


def failed(exit_code: int) -> ExecState:
    return ExecState("Failed", "ExecFailed", f"Exit code: '{exit_code}'")


def starting_failed(info: str) -> ExecState:
    return ExecState("Pending", "StartingFailed", info)


StateSink = Callable[["RenderedWorkload", ExecState], None]
OutputEcho = Callable[[str, str], None]


@dataclass(frozen=True)
class LogLine:
    timestamp: float
    text: str


class LogBuffer:
    """All output lines of one instance, readable by any number of log campaigns."""

    def __init__(self) -> None:
        self._lines: list[LogLine] = []
        self._closed = False
        self._cond = threading.Condition()

    def append(self, text: str) -> None:
        with self._cond:
            self._lines.append(LogLine(time.time(), text))
            self._cond.notify_all()

    def close(self) -> None:
        """No more lines will come (the instance is gone)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def snapshot(self) -> tuple[list[LogLine], bool]:
        with self._cond:
            return list(self._lines), self._closed

    def wait_beyond(self, count: int, timeout: float) -> tuple[list[LogLine], bool]:
        """Lines after the first ``count`` (waiting up to ``timeout`` for some) and closed flag."""
        with self._cond:
            if len(self._lines) <= count and not self._closed:
                self._cond.wait(timeout)
            return self._lines[count:], self._closed


class Runtime(ABC):
    """Runs workloads for the emulated agent.

    ``start`` and ``stop`` must return quickly; progress is reported through ``report``
    (Pending(Starting), Running, Succeeded, Failed, and Removed once a stop completed).
    """

    name: str = "abstract"

    def __init__(self, report: StateSink) -> None:
        self._report = report
        self._logs: dict[str, LogBuffer] = {}
        self._logs_lock = threading.Lock()
        # Where the output of real workloads (process, podman) is shown as it comes:
        # (workload name, line); None shows nothing.
        self.echo: OutputEcho | None = None

    def output_sink(self, workload: RenderedWorkload) -> Callable[[str], None]:
        """Takes each output line of ``workload``: into its log buffer and to ``echo``."""
        buffer = self.log_buffer(workload.instance_name)
        echo = self.echo
        name = workload.name

        def take(line: str) -> None:
            buffer.append(line)
            if echo is not None:
                echo(name, line)

        return take

    @abstractmethod
    def start(self, workload: RenderedWorkload, control_interface: Path | None) -> None:
        """Start ``workload``; ``control_interface`` is its FIFO directory if it has one."""

    @abstractmethod
    def stop(self, workload: RenderedWorkload) -> None:
        """Stop the instance and report ``REMOVED`` when it is gone."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop everything at once (emulator exit); no reports needed."""

    def logs(self, instance_name: str) -> LogBuffer | None:
        with self._logs_lock:
            return self._logs.get(instance_name)

    def log_buffer(self, instance_name: str) -> LogBuffer:
        """The buffer of an instance, created on first use."""
        with self._logs_lock:
            buffer = self._logs.get(instance_name)
            if buffer is None or buffer.closed:
                buffer = LogBuffer()
                self._logs[instance_name] = buffer
            return buffer

    def close_logs(self, instance_name: str) -> None:
        with self._logs_lock:
            buffer = self._logs.pop(instance_name, None)
        if buffer is not None:
            buffer.close()


def restart_wanted(policy: Any, exit_code: int) -> bool:
    """Whether Ankaios restarts a workload that exited, by its restartPolicy."""
    text = str(policy).upper()
    if text in ("ALWAYS", "2"):
        return True
    if text in ("ON_FAILURE", "1"):
        return exit_code != 0
    return False


class RuntimeConfigError(ValueError):
    """The rendered runtimeConfig cannot be run."""


@dataclass(frozen=True)
class PodmanRunConfig:
    image: str
    command_options: list[str]
    command_args: list[str]


def parse_runtime_config(runtime_config: str) -> PodmanRunConfig:
    """The fields Ankaios's podman runtime reads from a rendered runtimeConfig."""
    try:
        config = yaml.safe_load(runtime_config) if runtime_config.strip() else {}
    except yaml.YAMLError as exc:
        raise RuntimeConfigError(f"runtimeConfig is not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise RuntimeConfigError("runtimeConfig is not a mapping")
    image = config.get("image")
    if not isinstance(image, str) or not image:
        raise RuntimeConfigError("runtimeConfig has no image")
    return PodmanRunConfig(
        image=image,
        command_options=_string_list(config.get("commandOptions"), "commandOptions"),
        command_args=_string_list(config.get("commandArgs"), "commandArgs"),
    )


def _string_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RuntimeConfigError(f"{key} must be a list")
    return [str(item) for item in value]


def pump_output(process: subprocess.Popen[bytes], sink: Callable[[str], None]) -> None:
    """Hands a process's output to ``sink``, line by line, until it ends."""
    assert process.stdout is not None
    for raw in process.stdout:
        sink(raw.decode("utf-8", "replace").rstrip("\r\n"))
    process.stdout.close()


class StderrEcho:
    """Shows workload output on our stderr as ``<workload> | <line>``, whole lines only."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, workload_name: str, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        with self._lock:
            try:
                stream.write(f"{workload_name} | {line}\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # our stderr is gone; the log buffer still has the line
