"""Runs workloads as podman containers, the way Ankaios 1.0's ``podman`` runtime does.

The rendered runtimeConfig is YAML with ``image``, ``commandOptions`` and ``commandArgs``.
A workload starts as::

    podman run --detach --name <instance name> <commandOptions>
        [--mount=type=bind,source=<control interface dir>,destination=<mount point>]
        --label=name=<workload> --label=agent=<agent> <image> <commandArgs>

Like Ankaios, ``--name`` comes before the options (a workload may override it) and the
control-interface directory is only mounted for workloads with ``controlInterfaceAccess``.
Execution states come from polling ``podman ps --all --format=json`` (Ankaios polls once per
second): running -> Running(Ok), exited 0 -> Succeeded(Ok), other exit codes ->
Failed(ExecFailed). Stopping is ``podman stop -t N`` then ``podman rm``; a restart (restart
policy ALWAYS/ON_FAILURE) removes the container and runs it again. Logs requests are served
from ``podman logs --follow``.

Every container also gets the label ``ankaios-emulator=<run id>`` so that whoever runs the
emulator can find (and clean up) exactly the containers of one run.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime import (
    PENDING_STARTING,
    REMOVED,
    RUNNING,
    SUCCEEDED,
    ExecState,
    PodmanRunConfig,
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

CONTROL_INTERFACE_MOUNT_POINT = "/run/ankaios/control_interface"
RUN_LABEL = "ankaios-emulator"
STOP_TIMEOUT_S = 10
SHUTDOWN_TIMEOUT_S = 2
POLL_INTERVAL_S = 0.5
RESTART_DELAY_S = 0.2
COMMAND_TIMEOUT_S = 120.0


class PodmanError(RuntimeError):
    """A podman command failed."""


def run_arguments(
    workload: RenderedWorkload,
    config: PodmanRunConfig,
    control_interface: Path | None,
    labels: Sequence[str] = (),
) -> list[str]:
    """The arguments after ``podman`` for starting ``workload``."""
    args = ["run", "--detach", "--name", workload.instance_name, *config.command_options]
    if control_interface is not None:
        args.append(
            f"--mount=type=bind,source={control_interface},"
            f"destination={CONTROL_INTERFACE_MOUNT_POINT}"
        )
    args += [f"--label=name={workload.name}", f"--label=agent={workload.agent}"]
    args += [f"--label={label}" for label in labels]
    args.append(config.image)
    args += config.command_args
    return args


def exec_state(podman_state: str, exit_code: int) -> ExecState | None:
    """Ankaios's mapping of a ``podman ps`` state; ``None`` while still starting."""
    state = podman_state.lower()
    if state == "running":
        return RUNNING
    if state == "exited":
        return SUCCEEDED if exit_code == 0 else failed(exit_code)
    return None


@dataclass
class _Instance:
    workload: RenderedWorkload
    control_interface: Path | None
    container_id: str | None = None
    launching: bool = True
    reported: ExecState | None = None
    stopping: bool = False
    restarting: bool = False
    follower: subprocess.Popen[bytes] | None = None
    threads: list[threading.Thread] = field(default_factory=list)


class PodmanRuntime(Runtime):
    name = "podman"

    def __init__(
        self,
        report: StateSink,
        scheduler: Scheduler,
        *,
        podman: str = "podman",
        stop_timeout: int = STOP_TIMEOUT_S,
        poll_interval: float = POLL_INTERVAL_S,
        run_id: str | None = None,
    ) -> None:
        super().__init__(report)
        self._scheduler = scheduler
        self._podman = shutil.which(podman) or podman
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()
        self._shutting_down = False
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()
        self.exit_codes: dict[str, int] = {}
        """Instance name -> exit code of containers this runtime stopped (for tests)."""

    @property
    def label(self) -> str:
        """The label that marks this run's containers (``podman ps --filter label=...``)."""
        return f"{RUN_LABEL}={self.run_id}"

    # -- podman ------------------------------------------------------------------------

    def _podman_cmd(self, args: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> str:
        try:
            done = subprocess.run(
                [self._podman, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PodmanError(f"podman {args[0]}: {exc}") from exc
        if done.returncode != 0:
            message = done.stderr.decode("utf-8", "replace").strip() or f"rc {done.returncode}"
            raise PodmanError(f"podman {args[0]} failed: {message}")
        return done.stdout.decode("utf-8", "replace")

    def containers(self) -> dict[str, tuple[str, int]]:
        """Container id -> (state, exit code) of every container of this run."""
        out = self._podman_cmd(["ps", "--all", "--format=json", "--filter", f"label={self.label}"])
        entries: Any = json.loads(out) if out.strip() else []
        result: dict[str, tuple[str, int]] = {}
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("Id"), str):
                result[entry["Id"]] = (str(entry.get("State", "")), int(entry.get("ExitCode", 0)))
        return result

    # -- Runtime -----------------------------------------------------------------------

    def start(self, workload: RenderedWorkload, control_interface: Path | None) -> None:
        instance = _Instance(workload, control_interface)
        with self._lock:
            if self._shutting_down:
                return
            self._instances[workload.instance_name] = instance
            if self._poller is None:
                self._poller = threading.Thread(
                    target=self._poll, name="podman-poller", daemon=True
                )
                self._poller.start()
        self._report(workload, PENDING_STARTING)
        self._spawn(lambda: self._launch(instance), f"run-{workload.name}")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        """Run a podman command sequence in a thread that shutdown() waits for."""

        def run() -> None:
            try:
                target()
            finally:
                with self._lock:
                    self._workers.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._workers.add(thread)
        thread.start()

    def _launch(self, instance: _Instance) -> None:
        workload = instance.workload
        try:
            config = parse_runtime_config(workload.runtime_config)
            args = run_arguments(workload, config, instance.control_interface, [self.label])
            log.info("podman %s", " ".join(args))
            # A leftover container of the same name (an earlier crash) would block the run.
            self._podman_cmd(["rm", "--force", "--ignore", workload.instance_name])
            container_id = self._podman_cmd(args).strip()
        except (RuntimeConfigError, PodmanError) as exc:
            log.warning("%s: %s", workload.instance_name, exc)
            with self._lock:
                instance.launching = False
                stopping = instance.stopping
            if stopping:
                self._finish_removal(instance)
            elif not self._shutting_down:
                self._report(workload, starting_failed(str(exc)))
            return
        with self._lock:
            instance.container_id = container_id
            instance.launching = False
            instance.reported = None
            stopping = instance.stopping
            shutting_down = self._shutting_down
        log.info("started %s as container %s", workload.instance_name, container_id[:12])
        if shutting_down:
            return  # shutdown() waits for us, then removes every container of the run
        if stopping:
            self._remove(instance)
            return
        self._follow_logs(instance, container_id)
        self._wake.set()

    def _follow_logs(self, instance: _Instance, container_id: str) -> None:
        sink = self.output_sink(instance.workload)
        try:
            follower = subprocess.Popen(
                [self._podman, "logs", "--follow", container_id],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            log.warning("cannot follow the logs of %s: %s", container_id[:12], exc)
            return
        instance.follower = follower
        pump = threading.Thread(
            target=pump_output,
            args=(follower, sink),
            name=f"logs-{instance.workload.name}",
            daemon=True,
        )
        instance.threads.append(pump)
        pump.start()

    def _poll(self) -> None:
        while True:
            self._wake.wait(self._poll_interval)
            self._wake.clear()
            with self._lock:
                if self._shutting_down:
                    return
                watched = [
                    i
                    for i in self._instances.values()
                    if i.container_id is not None and not i.stopping and not i.restarting
                ]
            if not watched:
                continue
            try:
                states = self.containers()
            except (PodmanError, ValueError) as exc:
                log.warning("podman ps: %s", exc)
                continue
            for instance in watched:
                assert instance.container_id is not None
                podman_state, exit_code = states.get(instance.container_id, ("unknown", 0))
                self._observe(instance, podman_state, exit_code)

    def _observe(self, instance: _Instance, podman_state: str, exit_code: int) -> None:
        state = exec_state(podman_state, exit_code)
        workload = instance.workload
        with self._lock:
            if (
                state is None
                or state == instance.reported
                or instance.stopping
                or self._shutting_down
                or self._instances.get(workload.instance_name) is not instance
            ):
                return
            instance.reported = state
            restart = state.state != "Running" and restart_wanted(
                workload.restart_policy, exit_code
            )
            instance.restarting = restart
        log.info("%s: podman state %s -> %s", workload.instance_name, podman_state, state)
        self._report(workload, state)
        if restart:
            self._scheduler.call_later(RESTART_DELAY_S, lambda: self._restart(instance))

    def _restart(self, instance: _Instance) -> None:
        with self._lock:
            current = self._instances.get(instance.workload.instance_name)
            if current is not instance or instance.stopping or self._shutting_down:
                return
        self._report(instance.workload, PENDING_STARTING)

        def relaunch() -> None:
            with self._lock:
                if instance.stopping or self._shutting_down:
                    return  # stop()/shutdown() removes the exited container
                instance.launching = True
            self._discard_container(instance)
            with self._lock:
                instance.restarting = False
            self._launch(instance)

        self._spawn(relaunch, f"restart-{instance.workload.name}")

    def stop(self, workload: RenderedWorkload) -> None:
        with self._lock:
            instance = self._instances.get(workload.instance_name)
            if instance is not None:
                instance.stopping = True
                # While `podman run` is under way, _launch sees the flag and removes it.
                launching = instance.launching
                launched = instance.container_id is not None
        if instance is None:
            self.close_logs(workload.instance_name)
            self._report(workload, REMOVED)
            return
        if launching:
            return
        if not launched:
            self._finish_removal(instance)
            return
        self._spawn(lambda: self._remove(instance), f"stop-{workload.name}")

    def _remove(self, instance: _Instance) -> None:
        """``podman stop -t N`` + ``podman rm``, then report the instance removed."""
        container_id = instance.container_id
        if container_id is not None:
            started = time.monotonic()
            try:
                self._podman_cmd(
                    ["stop", "--ignore", "-t", str(self._stop_timeout), container_id],
                    timeout=self._stop_timeout + COMMAND_TIMEOUT_S,
                )
            except PodmanError as exc:
                log.warning("%s: %s", instance.workload.instance_name, exc)
            self._record_exit(instance, container_id, time.monotonic() - started)
            self._discard_container(instance)
        self._finish_removal(instance)

    def _record_exit(self, instance: _Instance, container_id: str, took: float) -> None:
        try:
            out = self._podman_cmd(["inspect", "--format", "{{.State.ExitCode}}", container_id])
            code = int(out.strip())
        except (PodmanError, ValueError):
            return
        self.exit_codes[instance.workload.instance_name] = code
        log.info("stopped %s in %.1f s, exit code %d", instance.workload.instance_name, took, code)

    def _discard_container(self, instance: _Instance) -> None:
        container_id = instance.container_id
        if container_id is not None:
            try:
                self._podman_cmd(["rm", "--force", "--ignore", container_id])
            except PodmanError as exc:
                log.warning("%s: %s", instance.workload.instance_name, exc)
        follower = instance.follower
        if follower is not None:
            _end(follower)
            instance.follower = None
        with self._lock:
            instance.container_id = None

    def _finish_removal(self, instance: _Instance) -> None:
        workload = instance.workload
        with self._lock:
            owned = self._instances.get(workload.instance_name) is instance
            if owned:
                del self._instances[workload.instance_name]
            shutting_down = self._shutting_down
        if shutting_down or not owned:
            return  # reported once, by whoever removed it first
        self.close_logs(workload.instance_name)
        self._report(workload, REMOVED)

    def shutdown(self) -> None:
        with self._lock:
            self._shutting_down = True
            instances = list(self._instances.values())
            self._instances.clear()
        self._wake.set()
        # Let `podman run`/`stop` under way finish, so that no container appears later.
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            with self._lock:
                workers = [t for t in self._workers if t is not threading.current_thread()]
            if not workers or time.monotonic() > deadline:
                break
            workers[0].join(max(0.0, deadline - time.monotonic()))
        ids = [i.container_id for i in instances if i.container_id is not None]
        if ids:
            try:
                self._podman_cmd(
                    ["rm", "--force", "--ignore", "--time", str(SHUTDOWN_TIMEOUT_S), *ids],
                    timeout=SHUTDOWN_TIMEOUT_S + COMMAND_TIMEOUT_S,
                )
            except PodmanError as exc:
                log.warning("removing containers at shutdown: %s", exc)
        # Containers whose `podman run` was still under way when we stopped.
        try:
            self._podman_cmd(
                ["rm", "--force", "--ignore", "--time", "0", "--filter", f"label={self.label}"]
            )
        except PodmanError as exc:
            log.debug("cleanup by label: %s", exc)
        for instance in instances:
            if instance.follower is not None:
                _end(instance.follower)
            for thread in instance.threads:
                thread.join(0.5)
        if self._poller is not None:
            self._poller.join(2.0)

    def container_ids(self) -> dict[str, str]:
        """Instance name -> container id of every container this runtime runs."""
        with self._lock:
            return {
                name: inst.container_id
                for name, inst in self._instances.items()
                if inst.container_id is not None
            }


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
