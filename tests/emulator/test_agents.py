"""Several agents, and agents that lose their connection to the server and come back.

Driven through the unmodified SDK; Ankaios 1.0.1's behaviour is in
docs/emulator-semantics.md section 9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from ankaios_sdk import Ankaios, ConnectionClosedException, LogEntry, LogsStopResponse, Manifest
from emulator.ci_client import MakeEmulator

from ankaios_emulator import Emulator, EmulatorError

APP = """\
apiVersion: v1
workloads:
  {name}:
    runtime: podman
    agent: {agent}
    runtimeConfig: "image: {image}"
"""


def app(name: str = "nginx", agent: str = "agent_B", image: str = "nginx") -> Manifest:
    return Manifest.from_string(APP.format(name=name, agent=agent, image=image))


def states(emu: Emulator, agent: str, name: str) -> dict[str, tuple[str, str]]:
    per_agent = emu.complete_state()["workloadStates"].get(agent, {})
    return {iid: (s["state"], s["subState"]) for iid, s in per_agent.get(name, {}).items()}


def only_state(emu: Emulator, agent: str, name: str) -> tuple[str, str] | None:
    found = list(states(emu, agent, name).values())
    return found[0] if len(found) == 1 else None


@pytest.fixture
def two_agents(make_emulator: MakeEmulator) -> Emulator:
    return make_emulator(agents={"agent_B": {"zone": "b"}})


def test_workloads_run_on_their_agent_and_agents_are_listed(two_agents: Emulator) -> None:
    with Ankaios() as ank:
        ank.apply_manifest(app(agent="agent_B"))
        two_agents.wait_for(lambda e: only_state(e, "agent_B", "nginx") == ("Running", "Ok"))
        agents = {name: a.to_dict() for name, a in ank.get_agents().items()}
    assert sorted(agents) == ["agent_A", "agent_B"]
    assert agents["agent_B"]["tags"] == {"zone": "b"}
    assert agents["agent_A"]["status"]["free_memory"] > 0


def test_disconnect_and_reconnect(two_agents: Emulator) -> None:
    emu = two_agents
    with Ankaios() as ank:
        ank.apply_manifest(app(agent="agent_B"))
        ank.apply_manifest(app(name="gone", agent="agent_B", image="gone"))
        emu.wait_for(lambda e: only_state(e, "agent_B", "gone") == ("Running", "Ok"))
        [nginx_id] = states(emu, "agent_B", "nginx")
        events = ank.register_event(["agents", "workloadStates.agent_B.nginx"])
        events.get(timeout=5)  # the current state

        emu.disconnect_agent("agent_B")
        event = events.get(timeout=5)
        assert "agents.agent_B" in event.removed_fields
        assert f"workloadStates.agent_B.nginx.{nginx_id}.state" in event.updated_fields
        assert sorted(ank.get_agents()) == ["agent_A"]
        assert only_state(emu, "agent_B", "nginx") == ("AgentDisconnected", "AgentDisconnected")

        # Changes meanwhile reach the agent with the ServerHello.
        ank.apply_manifest(app(name="late", agent="agent_B", image="late"))
        ank.delete_manifest(app(name="gone", agent="agent_B", image="gone"))
        assert only_state(emu, "agent_B", "late") == ("Pending", "Initial")
        assert only_state(emu, "agent_B", "gone") == ("AgentDisconnected", "AgentDisconnected")

        emu.reconnect_agent("agent_B")
        event = events.get(timeout=5)
        assert "agents.agent_B" in event.added_fields
        emu.wait_for(
            lambda e: (
                only_state(e, "agent_B", "nginx") == ("Running", "Ok")
                and only_state(e, "agent_B", "late") == ("Running", "Ok")
                and not states(e, "agent_B", "gone")
            )
        )
        # Resumed: the same instance.
        assert list(states(emu, "agent_B", "nginx")) == [nginx_id]
        assert ank.get_agents()["agent_B"].tags == {"zone": "b"}


def test_requests_of_a_disconnected_agents_workload_wait(make_emulator: MakeEmulator) -> None:
    # The served workload runs on agent_A, which loses its connection.
    emu = make_emulator()
    with Ankaios() as ank:
        emu.disconnect_agent("agent_A")
        outcome: list[BaseException] = []

        def apply() -> None:
            try:
                ank.apply_manifest(app("x", "agent_A"), timeout=3)
            except BaseException as exc:
                outcome.append(exc)

        asking = threading.Thread(target=apply)
        asking.start()
        emu.wait_for(lambda e: any(m.WhichOneof("ToAnkaiosEnum") == "request" for m in e.requests))
        assert "x" not in emu.complete_state()["desiredState"]["workloads"]
        emu.reconnect_agent("agent_A")
        # Carried out once the agent is back ...
        emu.wait_for(lambda e: "x" in e.complete_state()["desiredState"]["workloads"])
        asking.join(10)
        # ... but the answer waits in the workload's new control-interface instance for a
        # Hello, which a connected SDK does not send: it times out, then is closed.
        assert [type(exc) for exc in outcome] == [TimeoutError]
        with pytest.raises(ConnectionClosedException, match="Initial Hello missing!"):
            ank.get_state(["desiredState.apiVersion"])


def test_a_process_keeps_running_while_its_agent_is_away(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import time\nwhile True:\n    time.sleep(0.1)\n")
    emu = make_emulator(
        runtime="process",
        agents=["agent_B"],
        image_map={"sleeper": [sys.executable, str(script)]},
        state=APP.format(name="sleeper", agent="agent_B", image="sleeper"),
        run_dir=tmp_path / "run",
        control_interface=None,
    )
    emu.wait_for(lambda e: only_state(e, "agent_B", "sleeper") == ("Running", "Ok"), 60)
    [pid] = emu.process_ids().values()
    emu.disconnect_agent("agent_B")
    emu.reconnect_agent("agent_B")
    emu.wait_for(lambda e: only_state(e, "agent_B", "sleeper") == ("Running", "Ok"))
    assert list(emu.process_ids().values()) == [pid]


def test_unknown_agent_is_an_error(two_agents: Emulator) -> None:
    with pytest.raises(EmulatorError, match="no emulated agent 'agent_Z'"):
        two_agents.disconnect_agent("agent_Z")


def test_cli_agents_and_the_connection_signal(tmp_path: Path, sdk_path: Any) -> None:
    ci = tmp_path / "ci"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ankaios_emulator",
            "--control-interface",
            str(ci),
            "--agent",
            "agent_A",
            "--agent",
            "agent_B:zone=b,role=edge",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        while process.stdout.readline().strip() != "ready":
            assert process.poll() is None
        sdk_path(ci)
        with Ankaios() as ank:
            agents = ank.get_agents()
            assert agents["agent_B"].tags == {"zone": "b", "role": "edge"}
            events = ank.register_event(["agents"])
            events.get(timeout=5)
            os.kill(process.pid, signal.SIGRTMIN + 1)
            assert "agents.agent_B" in events.get(timeout=10).removed_fields
            os.kill(process.pid, signal.SIGRTMIN + 1)
            assert "agents.agent_B" in events.get(timeout=10).added_fields
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_state_agents_are_emulated(make_emulator: MakeEmulator) -> None:
    state = APP.format(name="edge", agent="agent_C", image="edge")
    emu = make_emulator(state=state, state_agents=True)
    emu.wait_for(lambda e: only_state(e, "agent_C", "edge") == ("Running", "Ok"))
    assert emu.agents == ["agent_A", "agent_C"]
    assert sorted(emu.complete_state()["agents"]) == ["agent_A", "agent_C"]


def test_without_state_agents_other_agents_stay_unconnected(make_emulator: MakeEmulator) -> None:
    state = APP.format(name="edge", agent="agent_C", image="edge")
    emu = make_emulator(state=state)
    assert only_state(emu, "agent_C", "edge") == ("Pending", "Initial")
    assert sorted(emu.complete_state()["agents"]) == ["agent_A"]


def test_cli_rejects_a_malformed_agent_tag(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "ankaios_emulator", "--control-interface", str(tmp_path)]
    result = subprocess.run(
        [*command, "--agent", "agent_B:zone"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "agent tag 'zone' is not KEY=VALUE" in result.stderr


def test_log_streams_of_a_disconnected_agent_stop(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    script = tmp_path / "talker.py"
    script.write_text("import time\nprint('hello', flush=True)\nwhile True:\n    time.sleep(0.1)\n")
    access = {
        "allowRules": [
            {"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]},
            {"type": "LogRule", "workloadNames": ["*"]},
        ]
    }
    emu = make_emulator(
        runtime="process",
        agents=["agent_B"],
        access=access,
        image_map={"talker": [sys.executable, str(script)]},
    )
    with Ankaios() as ank:
        [instance] = ank.apply_manifest(app("talker", "agent_B", "talker")).added_workloads
        emu.wait_for(lambda e: "hello" in e.logs(str(instance)), 60)
        campaign = ank.request_logs([instance], follow=True)
        assert isinstance(campaign.queue.get(timeout=5), LogEntry)
        emu.disconnect_agent("agent_B")
        stop = campaign.queue.get(timeout=5)
        assert isinstance(stop, LogsStopResponse)
        assert stop.workload_instance_name.workload_name == "talker"
