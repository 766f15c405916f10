"""The policy gate refuses what the car's owner does not allow, before Ankaios sees it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from testkit import MANIFESTS, Requester
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Connector
from fleet_connector.config import load
from fleet_connector.options import ConfigError
from fleet_connector.policy import Policy

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
    assert "no literal image" in denied(requester.apply(templated), "allowedImagePrefixes")


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
