"""Templated manifests render as Ankaios' handlebars does (Ankaios v1.0.1 stests
``manifests/apply_manifests.robot`` "Ankaios manifest with templated fields" and
``workloads/workload_configs_podman.robot``).

``greeting_person`` uses the built-in helper ``eq`` in a sub-expression; the instance id
is the SHA-256 of the rendered runtimeConfig, so it shows whether the rendering matched.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import yaml
from ankaios_sdk import Ankaios
from emulator.ci_client import MakeEmulator
from emulator.stests.stest_data import manifest, manifest_text

from ankaios_emulator import Emulator

ALPINE = "ghcr.io/eclipse-ankaios/tests/alpine:latest"
NGINX = "ghcr.io/eclipse-ankaios/tests/nginx:alpine-slim"
IMAGES = {
    # commandArgs are the command, as in the alpine container
    ALPINE: ["env"],
    NGINX: [sys.executable, "-c", "import time; time.sleep(60)"],
}


def expected_greeting_id() -> str:
    """The id of greeting_person rendered by hand: only Chris Smith is 40."""
    template = yaml.safe_load(manifest_text("manifest_with_configs"))["workloads"][
        "greeting_person"
    ]["runtimeConfig"]
    rendered = re.sub(r"\{\{#each person\}\}.*\{\{/each\}\}", "", template)
    rendered = rendered.replace("'' ]", "'Hello Chris Smith(age: 40)\\n' ]")
    assert "Hello Chris Smith" in rendered
    return hashlib.sha256(rendered.strip().encode()).hexdigest()


def instance_ids(emu: Emulator, workload: str) -> list[str]:
    return [name.split(".")[1] for name in emu.instance_names(workload)]


def test_eq_in_a_sub_expression_renders_the_greeting(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = make_emulator(
        runtime="process",
        run_dir=tmp_path / "run",
        control_interface=tmp_path / "ci",
        image_map=IMAGES,
    )
    with Ankaios() as ank:
        result = ank.apply_manifest(manifest("manifest_with_configs"))
    added = {w.workload_name: (w.workload_id, w.agent_name) for w in result.added_workloads}
    assert added["greeting_person"] == (expected_greeting_id(), "agent_A")
    # nginx's agent is rendered from a config too
    assert added["nginx"][1] == "agent_A"
    instance = f"greeting_person.{expected_greeting_id()}.agent_A"
    emu.wait_for(lambda e: e.logs(instance) == ["Hello Chris Smith(age: 40)\\n"], 10)
    emu.wait_for(
        lambda e: (
            e.complete_state(["workloadStates.agent_A.greeting_person"])["workloadStates"][
                "agent_A"
            ]["greeting_person"][expected_greeting_id()]["state"]
            == "Succeeded"
        ),
        10,
    )


def test_updated_config_item_restarts_only_its_user(make_emulator: MakeEmulator) -> None:
    # ank set state desiredState.configs manifest_with_configs_updated_config_item.yaml:
    # the SDK's update_configs sends exactly that mask.
    emu = make_emulator(state=manifest_text("manifest_with_configs"))
    [greeting_id] = instance_ids(emu, "greeting_person")
    assert greeting_id == expected_greeting_id()
    [old_nginx] = instance_ids(emu, "nginx")
    updated = yaml.safe_load(manifest_text("manifest_with_configs_updated_config_item"))
    with Ankaios() as ank:
        # (SDK 1.0.1's update_configs returns nothing; the state shows the outcome.)
        ank.update_configs(updated["desiredState"]["configs"])
    [request] = [r for r in emu.requests if r.HasField("request")]
    assert list(request.request.updateStateRequest.updateMask) == ["desiredState.configs"]
    # port 8082 changes nginx's runtimeConfig: a new instance replaces the old one
    emu.wait_for(
        lambda e: len(instance_ids(e, "nginx")) == 1 and instance_ids(e, "nginx") != [old_nginx]
    )
    assert instance_ids(emu, "greeting_person") == [greeting_id]
    assert emu.start_count("greeting_person") == 1
