"""Manifests as far as the simulator needs them: names, definitions and config values.

No schema, no policy, no template engine: a manifest that is YAML, has an ``apiVersion``
and names workloads or configs is taken; definitions are kept in the shape the
connector's state reply shows (the Ankaios SDK's ``to_dict``). What is refused is refused
with the connector's code (``INVALID_REQUEST``) and, where the cases meet, its message.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from fleet_sim.protocol import INVALID_REQUEST, SimError

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")

Definition = dict[str, Any]
"""A workload as the connector's state reply shows it (SDK ``Workload.to_dict()``)."""


def _invalid(message: str) -> SimError:
    return SimError(INVALID_REQUEST, message)


@dataclass(frozen=True, slots=True)
class Manifest:
    workloads: dict[str, Definition]
    configs: dict[str, Any]

    @property
    def masks(self) -> list[str]:
        return [f"desiredState.workloads.{n}" for n in self.workloads] + [
            f"desiredState.configs.{n}" for n in self.configs
        ]


def parse(payload: bytes) -> Manifest:
    try:
        text = payload.decode()
    except UnicodeDecodeError as e:
        raise _invalid(f"the manifest is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise _invalid("the manifest is empty")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        raise _invalid(f"the manifest is not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise _invalid("the manifest is nested too deeply") from None
    if not isinstance(data, dict) or "apiVersion" not in data:
        raise _invalid("the manifest has no apiVersion (v0.1 or v1)")
    if data["apiVersion"] not in ("v0.1", "v1"):
        raise _invalid(f"apiVersion {data['apiVersion']!r} is not supported; use v1 or v0.1")
    workloads = data.get("workloads") or {}
    configs = data.get("configs") or {}
    if not isinstance(workloads, dict):
        raise _invalid("workloads must be a mapping")
    if not isinstance(configs, dict):
        raise _invalid("configs must be a mapping")
    if not workloads and not configs:
        raise _invalid("the manifest names neither workloads nor configs")
    defs: dict[str, Definition] = {}
    for name, spec in workloads.items():
        if not isinstance(spec, dict):
            raise _invalid(f"workloads.{name} must be a mapping")
        defs[str(name)] = _definition(str(name), spec)
    for name, value in configs.items():
        _check_config(f"configs.{name}", value)
    return Manifest(defs, {str(k): v for k, v in configs.items()})


def _check_config(path: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_config(f"{path}[{i}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_config(f"{path}.{key}", item)
        return
    raise _invalid(
        f"{path} must be a string, not {type(value).__name__} (Ankaios's config values are "
        'strings: write value: "1883", not value: 1883)'
    )


def _definition(name: str, spec: dict[str, Any]) -> Definition:
    tags = spec.get("tags") or {}
    if isinstance(tags, list):  # v0.1: [{key, value}]
        tags = {str(t.get("key")): str(t.get("value")) for t in tags if isinstance(t, dict)}
    access = spec.get("controlInterfaceAccess") or {}
    if not isinstance(access, dict):
        raise _invalid(f"workloads.{name}.controlInterfaceAccess must be a mapping")
    return {
        "agent": str(spec.get("agent") or ""),
        "runtime": str(spec.get("runtime") or ""),
        "runtimeConfig": str(spec.get("runtimeConfig") or "").rstrip("\n"),
        "restartPolicy": str(spec.get("restartPolicy") or "NEVER"),
        "dependencies": dict(spec.get("dependencies") or {}),
        "tags": dict(tags) if isinstance(tags, dict) else {},
        "controlInterfaceAccess": {
            "allowRules": list(access.get("allowRules") or []),
            "denyRules": list(access.get("denyRules") or []),
        },
        "configs": {str(k): str(v) for k, v in dict(spec.get("configs") or {}).items()},
        "files": list(spec.get("files") or []),
    }


def startup(name: str, agent: str) -> Definition:
    """A workload every simulated car starts with."""
    return _definition(
        name,
        {"agent": agent, "runtime": "podman", "runtimeConfig": f"image: sim/{name}:1"},
    )


def render(definition: Definition, configs: dict[str, Any]) -> Definition:
    """The definition with ``{{alias}}``/``{{alias.key}}`` filled from its configs, as far
    as plain substitution goes (Ankaios renders handlebars; enough to tell what changes)."""
    aliases = {alias: configs.get(ref) for alias, ref in definition["configs"].items()}
    if not aliases:
        return definition

    def value(match: re.Match[str]) -> str:
        path = match.group(1).split(".")
        found: Any = aliases.get(path[0])
        for key in path[1:]:
            found = found.get(key) if isinstance(found, dict) else None
        return found if isinstance(found, str) else match.group(0)

    rendered = dict(definition)
    rendered["agent"] = _TEMPLATE.sub(value, definition["agent"])
    rendered["runtimeConfig"] = _TEMPLATE.sub(value, definition["runtimeConfig"])
    return rendered


def instance_id(rendered: Definition) -> str:
    """Like Ankaios: a hash of what runs, so an unchanged workload keeps its instance."""
    text = json.dumps(rendered, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# -- Ankaios's protobuf JSON form (journal snapshots) -----------------------------------


def proto_workload(definition: Definition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "agent": definition["agent"],
        "restartPolicy": definition["restartPolicy"],
    }
    if definition["tags"]:
        out["tags"] = {"tags": definition["tags"]}
    out["runtime"] = definition["runtime"]
    out["runtimeConfig"] = definition["runtimeConfig"]
    if definition["dependencies"]:
        out["dependencies"] = {"dependencies": definition["dependencies"]}
    access = definition["controlInterfaceAccess"]
    if access["allowRules"] or access["denyRules"]:
        out["controlInterfaceAccess"] = {k: v for k, v in access.items() if v}
    if definition["configs"]:
        out["configs"] = {"configs": definition["configs"]}
    if definition["files"]:
        out["files"] = {"files": definition["files"]}
    return out


def proto_config(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {"object": {"fields": {k: proto_config(v) for k, v in value.items()}}}
    if isinstance(value, list):
        return {"array": {"values": [proto_config(v) for v in value]}}
    return {"String": str(value)}
