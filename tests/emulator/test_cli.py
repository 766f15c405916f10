"""The ankaios-emulator console script, run as a subprocess."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ankaios_sdk import Ankaios

SCRIPT = Path(sys.executable).parent / "ankaios-emulator"
MANIFEST = """\
apiVersion: v1
workloads:
  worker:
    runtime: podman
    agent: agent_A
    controlInterfaceAccess:
      allowRules:
        - type: StateRule
          operation: Read
          filterMasks: ["*"]
    runtimeConfig: |
      image: test/worker:1
  plain:
    runtime: podman
    agent: agent_A
    runtimeConfig: |
      image: test/worker:1
"""
WORKER = """\
import os, signal, sys, time
name = os.environ.get("ANKAIOS_CONTROL_INTERFACE_PATH", "none").replace("/", "_")
pidfile = os.path.join(sys.argv[1], f"{os.getpid()}.pid")
open(pidfile, "w").write(os.environ.get("ANKAIOS_CONTROL_INTERFACE_PATH", ""))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(0.1)
"""


class Running:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._partial = b""

    def wait_line(self, wanted: str, timeout: float = 10.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while wanted not in self.lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"no {wanted!r} in {self.lines}")
            # Raw reads: a buffered readline could hide a second line from select().
            fd = self.proc.stdout.fileno()
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                self._partial += os.read(fd, 65536)
                *complete, self._partial = self._partial.split(b"\n")
                self.lines.extend(line.decode() for line in complete)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run() -> Iterator[type[Running]]:
    started: list[Running] = []

    class Tracked(Running):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for r in started:
        r.kill()


def one_line_error(args: list[str]) -> str:
    result = subprocess.run(
        [str(SCRIPT), *args], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_ready_and_clean_sigterm(run: type[Running], tmp_path: Path) -> None:
    ci = tmp_path / "ci"
    emulator = run("--control-interface", str(ci))
    emulator.wait_line("ready")
    assert (ci / "input").exists() and (ci / "output").exists()
    assert emulator.terminate() == 0
    assert not (ci / "input").exists() and not (ci / "output").exists()


def test_sdk_against_the_cli_with_access_file(
    run: type[Running], tmp_path: Path, sdk_path: object
) -> None:
    access = tmp_path / "access.yaml"
    access.write_text("allowRules: [{type: StateRule, operation: ReadWrite, filterMask: ['*']}]\n")
    state = tmp_path / "state.yaml"
    state.write_text(MANIFEST)
    ci = tmp_path / "ci"
    emulator = run("--control-interface", str(ci), "--access", str(access), "--state", str(state))
    emulator.wait_line("ready")
    sdk_path(ci)  # type: ignore[operator]
    with Ankaios() as ank:
        workloads = ank.get_state(["desiredState.workloads"]).to_dict()["desired_state"]
    assert sorted(workloads["workloads"]) == ["plain", "worker"]
    assert emulator.terminate() == 0
    assert emulator.proc.stderr is not None
    log = emulator.proc.stderr.read()
    assert "<- CompleteStateRequest" in log
    assert "-> CompleteStateResponse" in log


def test_dropped_responses_flag(run: type[Running], tmp_path: Path, sdk_path: object) -> None:
    ci = tmp_path / "ci"
    emulator = run("--control-interface", str(ci), "--drop-responses")
    emulator.wait_line("ready")
    sdk_path(ci)  # type: ignore[operator]
    with Ankaios() as ank, pytest.raises(TimeoutError):
        ank.get_state(timeout=0.5)
    assert emulator.terminate() == 0


def test_run_dir_starts_process_workloads_and_stops_them(
    run: type[Running], tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    image_map = tmp_path / "images.yaml"
    image_map.write_text(f"test/worker:1: ['{sys.executable}', '{worker}', '{pids}']\n")
    state = tmp_path / "state.yaml"
    state.write_text(MANIFEST)
    run_dir = tmp_path / "run"
    emulator = run(
        "--state", str(state), "--run-dir", str(run_dir),
        "--runtime", "process", "--image-map", str(image_map),
    )  # fmt: skip
    emulator.wait_line("ready")
    ci = run_dir / "worker" / "control_interface"
    assert f"control interface worker: {ci}" in emulator.lines
    assert (ci / "input").exists()

    deadline = time.monotonic() + 10
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = {int(p.stem): p.read_text() for p in pids.iterdir()}
    assert sorted(started.values()) == ["", str(ci)]

    assert emulator.terminate() == 0
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (ci / "input").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        [],
        ["--control-interface", "/tmp/x", "--runtime", "docker"],
        ["--control-interface", "/tmp/x", "--step-delay", "-1"],
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str]) -> None:
    assert one_line_error(args).startswith("ankaios-emulator: error: ")


def test_broken_manifest_exits_2_with_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state.yaml"
    state.write_text("apiVersion: v1\nworkloads:\n  a: [unclosed\n")
    line = one_line_error(["--control-interface", str(tmp_path / "ci"), "--state", str(state)])
    assert "invalid manifest" in line
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("apiVersion: v1\nworkloads:\n  a:\n    agent: agent_A\n")
    assert "missing field" in one_line_error(
        ["--control-interface", str(tmp_path / "ci"), "--state", str(invalid)]
    )
    missing = one_line_error(
        ["--control-interface", str(tmp_path / "ci"), "--state", str(tmp_path / "nope.yaml")]
    )
    assert "cannot read manifest" in missing


def test_bad_access_file_exits_2(tmp_path: Path) -> None:
    access = tmp_path / "access.yaml"
    access.write_text(
        "allowRules: [{type: StateRule, operation: Everything, filterMasks: ['*']}]\n"
    )
    line = one_line_error(["--control-interface", str(tmp_path / "ci"), "--access", str(access)])
    assert "operation" in line


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ankaios_emulator", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    assert "--control-interface" in result.stdout


def test_faults_on_signals(run: type[Running], tmp_path: Path) -> None:
    """SIGUSR1 restarts the agent, SIGHUP sends garbage, SIGUSR2 closes the connection."""
    import threading

    from fleet_connector.ankaios.control_interface import ControlInterface

    ci = tmp_path / "ci"
    emulator = run("--control-interface", str(ci), "-q")
    emulator.wait_line("ready")
    changes: list[bool] = []
    changed = threading.Condition()

    def on_change(connected: bool) -> None:
        with changed:
            changes.append(connected)
            changed.notify_all()

    def wait_changes(count: int) -> None:
        with changed:
            assert changed.wait_for(lambda: len(changes) >= count, timeout=15), changes

    client = ControlInterface(ci, on_connection_change=on_change)
    client.start()
    try:
        wait_changes(1)
        emulator.proc.send_signal(signal.SIGUSR1)
        wait_changes(3)
        assert changes[:3] == [True, False, True]
        emulator.proc.send_signal(signal.SIGHUP)
        emulator.proc.send_signal(signal.SIGUSR2)
        wait_changes(4)
        assert changes[3] is False
        assert "Connection closed on SIGUSR2" in (client.last_error or "")
    finally:
        client.stop()
    assert emulator.terminate() == 0
