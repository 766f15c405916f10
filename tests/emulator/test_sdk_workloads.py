"""The real SDK 1.0.1 applies, reads and deletes state through the emulator."""

from __future__ import annotations

import pytest
from ankaios_sdk import Ankaios, AnkaiosResponseError, Manifest
from emulator.ci_client import MakeEmulator
from emulator.state_log import REMOVED, StateLog

from ankaios_emulator import Emulator

NGINX = """\
apiVersion: v1
workloads:
  nginx:
    runtime: podman
    agent: {agent}
    restartPolicy: NEVER
    runtimeConfig: |
      image: docker.io/nginx:latest
"""

TEMPLATED = """\
apiVersion: v1
workloads:
  sender:
    runtime: podman
    agent: agent_A
    configs:
      c: sender-config
    runtimeConfig: |
      image: ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0
      commandOptions:
        {{{{#each c.env}}}}
        - "-e"
        - "{{{{key}}}}={{{{value}}}}"
        {{{{/each}}}}
        - "--net=host"
configs:
  sender-config:
    env:
      - key: INTERVAL
        value: "{interval}"
"""


def states(emu: Emulator, workload: str) -> dict[str, tuple[str, str]]:
    """instance id -> (state, subState) of every instance of ``workload``."""
    tree = emu.complete_state()
    return {
        iid: (s["state"], s["subState"])
        for per_agent in tree.get("workloadStates", {}).values()
        for iid, s in per_agent.get(workload, {}).items()
    }


def test_apply_reports_instance_and_workload_reaches_running(emu: Emulator) -> None:
    with Ankaios() as ank:
        result = ank.apply_manifest(Manifest.from_string(NGINX.format(agent="agent_A")))
        [added] = result.added_workloads
        assert result.deleted_workloads == []
        assert (added.workload_name, added.agent_name) == ("nginx", "agent_A")
        assert len(added.workload_id) == 64
        emu.wait_for(lambda e: states(e, "nginx") == {added.workload_id: ("Running", "Ok")})
        state = ank.get_execution_state_for_instance_name(added)
        assert (state.state.name, state.substate.name) == ("RUNNING", "RUNNING_OK")
        workload = ank.get_workload("nginx")[0]
        assert workload.to_dict()["runtime"] == "podman"


def test_lifecycle_passes_through_pending_states(make_emulator: object) -> None:
    emu = make_emulator(step_delay=0.3)  # type: ignore[operator]
    seen: list[tuple[str, str]] = []

    def record(e: Emulator) -> bool:
        current = list(states(e, "nginx").values())
        if current and (not seen or seen[-1] != current[0]):
            seen.append(current[0])
        return seen[-1:] == [("Running", "Ok")]

    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(NGINX.format(agent="agent_A")))
        emu.wait_for(record)
    assert seen == [("Pending", "Initial"), ("Pending", "Starting"), ("Running", "Ok")]
    tree = emu.complete_state(["workloadStates"])
    [entry] = tree["workloadStates"]["agent_A"]["nginx"].values()
    assert entry == {"state": "Running", "subState": "Ok", "additionalInfo": ""}


def test_delete_stops_then_removes_the_instance(emu: Emulator) -> None:
    manifest = Manifest.from_string(NGINX.format(agent="agent_A"))
    with Ankaios() as ank:
        added = ank.apply_manifest(manifest).added_workloads[0]
        emu.wait_for(lambda e: states(e, "nginx") == {added.workload_id: ("Running", "Ok")})
        result = ank.delete_manifest(manifest)
        assert [w.workload_id for w in result.deleted_workloads] == [added.workload_id]
        assert result.added_workloads == []
        emu.wait_for(lambda e: "agent_A" not in e.complete_state()["workloadStates"])
        assert "nginx" not in emu.complete_state()["desiredState"]["workloads"]


def test_reapply_and_double_delete_change_nothing(emu: Emulator) -> None:
    manifest = Manifest.from_string(NGINX.format(agent="agent_A"))
    with Ankaios() as ank:
        ank.apply_manifest(manifest)
        again = ank.apply_manifest(manifest)
        assert (again.added_workloads, again.deleted_workloads) == ([], [])
        first = ank.delete_manifest(manifest)
        assert len(first.deleted_workloads) == 1
        second = ank.delete_manifest(manifest)
        assert (second.added_workloads, second.deleted_workloads) == ([], [])


def test_config_change_restarts_with_new_instance_id(emu: Emulator) -> None:
    with Ankaios() as ank:
        first = ank.apply_manifest(Manifest.from_string(TEMPLATED.format(interval="1")))
        old_id = first.added_workloads[0].workload_id
        emu.wait_for(lambda e: states(e, "sender") == {old_id: ("Running", "Ok")})

        changed = ank.apply_manifest(Manifest.from_string(TEMPLATED.format(interval="10")))
        [deleted] = changed.deleted_workloads
        [added] = changed.added_workloads
        assert deleted.workload_id == old_id
        assert added.workload_name == "sender"
        assert added.workload_id != old_id
        emu.wait_for(lambda e: states(e, "sender") == {added.workload_id: ("Running", "Ok")})
        config = emu.complete_state(["desiredState.workloads.sender.runtimeConfig"])
        rendered = config["desiredState"]["workloads"]["sender"]["runtimeConfig"]
        assert "{{#each c.env}}" in rendered  # the desired state keeps the template


def test_workload_without_agent_is_not_scheduled(make_emulator: object) -> None:
    emu = make_emulator(state=NGINX.format(agent='""'))  # type: ignore[operator]
    emu.wait_for(lambda e: bool(states(e, "nginx")))
    with Ankaios() as ank:
        tree = ank.get_state(["workloadStates"]).to_dict()["workload_states"]
    [entry] = tree[""]["nginx"].values()
    assert (entry["state"], entry["substate"]) == ("NOT_SCHEDULED", "NOT_SCHEDULED")


def test_workload_of_a_disconnected_agent_stays_pending_initial(make_emulator: object) -> None:
    emu = make_emulator(step_delay=0.01)  # type: ignore[operator]
    manifest = Manifest.from_string(NGINX.format(agent="agent_B"))
    with Ankaios() as ank:
        added = ank.apply_manifest(manifest).added_workloads[0]
        # Long enough for a connected agent to have started it several times over.
        with pytest.raises(TimeoutError):
            emu.wait_for(
                lambda e: states(e, "nginx").get(added.workload_id) != ("Pending", "Initial"), 0.3
            )
        assert list(ank.get_agents()) == ["agent_A"]
        ank.delete_manifest(manifest)
        # Never started on any agent: the server forgets it at once.
        assert states(emu, "nginx") == {}


def test_dependency_waits_until_met(emu: Emulator) -> None:
    dependent = """\
apiVersion: v1
workloads:
  app:
    runtime: podman
    agent: agent_A
    dependencies:
      db: ADD_COND_RUNNING
    runtimeConfig: |
      image: app
"""
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(dependent))
        emu.wait_for(lambda e: list(states(e, "app").values()) == [("Pending", "WaitingToStart")])
        ank.apply_manifest(
            Manifest.from_string(NGINX.format(agent="agent_A").replace("nginx", "db"))
        )
        emu.wait_for(lambda e: list(states(e, "app").values()) == [("Running", "Ok")])


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            NGINX.format(agent="agent_A").replace("nginx:", "bad!name:"),
            "Received error: Update rejected: 'Resulting State is invalid, reason: ",
        ),
        (
            # The SDK turns the name into a mask; a dot makes it a path into nothing.
            NGINX.format(agent="agent_A").replace("nginx:", "bad.name:"),
            "Received error: Update rejected: 'Could not find field "
            "desiredState.workloads.bad.name'",
        ),
        (
            TEMPLATED.format(interval="1").split("configs:\n  sender-config")[0],
            "Received error: Update rejected: 'Resulting State is invalid, reason: "
            "'Workload references config key 'sender-config' that does not exist''",
        ),
    ],
)
def test_rejected_updates_raise_with_the_server_message(
    emu: Emulator, manifest: str, message: str
) -> None:
    with Ankaios() as ank, pytest.raises(AnkaiosResponseError) as error:
        ank.apply_manifest(Manifest.from_string(manifest))
    assert str(error.value).startswith(message)
    assert emu.complete_state()["desiredState"]["workloads"] == {}


def test_cycle_is_rejected(emu: Emulator) -> None:
    cyclic = """\
apiVersion: v1
workloads:
  a:
    runtime: podman
    agent: agent_A
    dependencies: {b: ADD_COND_RUNNING}
    runtimeConfig: "image: a"
  b:
    runtime: podman
    agent: agent_A
    dependencies: {a: ADD_COND_RUNNING}
    runtimeConfig: "image: b"
"""
    with Ankaios() as ank, pytest.raises(AnkaiosResponseError) as error:
        ank.apply_manifest(Manifest.from_string(cyclic))
    assert "is part of a cycle." in str(error.value)
    assert str(error.value).startswith("Received error: Update rejected: 'workload dependency '")


UNKNOWN_RUNTIME = """\
apiVersion: v1
workloads:
  odd:
    runtime: {runtime}
    agent: agent_A
    restartPolicy: ALWAYS
    runtimeConfig: |
      image: odd:1
"""


@pytest.mark.parametrize(
    ("runtime", "emulator_runtime"),
    [
        ("nosuchruntime", "simulate"),
        ("Podman", "simulate"),  # names are case-sensitive
        ("docker", "simulate"),
        ("nosuchruntime", "process"),
        ("nosuchruntime", "podman"),
    ],
)
def test_unknown_runtime_fails_to_start_without_retry(
    make_emulator: MakeEmulator, emulator_runtime: str, runtime: str
) -> None:
    # Not even podman is asked: the agent has no connector for the name.
    emu = make_emulator(runtime=emulator_runtime, step_delay=0.01)
    manifest = Manifest.from_string(UNKNOWN_RUNTIME.format(runtime=runtime))
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        [added] = ank.apply_manifest(manifest).added_workloads
        log.wait_for(lambda s: s.last("odd", added.workload_id) == "PENDING_STARTING_FAILED")
        assert log.of("odd") == [
            ("PENDING_INITIAL", ""),
            ("PENDING_STARTING", "Triggered at runtime."),
            ("PENDING_STARTING_FAILED", "Unsupported Runtime"),
        ]
        # A failed start is no exit: restartPolicy ALWAYS does not retry it.
        with pytest.raises(TimeoutError):
            log.wait_for(lambda s: len(s.of("odd")) > 3, timeout=0.3)
        assert emu.start_count("odd") == 1
        ank.delete_manifest(manifest)
        log.wait_for(lambda s: s.last("odd", added.workload_id) == REMOVED)
        assert log.of("odd")[3:] == [("STOPPING_REQUESTED_AT_RUNTIME", ""), (REMOVED, "")]


def test_a_runaway_template_is_refused_and_the_emulator_keeps_serving(emu: Emulator) -> None:
    # 80**4 renderings of one workload's runtimeConfig: the renderer's budget refuses it
    # (ankaios_model.render_budget) instead of holding the emulator's lock for minutes.
    opening = "".join("{{#each " + "../" * level + "l}}" for level in range(4))
    values = ", ".join(f"'{i}'" for i in range(80))
    bomb = (
        "apiVersion: v0.1\nworkloads:\n  bomb:\n    runtime: podman\n    agent: agent_A\n"
        f"    configs:\n      l: list\n    runtimeConfig: 'image: x{opening}{{{{this}}}}"
        f"{'{{/each}}' * 4}'\nconfigs:\n  list: [{values}]\n"
    )
    with Ankaios() as ank:
        with pytest.raises(AnkaiosResponseError, match="takes more than"):
            ank.apply_manifest(Manifest.from_string(bomb))
        result = ank.apply_manifest(Manifest.from_string(NGINX.format(agent="agent_A")))
        assert [w.workload_name for w in result.added_workloads] == ["nginx"]
