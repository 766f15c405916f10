"""What process workloads print: on the emulator's stderr, prefixed, and in the logs API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from emulator.ci_client import MakeEmulator

from ankaios_emulator import Emulator

IMAGE = "test/printer:1"
PRINTER = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("out", sys.executable, flush=True)
print("err line", file=sys.stderr, flush=True)
while True:
    time.sleep(0.05)
"""


def files(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "printer.py"
    script.write_text(PRINTER)
    state = tmp_path / "state.yaml"
    state.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "workloads": {
                    "printer": {
                        "runtime": "podman",
                        "agent": "agent_A",
                        "runtimeConfig": f"image: {IMAGE}",
                    }
                },
            }
        )
    )
    image_map = tmp_path / "image-map.yaml"
    # "python3" as the project's image map writes it; PATH below has none with our packages.
    image_map.write_text(yaml.safe_dump({IMAGE: ["python3", str(script)]}))
    return state, image_map


def instance_of(emu: Emulator, name: str) -> str:
    [instance] = emu.instance_names(name)
    return instance


@pytest.mark.parametrize("shown", [True, False])
def test_output_on_stderr_and_in_the_logs(
    tmp_path: Path,
    make_emulator: MakeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shown: bool,
) -> None:
    # A PATH whose python3 lacks this project's packages, as in a shell without the venv.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    state, image_map = files(tmp_path)
    emu = make_emulator(
        state=state,
        runtime="process",
        run_dir=tmp_path / "run",
        image_map=image_map,
        workload_output=shown,
    )
    emu.wait_for(lambda e: "err line" in e.logs(instance_of(e, "printer")), 60)
    # python3 ran with the emulator's own interpreter; stdout and stderr both served.
    assert emu.logs(instance_of(emu, "printer")) == [f"out {sys.executable}", "err line"]
    err = capsys.readouterr().err
    if shown:
        assert f"printer | out {sys.executable}\n" in err
        assert "printer | err line\n" in err
    else:
        assert "printer |" not in err


def test_cli_shows_workload_output(tmp_path: Path) -> None:
    state, image_map = files(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ankaios_emulator",
            "--state",
            str(state),
            "--run-dir",
            str(tmp_path / "run"),
            "--runtime",
            "process",
            "--image-map",
            str(image_map),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    # Ends the read below should the line never come.
    watchdog = threading.Timer(90, process.kill)
    watchdog.start()
    try:
        assert process.stderr is not None
        lines = []
        for line in process.stderr:
            lines.append(line)
            if line.startswith("printer | err line"):
                break
    finally:
        watchdog.cancel()
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert f"printer | out {sys.executable}\n" in lines
    assert process.returncode == 0
