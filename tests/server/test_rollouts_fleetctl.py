"""``fleetctl rollout`` with a server context: the rollout file goes to fleet-server, which
carries it out; status, pause, resume, approve and abort act on it there; an aborted one is
final (scripted cars: the car's behaviour does not matter here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import Broker
from testkit.rollouts import MANIFEST, prefix, wait_rollout
from testkit.scripted import ScriptedCar
from testkit.server import Api, wait_until

from fleetctl.cli import main as fleetctl

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(
    tmp_path: Path, broker: Broker, api: Api, capsys: pytest.CaptureFixture[str]
) -> Iterator[Cli]:
    """fleetctl in this process with a context naming the test's server (operator token)."""
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path), **broker.env()}
    token = tmp_path / "ops.token"
    token.write_text(api.tokens["operator"] + "\n")

    def run(*argv: str) -> tuple[int, str, str]:
        code = fleetctl(list(argv), environ)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    server = ("--server", api.server.url, "--token-file", str(token))
    assert run("config", "set-context", "fleet", *server)[0] == 0
    assert run("config", "use-context", "fleet")[0] == 0
    yield run


@pytest.fixture
def scripted(broker: Broker) -> Iterator[Callable[..., ScriptedCar]]:
    made: list[ScriptedCar] = []

    def make(vin: str, **options: Any) -> ScriptedCar:
        made.append(ScriptedCar(broker, vin, **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_fleetctl_rollout_through_the_service(
    cli: Cli, api: Api, scripted: Callable[..., ScriptedCar], tmp_path: Path
) -> None:
    p = prefix()
    fleet = [scripted(f"{p}{i}", labels={"fleet": p}) for i in (1, 2, 3)]
    for each in fleet:
        wait_until(lambda each=each: api.get(f"/api/v1/cars/{each.vin}").status_code == 200)
    (tmp_path / "sender.yaml").write_text(MANIFEST)
    (tmp_path / "first.txt").write_text(f"{fleet[0].vin}\n")
    spec = tmp_path / "rollout.yaml"
    spec.write_text(
        "manifest: sender.yaml\n"
        f"cars: {{selector: 'fleet={p}'}}\n"
        "canary: {files: [first.txt]}\n"
        "pauseAfter: [canary]\n"
        "onFailure: rollback\n"
    )
    code, out, err = cli("rollout", "start", str(spec), "-o", "json")
    assert code == 0, err
    started = json.loads(out)
    rollout_id = started["id"]
    assert f"rollout {rollout_id} started; fleet-server carries it out" in err
    assert sorted(c["vin"] for c in started["cars"]) == [c.vin for c in fleet]

    wait_rollout(api, rollout_id, "waiting")
    code, out, _ = cli("rollout", "status", rollout_id)
    assert code == 0  # not done yet, not failed either
    assert f"rollout {rollout_id}: waiting (approval of canary needed" in out
    assert f"{fleet[0].vin}  canary  succeeded" in out
    assert cli("rollout", "pause", rollout_id)[0] == 0
    code, out, _ = cli("rollout", "approve", rollout_id)
    assert code == 0 and f"rollout {rollout_id}: paused" in out
    assert fleet[1].received == []
    assert cli("rollout", "resume", rollout_id)[0] == 0
    wait_rollout(api, rollout_id, "done")
    code, out, _ = cli("rollout", "list")
    assert code == 0 and rollout_id in out and "done" in out
    assert cli("rollout", "status", rollout_id)[0] == 0

    code, _, err = cli("rollout", "abort", rollout_id)
    assert code == 1 and "CONFLICT" in err and "final" in err
    code, _, err = cli("rollout", "retry-failed", rollout_id)
    assert code == 2 and "remaining" in err
    code, _, err = cli("rollout", "status", "ro-000000000000")
    assert code == 1 and "NOT_FOUND" in err
