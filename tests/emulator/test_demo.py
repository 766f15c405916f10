"""`make demo` stops everything it started: on SIGTERM to make, on Ctrl-C, on a hangup."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A whole demo start-up (broker, emulator, connector, sender) on a busy machine.
pytestmark = pytest.mark.timeout(300)


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (walking the parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces or parentheses; the ppid follows the last ")".
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


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGHUP, True)],
    ids=["sigterm-to-make", "ctrl-c", "hangup"],
)
def test_make_demo_leaves_no_process_behind(signum: int, to_group: bool) -> None:
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}
    make = subprocess.Popen(
        ["make", "-s", "demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        # Its own process group, standing in for a terminal's foreground job.
        start_new_session=True,
    )
    watchdog = threading.Timer(180, lambda: os.killpg(make.pid, signal.SIGKILL))
    watchdog.start()
    try:
        assert make.stdout is not None
        seen: list[str] = []
        for line in make.stdout:
            seen.append(line)
            if line.startswith("vehicle/1/sensors/speed"):
                break
        assert seen and seen[-1].startswith("vehicle/1/sensors/speed"), "".join(seen)
        # Its output goes to a pipe here, as to a file: headings without terminal codes.
        assert any(line.startswith("== MQTT broker") for line in seen), "".join(seen)
        assert not any("\x1b" in line for line in seen), "".join(seen)
        started = descendants(make.pid)
        # demo, mosquitto, emulator, connector and sender at least
        assert len(started) >= 5, started
        if to_group:
            os.killpg(make.pid, signum)
        else:
            make.send_signal(signum)
        rest = make.stdout.read()
        make.wait(60)
    finally:
        watchdog.cancel()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: command(pid) for pid in started if alive(pid)}
    assert not left, left
    assert "Traceback" not in rest
    assert "everything it started is stopped" in rest
