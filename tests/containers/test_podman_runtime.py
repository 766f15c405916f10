"""The emulator's podman runtime: how it builds `podman run` (no podman needed) and, with
podman, failing containers, restarts and the `ankaios-emulator --runtime podman` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from containers.podman_kit import Images, containers_with, remove_containers_with

from ankaios_emulator import Emulator
from ankaios_emulator.runtime import RUNNING, SUCCEEDED, failed
from ankaios_emulator.runtimes.podman import (
    RuntimeConfigError,
    exec_state,
    parse_runtime_config,
    run_arguments,
)
from ankaios_model.state import RenderedWorkload


def rendered(name: str, runtime_config: str, access: dict[str, Any] | None = None) -> Any:
    return RenderedWorkload(
        name=name,
        agent="agent_A",
        runtime="podman",
        runtime_config=runtime_config,
        restart_policy="NEVER",
        dependencies={},
        tags={},
        control_interface_access=access or {},
        files=[],
    )


def test_parse_runtime_config() -> None:
    config = parse_runtime_config(
        "image: localhost/x:1\ncommandOptions: [--net=host, -e, A=1]\ncommandArgs: [--flag, 2]\n"
    )
    assert config.image == "localhost/x:1"
    assert config.command_options == ["--net=host", "-e", "A=1"]
    assert config.command_args == ["--flag", "2"]
    assert parse_runtime_config("image: i").command_options == []


@pytest.mark.parametrize(
    "text",
    ["", "commandOptions: []", "image: [a]", "- a list", "image: i\ncommandOptions: -e", ": :"],
)
def test_parse_runtime_config_rejects(text: str) -> None:
    with pytest.raises(RuntimeConfigError):
        parse_runtime_config(text)


def test_run_arguments_like_ankaios(tmp_path: Path) -> None:
    text = "image: img\ncommandOptions: [--net=host, --name, mine]\ncommandArgs: [a, b]"
    workload = rendered("w", text)
    args = run_arguments(workload, parse_runtime_config(text), tmp_path, ["run=1"])
    assert args == [
        "run",
        "--detach",
        # --name before the options: a workload's own --name wins
        "--name",
        workload.instance_name,
        "--net=host",
        "--name",
        "mine",
        f"--mount=type=bind,source={tmp_path},destination=/run/ankaios/control_interface",
        "--label=name=w",
        "--label=agent=agent_A",
        "--label=run=1",
        "img",
        "a",
        "b",
    ]
    without = run_arguments(workload, parse_runtime_config(text), None)
    assert not any(a.startswith("--mount") for a in without)


def test_exec_state_mapping() -> None:
    assert exec_state("running", 0) == RUNNING
    assert exec_state("Exited", 0) == SUCCEEDED
    assert exec_state("exited", 3) == failed(3)
    assert exec_state("created", 0) is None
    assert exec_state("initialized", 0) is None


# -- with podman --------------------------------------------------------------------------


def failing_workload(image: str, restart_policy: str) -> dict[str, Any]:
    """The sender without TOPIC: exits with code 2 at once."""
    config = {"image": image, "commandOptions": ["--net=host", "-e", "INTERVAL=1"]}
    return {
        "runtime": "podman",
        "agent": "agent_A",
        "restartPolicy": restart_policy,
        "runtimeConfig": yaml.safe_dump(config),
    }


def states_of(emulator: Emulator, name: str) -> list[dict[str, Any]]:
    states = emulator.complete_state(["workloadStates"]).get("workloadStates", {})
    return list(states.get("agent_A", {}).get(name, {}).values())


@pytest.fixture
def workload_name() -> Iterator[str]:
    name = f"failing-{uuid.uuid4().hex[:8]}"
    yield name
    remove_containers_with(f"name={name}")


@pytest.mark.containers
def test_failing_container_restarts_on_failure(
    images: Images, workload_name: str, tmp_path: Path
) -> None:
    state = {
        "apiVersion": "v0.1",
        "workloads": {workload_name: failing_workload(images.sender, "ON_FAILURE")},
    }
    with Emulator(state=state, runtime="podman", run_dir=tmp_path / "run") as emulator:
        emulator.wait_for(lambda e: e.start_count(workload_name) >= 2, timeout=30)
        seen = states_of(emulator, workload_name)
        assert len(seen) == 1
        # a restart replaces the container (between the two there may be none)
        assert len(containers_with(f"name={workload_name}")) <= 1
    assert containers_with(f"name={workload_name}") == []


@pytest.mark.containers
def test_cli_runtime_podman(images: Images, workload_name: str, tmp_path: Path) -> None:
    state_file = tmp_path / "state.yaml"
    state_file.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v0.1",
                "workloads": {workload_name: failing_workload(images.sender, "NEVER")},
            }
        )
    )
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ankaios_emulator",
            "--state",
            str(state_file),
            "--run-dir",
            str(tmp_path / "run"),
            "--runtime",
            "podman",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            found = containers_with(f"name={workload_name}")
            if found and found[0]["State"] == "exited":
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        assert found[0]["ExitCode"] == 2
        time.sleep(1.0)  # one more poll of `podman ps`: the state is reported
        cli.send_signal(signal.SIGTERM)
        _, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 0, err
    assert "Failed(ExecFailed): 'Exit code: '2''" in err
    assert containers_with(f"name={workload_name}") == [], "the CLI leaves no container behind"
