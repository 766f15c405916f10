"""Reading the emulator's inputs: startup manifest, access rules, image map."""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ankaios_model.state import DesiredState, validate_access_rules

DEFAULT_ACCESS: dict[str, Any] = {
    "allowRules": [{"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]}]
}
_OPERATIONS = ("Nothing", "Read", "Write", "ReadWrite")
_OWN_INTERPRETER = ("python", "python3")


class EmulatorError(Exception):
    """Bad emulator input (unreadable or invalid manifest, access rules, image map)."""


def _read_yaml(source: str | Path, what: str) -> Any:
    try:
        return yaml.safe_load(Path(source).read_text())
    except OSError as exc:
        raise EmulatorError(f"cannot read {what} {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise EmulatorError(f"{what} {source} is not valid YAML: {exc}") from exc


def load_image_map(source: Mapping[str, Any] | str | Path | None) -> dict[str, list[str]]:
    """Image name -> command list (a string is split on whitespace)."""
    if source is None:
        return {}
    data = source if isinstance(source, Mapping) else _read_yaml(source, "image map")
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise EmulatorError("image map must map image names to command lists")
    result: dict[str, list[str]] = {}
    for image, entry in data.items():
        command = entry.split() if isinstance(entry, str) else entry
        if not isinstance(command, list) or not command:
            raise EmulatorError(f"image map entry {image!r} must be a non-empty command list")
        parts = [str(part) for part in command]
        if parts[0] in _OWN_INTERPRETER:
            # The emulator's interpreter has this project's packages, whatever PATH says
            # (a shell without the venv activated would find a python3 without paho).
            parts[0] = sys.executable
        result[str(image)] = parts
    return result


def load_access(source: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    """A ``controlInterfaceAccess`` section (file or tree), checked like Ankaios checks it.

    A file may also hold the section under a top-level ``controlInterfaceAccess`` key;
    ``filterMask`` (v0.1 spelling) is accepted for ``filterMasks``.
    """
    data = source if isinstance(source, Mapping) else _read_yaml(source, "access file")
    if isinstance(data, Mapping) and "controlInterfaceAccess" in data:
        data = data["controlInterfaceAccess"]
    if not isinstance(data, Mapping):
        raise EmulatorError("access rules must be a mapping with allowRules/denyRules")
    access: dict[str, Any] = {}
    for key in ("allowRules", "denyRules"):
        rules = data.get(key) or []
        if not isinstance(rules, list):
            raise EmulatorError(f"{key} must be a list")
        normalised = []
        for given in rules:
            if not isinstance(given, Mapping):
                raise EmulatorError(f"{key}: every rule must be a mapping")
            rule = copy.deepcopy(dict(given))
            kind = rule.get("type")
            if kind == "StateRule":
                if rule.get("operation") not in _OPERATIONS:
                    raise EmulatorError(f"{key}: operation must be one of {', '.join(_OPERATIONS)}")
                masks = rule.pop("filterMask", None)
                masks = rule.get("filterMasks", masks)
                if not isinstance(masks, list):
                    raise EmulatorError(f"{key}: StateRule needs a filterMasks list")
                rule["filterMasks"] = [str(m) for m in masks]
            elif kind == "LogRule":
                names = rule.get("workloadNames")
                if not isinstance(names, list):
                    raise EmulatorError(f"{key}: LogRule needs a workloadNames list")
                rule["workloadNames"] = [str(n) for n in names]
            else:
                raise EmulatorError(f"{key}: rule type must be StateRule or LogRule")
            normalised.append(rule)
        access[key] = normalised
    error = validate_access_rules(access)
    if error is not None:
        raise EmulatorError(error)
    return access


def load_state(state: str | Path | Mapping[str, Any] | None) -> DesiredState:
    """Manifest text, a manifest path or a tree -> the server's startup desired state."""
    if state is None:
        return DesiredState()
    source: str | Mapping[str, Any]
    if isinstance(state, Path) or (
        isinstance(state, str) and "\n" not in state and ":" not in state
    ):
        try:
            source = Path(state).read_text()
        except OSError as exc:
            raise EmulatorError(f"cannot read manifest {state}: {exc.strerror}") from exc
    else:
        source = state
    try:
        return DesiredState.from_manifest(source)
    except Exception as exc:
        # One line: the state engine's message already says what is wrong.
        raise EmulatorError(f"invalid manifest: {exc}") from exc
