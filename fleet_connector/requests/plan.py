"""What applying (or deleting) a manifest would do in this car now, without doing it.

The current desired state is read from Ankaios and replayed into a model of the Ankaios
1.0.1 server (:class:`ankaios_model.state.DesiredState`, the one the emulator serves:
masked merge, validation, config rendering and the comparison that decides which
workloads restart). The manifest's update is then applied to that model, never to
Ankaios, and the two states are compared:

* a workload is ``create``d, ``delete``d, ``replace``d (Ankaios stops the old instance and
  starts a new one; ``fields`` says what differs once rendered, ``configs`` which changed
  configs re-render it) or ``unchanged``. A workload the manifest does not name appears
  when a config it uses changes under it;
* a config is ``create``d, ``replace``d, ``delete``d or ``unchanged``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ankaios_sdk._protos import _ank_base

from ankaios_model.rendering import RenderedWorkload
from ankaios_model.state import DesiredState, UpdateError
from fleet_connector.ankaios.manifest import CONFIGS_PREFIX, WORKLOADS_PREFIX, Manifest

CREATE = "create"
REPLACE = "replace"
UNCHANGED = "unchanged"
DELETE = "delete"

# Rendered fields in the manifest's spelling; name and the alias map are not compared.
_FIELDS = {
    "agent": "agent",
    "runtime": "runtime",
    "runtime_config": "runtimeConfig",
    "restart_policy": "restartPolicy",
    "dependencies": "dependencies",
    "tags": "tags",
    "control_interface_access": "controlInterfaceAccess",
    "files": "files",
}


class CurrentStateError(Exception):
    """The state read from Ankaios could not be modelled (it should not happen)."""


def server_model(current: _ank_base.CompleteState) -> DesiredState:
    """The Ankaios server's desired state, rebuilt from a state read from Ankaios."""
    desired = current.desiredState
    masks = [f"{WORKLOADS_PREFIX}.{name}" for name in sorted(desired.workloads.workloads)] + [
        f"{CONFIGS_PREFIX}.{name}" for name in sorted(desired.configs.configs)
    ]
    model = DesiredState()
    if masks:
        try:
            model.update(current, masks)
        except UpdateError as e:
            raise CurrentStateError(str(e)) from None
    return model


def plan(current: _ank_base.CompleteState, manifest: Manifest, *, deleting: bool) -> dict[str, Any]:
    """Per workload and config what the update would do, and whether Ankaios would take it."""
    model = server_model(current)
    before_spec, before = model.spec(), model.rendered()
    update = Manifest.delete_state() if deleting else manifest.apply_state()
    result: dict[str, Any] = {"operation": "delete" if deleting else "apply"}
    try:
        model.update(update, manifest.masks)
    except UpdateError as e:
        # Ankaios would change nothing, so every item the manifest names stays unchanged.
        result["ankaios"] = {"verdict": "rejected", "message": str(e)}
    else:
        result["ankaios"] = {"verdict": "accepted"}
    after_spec, after = model.spec(), model.rendered()
    changed_configs = {
        name
        for name in {*before_spec["configs"], *after_spec["configs"]}
        if before_spec["configs"].get(name) != after_spec["configs"].get(name)
    }
    names = set(manifest.workloads) | {
        name for name in {*before, *after} if before.get(name) != after.get(name)
    }
    result["workloads"] = {
        name: _workload(before.get(name), after.get(name), changed_configs)
        for name in sorted(names)
    }
    result["configs"] = {
        name: {"action": _action(before_spec["configs"].get(name), after_spec["configs"].get(name))}
        for name in sorted(set(manifest.configs) | changed_configs)
    }
    return result


def _action(before: Any, after: Any) -> str:
    if before is None:
        return UNCHANGED if after is None else CREATE
    if after is None:
        return DELETE
    return UNCHANGED if before == after else REPLACE


def _workload(
    before: RenderedWorkload | None, after: RenderedWorkload | None, changed_configs: set[str]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": _action(before, after)}
    shown = after or before
    if shown is not None:
        entry["agent"] = shown.agent
    if entry["action"] == REPLACE and before is not None and after is not None:
        entry["fields"] = _differences(before, after)
        causes = sorted(set(after.configs.values()) & changed_configs)
        if causes:
            entry["configs"] = causes
    return entry


def _differences(before: RenderedWorkload, after: RenderedWorkload) -> dict[str, Any]:
    old: Mapping[str, Any] = dataclasses.asdict(before)
    new: Mapping[str, Any] = dataclasses.asdict(after)
    return {
        spelling: {"from": old[attr], "to": new[attr]}
        for attr, spelling in _FIELDS.items()
        if old[attr] != new[attr]
    }
