"""Runs workloads as local processes, standing in for podman.

The image name in the rendered runtimeConfig is looked up in an image map (image -> command
list); podman's ``-e``/``--env`` options become the environment and ``commandArgs`` are
appended. Output lines are kept for logs requests.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime import (
    PENDING_STARTING,
    REMOVED,
    RUNNING,
    SUCCEEDED,
    Runtime,
    RuntimeConfigError,
    StateSink,
    failed,
    parse_runtime_config,
    pump_output,
    restart_wanted,
    starting_failed,
)
from ..scheduler import Scheduler

if TYPE_CHECKING:
    from ankaios_model.state import RenderedWorkload

log = logging.getLogger(__name__)

CONTROL_INTERFACE_ENV = "ANKAIOS_CONTROL_INTERFACE_PATH"
STOP_GRACE_S = 3.0
SHUTDOWN_GRACE_S = 0.5
RESTART_DELAY_S = 0.2


@dataclass(frozen=True)
class ProcessSpec:
    command: list[str]
    env: dict[str, str]


def env_from_options(options: Sequence[str]) -> dict[str, str]:
    """Collect podman's environment options: ``-e K=V``, ``--env K=V``, ``--env=K=V``, ``-eK=V``."""
    env: dict[str, str] = {}
    index = 0
    while index < len(options):
        option = str(options[index])
        value: str | None = None
        if option in ("-e", "--env"):
            if index + 1 < len(options):
                value = str(options[index + 1])
                index += 1
        elif option.startswith("--env="):
            value = option[len("--env=") :]
        elif option.startswith("-e") and not option.startswith("--") and len(option) > 2:
            value = option[2:]
        index += 1
        if value is None:
            continue
        key, sep, val = value.partition("=")
        if not sep:
            # podman copies a bare KEY from its own environment
            if key in os.environ:
                env[key] = os.environ[key]
            continue
        env[key] = val
    return env


def process_spec(runtime_config: str, image_map: dict[str, list[str]]) -> ProcessSpec:
    config = parse_runtime_config(runtime_config)
    command = image_map.get(config.image)
    if command is None:
        raise RuntimeConfigError(f"image '{config.image}' is not in the image map")
    return ProcessSpec(
        command=[*command, *config.command_args], env=env_from_options(config.command_options)
    )


@dataclass
class _Instance:
    workload: RenderedWorkload
    control_interface: Path | None
    process: subprocess.Popen[bytes] | None = None
    stopping: bool = False
    threads: list[threading.Thread] = field(default_factory=list)


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(
        self,
        report: StateSink,
        scheduler: Scheduler,
        image_map: dict[str, list[str]],
        work_dir: Path | None = None,
        stop_grace: float = STOP_GRACE_S,
    ) -> None:
        super().__init__(report)
        self._scheduler = scheduler
        self._image_map = image_map
        self._work_dir = work_dir
        self._stop_grace = stop_grace
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()
        self._shutting_down = False

    def start(self, workload: RenderedWorkload, control_interface: Path | None) -> None:
        instance = _Instance(workload, control_interface)
        with self._lock:
            if self._shutting_down:
                return
            self._instances[workload.instance_name] = instance
        self._report(workload, PENDING_STARTING)
        self._launch(instance)

    def _launch(self, instance: _Instance) -> None:
        workload = instance.workload
        try:
            spec = process_spec(workload.runtime_config, self._image_map)
        except RuntimeConfigError as exc:
            self._report(workload, starting_failed(str(exc)))
            return
        env = dict(os.environ)
        env.update(spec.env)
        if instance.control_interface is not None:
            env[CONTROL_INTERFACE_ENV] = str(instance.control_interface)
        sink = self.output_sink(workload)
        try:
            process = subprocess.Popen(
                spec.command,
                env=env,
                cwd=self._work_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Own process group: stop() signals the workload and whatever it spawned.
                start_new_session=True,
            )
        except OSError as exc:
            self._report(workload, starting_failed(f"could not start {spec.command[0]}: {exc}"))
            return
        with self._lock:
            instance.process = process
            stop_now = instance.stopping or self._shutting_down
        log.info("started %s (pid %d): %s", workload.instance_name, process.pid, spec.command)
        self._report(workload, RUNNING)
        pump = threading.Thread(
            target=pump_output, args=(process, sink), name=f"logs-{workload.name}", daemon=True
        )
        watcher = threading.Thread(
            target=self._watch, args=(instance, process), name=f"wait-{workload.name}", daemon=True
        )
        instance.threads = [pump, watcher]
        pump.start()
        watcher.start()
        if stop_now:
            self._terminate(process, self._stop_grace)

    def _watch(self, instance: _Instance, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        for thread in instance.threads:
            if thread is not threading.current_thread():
                thread.join(1.0)
        workload = instance.workload
        with self._lock:
            stopping = instance.stopping
            shutting_down = self._shutting_down
            if stopping and self._instances.get(workload.instance_name) is instance:
                del self._instances[workload.instance_name]
        log.info("%s exited with code %d", workload.instance_name, code)
        if shutting_down:
            return
        if stopping:
            self.close_logs(workload.instance_name)
            self._report(workload, REMOVED)
            return
        self._report(workload, SUCCEEDED if code == 0 else failed(code))
        if restart_wanted(workload.restart_policy, code):
            self._scheduler.call_later(RESTART_DELAY_S, lambda: self._restart(instance))

    def _restart(self, instance: _Instance) -> None:
        with self._lock:
            current = self._instances.get(instance.workload.instance_name)
            if current is not instance or instance.stopping or self._shutting_down:
                return
        self._report(instance.workload, PENDING_STARTING)
        self._launch(instance)

    def stop(self, workload: RenderedWorkload) -> None:
        with self._lock:
            instance = self._instances.get(workload.instance_name)
            if instance is not None:
                instance.stopping = True
                process = instance.process
            else:
                process = None
        if instance is None or process is None or process.poll() is not None:
            # Never started (or already exited): nothing to wait for.
            with self._lock:
                if (
                    instance is not None
                    and self._instances.get(workload.instance_name) is instance
                    and (process is None or process.returncode is not None)
                ):
                    del self._instances[workload.instance_name]
            if process is None or process.returncode is not None:
                self.close_logs(workload.instance_name)
                self._report(workload, REMOVED)
            return
        threading.Thread(
            target=self._terminate,
            args=(process, self._stop_grace),
            name=f"stop-{workload.name}",
            daemon=True,
        ).start()

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], grace: float) -> None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()

    def shutdown(self) -> None:
        with self._lock:
            self._shutting_down = True
            instances = list(self._instances.values())
            self._instances.clear()
        processes = [i.process for i in instances if i.process is not None]
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        # One grace period for all, so shutting down stays prompt with many workloads.
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        for instance in instances:
            for thread in instance.threads:
                thread.join(0.2)

    def pids(self) -> dict[str, int]:
        """Instance name -> pid of every live process (for tests and the CLI)."""
        with self._lock:
            return {
                name: inst.process.pid
                for name, inst in self._instances.items()
                if inst.process is not None and inst.process.poll() is None
            }


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        process.send_signal(sig)
