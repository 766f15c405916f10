"""The policy gate refuses what the car's owner does not allow, before Ankaios sees it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from testkit import MANIFESTS, Requester
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from ankaios_model.rendering import render_workload
from fleet_connector import Connector
from fleet_connector.config import load
from fleet_connector.errors import RequestError
from fleet_connector.options import ConfigError
from fleet_connector.requests.policy import Policy

SENDER = (MANIFESTS / "vehicle-data-sender.yaml").read_text()
CONNECTOR_ITSELF = (MANIFESTS / "state.yaml").read_text()


def denied(reply: Any, rule: str) -> str:
    assert reply["error"]["code"] == "POLICY_DENIED", reply
    assert rule in reply["error"]["message"]
    message: str = reply["error"]["message"]
    return message


@pytest.fixture
def gated(
    emulator: Emulator, start_connector: Callable[..., Connector]
) -> Callable[[Policy], Connector]:
    def start(policy: Policy) -> Connector:
        return start_connector(emulator.control_interface, policy=policy)

    return start


def test_the_connector_cannot_delete_or_replace_itself(
    gated: Callable[[Policy], Connector], emulator: Emulator, requester: Requester
) -> None:
    gated(Policy(protected_workloads=frozenset({"fleetconnector"})))
    message = denied(requester.delete(CONNECTOR_ITSELF), "protectedWorkloads")
    assert "'fleetconnector' may not be deleted" in message
    message = denied(requester.apply(CONNECTOR_ITSELF), "protectedWorkloads")
    assert "may not be replaced" in message
    assert update_requests(emulator) == 0
    assert requester.apply(SENDER)["added_workloads"]


def test_protected_by_default_from_the_environment() -> None:
    config = load([], {"VIN": "1"})
    assert config.policy.protected_workloads == {"fleetconnector"}
    config = load([], {"VIN": "1", "ANKAIOS_WORKLOAD_NAME": "connector-7"})
    assert config.policy.protected_workloads == {"connector-7"}


def test_allowed_agents(
    gated: Callable[[Policy], Connector], emulator: Emulator, requester: Requester
) -> None:
    gated(Policy(allowed_agents=frozenset({"agent_B"})))
    message = denied(requester.apply(SENDER), "allowedAgents")
    assert "agent_A" in message
    assert update_requests(emulator) == 0


def test_allowed_image_prefixes(gated: Callable[[Policy], Connector], requester: Requester) -> None:
    gated(Policy(allowed_image_prefixes=("registry.acme.example/",)))
    message = denied(requester.apply(SENDER), "allowedImagePrefixes")
    assert "ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0" in message
    allowed = SENDER.replace("ghcr.io/eclipse-ankaios/", "registry.acme.example/")
    assert requester.apply(allowed)["added_workloads"]
    templated = SENDER.replace(
        "image: ghcr.io/eclipse-ankaios/vehicle-data-sender:0.1.0", "image: {{c.image}}"
    )
    # No config c: Ankaios could not render it, so what it would run cannot be told.
    assert "cannot tell" in denied(requester.apply(templated), "allowedImagePrefixes")


def test_allowed_field_masks(gated: Callable[[Policy], Connector], requester: Requester) -> None:
    gated(Policy(allowed_field_masks=("workloadStates",)))
    assert "workload_states" in requester.state(["workloadStates"])
    assert "workload_states" in requester.state(["workloadStates.agent_A"])
    denied(requester.state(["desiredState"]), "allowedFieldMasks")
    denied(requester.state([]), "allowedFieldMasks")


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "protectedWorkloads: [guard]\nmaxPayloadSize: 2048\nallowedAgents: [agent_A]\n"
        "allowedImagePrefixes: [ghcr.io/eclipse-ankaios/]\nallowedFieldMasks: ['*']\n"
    )
    policy = load([], {"VIN": "1", "POLICY_FILE": str(path)}).policy
    assert policy.protected_workloads == {"guard", "fleetconnector"}
    assert policy.max_payload == 2048
    assert policy.allowed_agents == {"agent_A"}
    # The flag wins over the file.
    assert (
        load(["--max-payload", "99"], {"VIN": "1", "POLICY_FILE": str(path)}).policy.max_payload
        == 99
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("allowedAgents: agent_A\n", "must be a list"),
        ("maxPayloadSize: -1\n", "maxPayloadSize"),
        ("protectedWorkload: [x]\n", "unknown keys"),
        ("[1, 2]\n", "must be a YAML mapping"),
        ("a: [\n", "cannot read policy file"),
    ],
)
def test_bad_policy_file_is_a_configuration_error(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load([], {"VIN": "1", "POLICY_FILE": str(path)})
    result = subprocess.run(
        [sys.executable, "-m", "fleet_connector", "--vin", "1", "--policy", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


# -- the policy judges what Ankaios will run, not the manifest's text (issue #16) --------

ALLOWED = "registry.acme.example/"
GOOD = "registry.acme.example/sender:1"
EVIL = "evil.example/miner:1"


def workload(runtime_config: str, *, configs: str = "", agent: str = "agent_A") -> str:
    """A v1 manifest with one podman workload ``w`` and optional configs."""
    body = "\n".join("      " + line for line in runtime_config.splitlines())
    text = (
        "apiVersion: v1\nworkloads:\n  w:\n    runtime: podman\n"
        f"    agent: {agent!r}\n    restartPolicy: NEVER\n"
        f"    runtimeConfig: |\n{body}\n"
    )
    if configs:
        text += "    configs:\n      c: cfg\nconfigs:\n  cfg:\n" + configs
    return text


def running(emulator: Emulator) -> set[str]:
    workloads = emulator.complete_state(["desiredState"])["desiredState"].get("workloads", {})
    return {name for name in workloads if name != "fleetconnector"}


@pytest.mark.parametrize(
    "runtime_config",
    [
        # A second image key: serde refuses it; the first-line gate took the first one.
        f"image: {GOOD}\nimage: {EVIL}",
        # An "image:" line inside a block scalar, before the real one.
        f"commandArgs:\n  - |\n    image: {GOOD}\nimage: {EVIL}",
        # A word in commandOptions is taken by podman as the image.
        f'image: {GOOD}\ncommandOptions: ["{EVIL}"]',
        # A boolean flag does not take the next word; podman runs that word.
        f'image: {GOOD}\ncommandOptions: ["--privileged", "{EVIL}"]',
        # A word in generalOptions becomes podman's sub-command.
        f'image: {GOOD}\ngeneralOptions: ["run", "{EVIL}"]',
        # Flow style with a quoted key.
        f'{{"image": "{EVIL}", commandArgs: ["image: {GOOD}"]}}',
        # --rootfs: the image argument is a directory.
        f'image: {GOOD}\ncommandOptions: ["--rootfs"]',
    ],
    ids=["duplicate", "block-scalar", "command-option", "boolean", "general", "flow", "rootfs"],
)
def test_shaped_manifests_cannot_get_a_forbidden_image_past_the_gate(
    gated: Callable[[Policy], Connector],
    emulator: Emulator,
    requester: Requester,
    runtime_config: str,
) -> None:
    gated(Policy(allowed_image_prefixes=(ALLOWED,)))
    denied(requester.apply(workload(runtime_config)), "allowedImagePrefixes")
    assert update_requests(emulator) == 0
    assert requester.apply(workload(f'image: {GOOD}\ncommandOptions: ["-e", "A=1"]'))[
        "added_workloads"
    ]


def test_templated_image_is_judged_rendered_with_the_configs_in_effect(
    gated: Callable[[Policy], Connector], emulator: Emulator, requester: Requester
) -> None:
    gated(Policy(allowed_image_prefixes=(ALLOWED,)))
    templated = 'image: "{{c.image}}"'
    message = denied(
        requester.apply(workload(templated, configs=f"    image: {EVIL}\n")), "allowedImagePrefixes"
    )
    assert EVIL in message
    assert requester.apply(workload(templated, configs=f"    image: {GOOD}\n"))["added_workloads"]
    # A config-only apply would re-render w into the forbidden image: refused.
    config_only = f"apiVersion: v1\nconfigs:\n  cfg:\n    image: {EVIL}\n"
    assert EVIL in denied(requester.apply(config_only), "allowedImagePrefixes")
    assert update_requests(emulator) == 1
    # One that keeps it within the allowed images goes through and restarts w.
    newer = f"apiVersion: v1\nconfigs:\n  cfg:\n    image: {ALLOWED}sender:2\n"
    assert [w["workload_name"] for w in requester.apply(newer)["added_workloads"]] == ["w"]


def test_templated_agent_is_judged_rendered(
    gated: Callable[[Policy], Connector], emulator: Emulator, requester: Requester
) -> None:
    gated(Policy(allowed_agents=frozenset({"agent_A"})))
    manifest = workload(f"image: {GOOD}", configs="    agent: agent_B\n", agent="{{c.agent}}")
    assert "agent_B" in denied(requester.apply(manifest), "allowedAgents")
    assert running(emulator) == set()


def test_every_container_of_a_kube_pod_is_judged(
    gated: Callable[[Policy], Connector], emulator: Emulator, requester: Requester
) -> None:
    gated(Policy(allowed_image_prefixes=(ALLOWED,)))

    def pod(second: str) -> str:
        kube = (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n"
            f"    - name: a\n      image: {GOOD}\n    - name: b\n      image: {second}\n"
        )
        manifest_lines = "\n".join("        " + line for line in kube.splitlines())
        return (
            "apiVersion: v1\nworkloads:\n  k:\n    runtime: podman-kube\n    agent: agent_A\n"
            f"    runtimeConfig: |\n      manifest: |\n{manifest_lines}\n"
        )

    assert EVIL in denied(requester.apply(pod(EVIL)), "allowedImagePrefixes")
    assert requester.apply(pod(f"{ALLOWED}helper:1"))["added_workloads"]


def test_refused_when_the_car_state_cannot_be_read(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    # Writing is allowed, reading the configs is not: what would run cannot be told.
    access = {
        "allowRules": [
            {"type": "StateRule", "operation": "Write", "filterMasks": ["desiredState"]},
            {"type": "StateRule", "operation": "Read", "filterMasks": ["workloadStates"]},
        ]
    }
    with Emulator(control_interface=tmp_path / "ci", access=access) as emu:
        start_connector(emu.control_interface, policy=Policy(allowed_image_prefixes=(ALLOWED,)))
        message = denied(requester.apply(workload(f"image: {GOOD}")), "allowedImagePrefixes")
        assert "reading desiredState.workloads and desiredState.configs" in message
        assert "ACCESS_DENIED" in message
        assert update_requests(emu) == 0


def test_the_least_privilege_startup_states_allow_the_reads_the_policy_needs(
    tmp_path: Path, start_connector: Callable[..., Connector], requester: Requester
) -> None:
    for path in (
        MANIFESTS / "state-least-privilege.yaml",
        MANIFESTS / "v1/state-least-privilege.yaml",
    ):
        startup = yaml.safe_load(path.read_text())
        access = startup["workloads"]["fleetconnector"]["controlInterfaceAccess"]
        with Emulator(control_interface=tmp_path / path.parent.name, access=access) as emu:
            connector = start_connector(
                emu.control_interface, policy=Policy(allowed_image_prefixes=(ALLOWED,))
            )
            assert requester.apply(workload(f"image: {GOOD}"))["added_workloads"]
            connector.stop()


_IMAGES = [GOOD, EVIL, f"{ALLOWED}x:2", "registry.acme.example", f" {GOOD}", f"{GOOD} "]
_WORDS = ["--net=host", "-e", "A=1", "--rm", "--privileged", "-it", "--name", "n", EVIL, GOOD]
_TAKES_VALUE = {"-e", "--name"}


def _quoted(value: str, style: str) -> str:
    if style == "single":
        return f"'{value}'"
    if style == "double":
        return json.dumps(value)
    if style == "folded":
        return f">-\n  {value}"
    return value


@st.composite
def _runtime_configs(draw: st.DrawFn) -> tuple[str, str]:
    """A runtimeConfig (maybe templated, maybe shaped to mislead) and the config's image."""
    lines = []
    templated = draw(st.booleans())
    for image in draw(st.lists(st.sampled_from(_IMAGES), max_size=2)):
        style = draw(st.sampled_from(["plain", "single", "double", "folded"]))
        lines.append("image: " + _quoted("{{c.image}}" if templated else image, style))
    options = draw(st.lists(st.sampled_from(_WORDS), max_size=4))
    if options:
        lines.append(f"commandOptions: {json.dumps(options)}")
    if draw(st.booleans()):
        decoy = f"commandArgs:\n  - |\n    image: {draw(st.sampled_from(_IMAGES))}"
        lines.insert(draw(st.integers(0, len(lines))), decoy)
    return "\n".join(lines) + "\n", draw(st.sampled_from(_IMAGES))


def _runs_allowed_image(rendered: str) -> bool:
    """The oracle: what podman would run, read from the rendered, parsed runtimeConfig."""
    root = yaml.compose(rendered)
    if not isinstance(root, yaml.MappingNode):
        return False
    keys = [key.value for key, _ in root.value]
    if len(keys) != len(set(keys)) or "image" not in keys:
        return False  # serde_yaml refuses duplicate fields; no image: nothing runs
    parsed = yaml.safe_load(rendered)
    words = parsed.get("commandOptions", [])
    i = 0
    while i < len(words):
        if not words[i].startswith("-"):
            return False  # podman takes it as the image
        if words[i] in _TAKES_VALUE and i + 1 == len(words):
            return False  # takes Ankaios's next option as its value; the gate refuses it
        i += 2 if words[i] in _TAKES_VALUE else 1
    image = parsed["image"]
    return isinstance(image, str) and image.startswith(ALLOWED)


@settings(max_examples=200, deadline=None)
@given(_runtime_configs())
def test_the_gate_decides_on_the_rendered_parsed_image(case: tuple[str, str]) -> None:
    runtime_config, config_image = case
    spec = {
        "agent": "agent_A",
        "runtime": "podman",
        "runtimeConfig": runtime_config,
        "restartPolicy": "NEVER",
        "dependencies": {},
        "tags": {},
        "controlInterfaceAccess": {},
        "files": [],
        "configs": {"c": "cfg"},
    }
    rendered = render_workload("w", spec, {"cfg": {"image": config_image}})
    try:
        Policy(allowed_image_prefixes=(ALLOWED,)).check_started([rendered])
    except RequestError as e:
        assert e.code == "POLICY_DENIED"
        allowed = False
    else:
        allowed = True
    assert allowed == _runs_allowed_image(rendered.runtime_config), rendered.runtime_config
