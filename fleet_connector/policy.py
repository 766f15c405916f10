"""The policy gate: what the car's owner allows remote operators to do, checked before Ankaios.

Ankaios's ``controlInterfaceAccess`` rules see only update masks. They cannot say "no
workload may be scheduled on agent X" or "only images from our registry", and a ``*`` rule
lets a manifest replace the connector itself. The gate closes those gaps.

Policy file (YAML), every key optional::

    protectedWorkloads: [fleetconnector]      # never deleted or replaced remotely
    maxPayloadSize: 1048576                   # bytes
    allowedAgents: [agent_A]                  # workloads may only be scheduled here
    allowedImagePrefixes: [ghcr.io/acme/]     # runtimeConfig images must start with one
    allowedFieldMasks: [workloadStates, desiredState.workloads]   # state requests
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.manifest import Manifest
from fleet_connector.options import ConfigError

DEFAULT_MAX_PAYLOAD = 1024 * 1024
_IMAGE = re.compile(r"^\s*image:\s*[\"']?([^\"'\s#]+)", re.MULTILINE)
_KEYS = {
    "protectedWorkloads",
    "maxPayloadSize",
    "allowedAgents",
    "allowedImagePrefixes",
    "allowedFieldMasks",
}


def _denied(rule: str, message: str) -> RequestError:
    return RequestError(ErrorCode.POLICY_DENIED, f"{message} (policy rule {rule})")


@dataclass(frozen=True)
class Policy:
    """Rules a request must pass; ``None`` for an allow-list means "anything"."""

    protected_workloads: frozenset[str] = frozenset()
    max_payload: int = DEFAULT_MAX_PAYLOAD
    allowed_agents: frozenset[str] | None = None
    allowed_image_prefixes: tuple[str, ...] | None = None
    allowed_field_masks: tuple[str, ...] | None = None
    source: str = field(default="defaults", compare=False)

    @classmethod
    def load(cls, path: Path | None, protected: Iterable[str], max_payload: int | None) -> Policy:
        """The policy from an optional file, plus protected names and a size limit from flags."""
        document: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = yaml.safe_load(path.read_text())
            except (OSError, ValueError, yaml.YAMLError) as e:
                detail = " ".join(str(e).split())
                raise ConfigError(f"cannot read policy file {str(path)!r}: {detail}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"policy file {path} must be a YAML mapping")
            document = loaded or {}
            unknown = set(document) - _KEYS
            if unknown:
                raise ConfigError(
                    f"policy file {path} has unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}"
                )

        def strings(key: str) -> list[str] | None:
            value = document.get(key)
            if value is None:
                return None
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"policy {key} must be a list of non-empty strings")
            return list(value)

        size = document.get("maxPayloadSize", max_payload or DEFAULT_MAX_PAYLOAD)
        if max_payload is not None:
            size = max_payload
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ConfigError("policy maxPayloadSize must be a whole number of bytes above 0")
        agents = strings("allowedAgents")
        images = strings("allowedImagePrefixes")
        masks = strings("allowedFieldMasks")
        return cls(
            protected_workloads=frozenset([*(strings("protectedWorkloads") or []), *protected]),
            max_payload=size,
            allowed_agents=frozenset(agents) if agents is not None else None,
            allowed_image_prefixes=tuple(images) if images is not None else None,
            allowed_field_masks=tuple(masks) if masks is not None else None,
            source=str(path) if path else "defaults",
        )

    def check_payload(self, payload: bytes) -> None:
        if len(payload) > self.max_payload:
            raise _denied(
                "maxPayloadSize",
                f"the payload has {len(payload)} bytes; the limit is {self.max_payload}",
            )

    def check_manifest(self, manifest: Manifest, deleting: bool) -> None:
        for name in sorted(manifest.workloads):
            if name in self.protected_workloads:
                verb = "deleted" if deleting else "replaced"
                raise _denied("protectedWorkloads", f"workload {name!r} may not be {verb} remotely")
        if deleting:
            return
        for name, workload in sorted(manifest.workloads.items()):
            if self.allowed_agents is not None and workload.agent not in self.allowed_agents:
                raise _denied(
                    "allowedAgents",
                    f"workload {name!r} names agent {workload.agent!r}, which is not allowed",
                )
            if self.allowed_image_prefixes is not None:
                self._check_image(name, workload.runtimeConfig)

    def _check_image(self, name: str, runtime_config: str) -> None:
        assert self.allowed_image_prefixes is not None
        match = _IMAGE.search(runtime_config)
        image = match.group(1) if match else None
        if image is None or "{{" in image:
            raise _denied(
                "allowedImagePrefixes",
                f"workload {name!r} has no literal image in its runtimeConfig to check",
            )
        if not image.startswith(self.allowed_image_prefixes):
            raise _denied("allowedImagePrefixes", f"image {image!r} of {name!r} is not allowed")

    def check_field_masks(self, masks: Sequence[str]) -> None:
        allowed = self.allowed_field_masks
        if allowed is None or "*" in allowed:
            return
        if not masks:
            raise _denied("allowedFieldMasks", "the complete state may not be read remotely")
        for mask in masks:
            parts = mask.split(".")
            if not any(parts[: len(a.split("."))] == a.split(".") for a in allowed):
                raise _denied("allowedFieldMasks", f"field mask {mask!r} is not allowed")
