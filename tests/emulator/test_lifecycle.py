"""The Python API's lifecycle: prompt stop, nothing left behind."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from ankaios_sdk import Ankaios

from ankaios_emulator import Emulator, EmulatorError

PREFIXES = ("ci-", "ankaios-emulator", "logs-", "wait-", "stop-")
STATE = """\
apiVersion: v1
workloads:
  sleeper:
    runtime: podman
    agent: agent_A
    controlInterfaceAccess:
      allowRules: [{type: StateRule, operation: Read, filterMasks: ["*"]}]
    runtimeConfig: "image: sleeper"
"""


def emulator_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(PREFIXES)]


def test_stop_is_prompt_and_leaves_nothing(tmp_path: Path, sdk_path: object) -> None:
    sleeper = tmp_path / "sleep.py"
    # Ignores SIGTERM on purpose: stop() must still end it once the grace period is over.
    sleeper.write_text(
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True)\ntime.sleep(60)\n"
    )
    emu = Emulator(
        control_interface=tmp_path / "ci",
        state=STATE,
        runtime="process",
        run_dir=tmp_path / "run",
        image_map={"sleeper": [sys.executable, str(sleeper)]},
        stop_grace=0.5,  # Ankaios's is 10 s
    ).start()
    sdk_path(emu.control_interface)  # type: ignore[operator]
    ank = Ankaios()
    emu.wait_for(
        lambda e: bool(e.process_ids()) and e.logs(next(iter(e.process_ids()))) == ["up"], 10
    )
    pids = list(emu.process_ids().values())
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 1.0
    assert emulator_threads() == []
    assert not (tmp_path / "ci" / "input").exists()
    assert not (tmp_path / "run" / "sleeper" / "control_interface" / "input").exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    ank._control_interface.disconnect()


def test_stop_gives_workloads_ankaios_grace_period(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Like the connector: SIGTERM starts a clean stop that takes a moment (presence, MQTT
    # disconnect). Ankaios's podman runtime waits 10 s before SIGKILL; so does the emulator.
    done = tmp_path / "cleaned-up"
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import signal, sys, time\n"
        "def stop(*_):\n"
        f"    time.sleep(1.5); open({str(done)!r}, 'w').close(); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('up', flush=True)\ntime.sleep(60)\n"
    )
    emu = Emulator(
        control_interface=tmp_path / "ci",
        state=STATE,
        runtime="process",
        image_map={"sleeper": [sys.executable, str(worker)]},
    ).start()
    emu.wait_for(
        lambda e: bool(e.process_ids()) and e.logs(next(iter(e.process_ids()))) == ["up"], 10
    )
    with caplog.at_level("INFO", logger="ankaios_emulator"):
        emu.stop()
    assert done.exists()
    exits = [r.getMessage() for r in caplog.records if "exited with code" in r.getMessage()]
    assert exits and all(m.endswith("exited with code 0") for m in exits), exits


def test_context_manager_and_paths(tmp_path: Path) -> None:
    with Emulator(control_interface=tmp_path / "ci", run_dir=tmp_path / "run", state=STATE) as emu:
        assert emu.control_interface == tmp_path / "ci"
        assert (
            emu.control_interface_of("sleeper")
            == tmp_path / "run" / "sleeper" / "control_interface"
        )
        assert emu.complete_state(["agents"]) == {
            "agents": {"agent_A": emu.complete_state()["agents"]["agent_A"]}
        }
    assert emulator_threads() == []


def test_bad_inputs_raise_emulator_error(tmp_path: Path) -> None:
    with pytest.raises(EmulatorError, match="invalid manifest"):
        Emulator(control_interface=tmp_path / "ci", state="apiVersion: v1\nworkloads: [1]\n")
    with pytest.raises(EmulatorError):
        Emulator(control_interface=tmp_path / "ci", access={"allowRules": [{"type": "Bogus"}]})
    with pytest.raises(EmulatorError):
        Emulator()
