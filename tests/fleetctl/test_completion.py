"""fleetctl completion bash|zsh|fish: commands, flags, and VINs and workload names from the
broker, as bash completes them (the script run by bash, against the fleet)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def script(fleetctl: Any, tmp_path: Path) -> Path:
    run = fleetctl("completion", "bash", env={})
    assert run.code == 0
    assert run.out.startswith("# fleetctl completion for bash")
    path = tmp_path / "fleetctl.bash"
    path.write_text(run.out)
    return path


def complete(script: Path, env: dict[str, str], *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (the word at the cursor, maybe empty)."""
    program = (
        f"source {script}\n"
        f"COMP_WORDS=(fleetctl {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        '_fleetctl\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "-c", program],
        env={**os.environ, **env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line]


def test_commands_flags_and_words(fleet: Any, script: Path) -> None:
    env = fleet.env()
    assert complete(script, env, "ap") == ["apply"]
    assert complete(script, env, "apply", "--dry") == ["--dry-run"]
    assert complete(script, env, "get", "") == [
        "workloads",
        "agents",
        "configs",
        "workload",
        "agent",
        "config",
    ]
    assert complete(script, env, "completion", "") == ["bash", "zsh", "fish"]
    assert "--poll-interval" not in complete(script, env, "apply", "--")  # hidden stays hidden


def test_vins_and_workload_names_come_from_the_broker(
    fleet: Any, fleetctl: Any, manifest: Any, script: Path, request: pytest.FixtureRequest
) -> None:
    env = fleet.env()
    assert complete(script, env, "state", "--vin", "CAR1") == [f"CAR{n}" for n in range(10, 20)]
    path, [name] = manifest("agent_A")
    assert fleetctl("apply", str(path), "--vin", "CAR14", "--wait", "running").code == 0
    request.addfinalizer(lambda: fleetctl("delete", str(path), "--vin", "CAR14"))
    assert complete(script, env, "logs", "--vin", "CAR14", "app-") == [name]
    assert complete(script, env, "delete", "--vin", "CAR14", "workload", "app-") == [name]
    # No broker: nothing to offer, and nothing printed into the shell.
    assert complete(script, {"MQTT_BROKER_PORT": "1"}, "state", "--vin", "") == []


def test_zsh_and_fish_scripts(fleetctl: Any) -> None:
    zsh = fleetctl("completion", "zsh", env={})
    assert zsh.code == 0
    assert zsh.out.startswith("#compdef fleetctl\n")
    assert "bashcompinit" in zsh.out and "complete -F _fleetctl fleetctl" in zsh.out
    fish = fleetctl("completion", "fish", env={})
    assert fish.code == 0
    assert "complete -c fleetctl -l vin -x -a '(fleetctl __complete vins 2>/dev/null)'" in (
        fish.out.splitlines()
    )
