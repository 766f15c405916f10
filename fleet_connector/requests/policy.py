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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.manifest import Manifest
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.options import ConfigError

if TYPE_CHECKING:
    from ankaios_model.rendering import RenderedWorkload

DEFAULT_MAX_PAYLOAD = 1024 * 1024
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

    @property
    def judges_what_runs(self) -> bool:
        """Whether an apply must be rendered as Ankaios will run it before it is judged."""
        return self.allowed_agents is not None or self.allowed_image_prefixes is not None

    def check_manifest(self, manifest: Manifest, deleting: bool) -> None:
        """The rules on the manifest's names; what it runs is :meth:`check_started`'s."""
        for name in sorted(manifest.workloads):
            if name in self.protected_workloads:
                verb = "deleted" if deleting else "replaced"
                raise _denied("protectedWorkloads", f"workload {name!r} may not be {verb} remotely")

    def check_apply(
        self, read_state: Callable[[], _ank_base.CompleteState], manifest: Manifest
    ) -> None:
        """The rules on what runs, for what an apply would start; ``read_state`` reads the
        car's desired workloads and configs. Where that cannot be told, the apply is refused."""
        self._check_what_runs(read_state, manifest.apply_state(), manifest.masks, "apply")

    def check_update(
        self,
        read_state: Callable[[], _ank_base.CompleteState],
        state: _ank_base.CompleteState,
        masks: list[str],
    ) -> None:
        """Every rule, for an update the connector makes itself from its journal (a rollback,
        a reconcile): what it puts back passed the policy once, but a config put back can
        re-render a workload into another image, and the policy may have changed since."""
        for mask in masks:
            parts = mask.split(".")
            in_workloads = len(parts) > 2 and parts[:2] == ["desiredState", "workloads"]
            workload = parts[2] if in_workloads else None
            if workload is not None and workload in self.protected_workloads:
                raise _denied(
                    "protectedWorkloads",
                    f"workload {workload!r} may not be replaced or deleted remotely",
                )
        self._check_what_runs(read_state, state, masks, "update")

    def _check_what_runs(
        self,
        read_state: Callable[[], _ank_base.CompleteState],
        state: _ank_base.CompleteState,
        masks: list[str],
        what: str,
    ) -> None:
        if not self.judges_what_runs:
            return
        # What runs is told by the Ankaios server model and the template renderer: loaded
        # only for a policy with rules on it (bench/README.md, "Footprint").
        from ankaios_model.workload_images import CannotTell  # noqa: PLC0415
        from fleet_connector.requests.started import started_workloads  # noqa: PLC0415

        try:
            workloads = started_workloads(read_state, state, masks)
        except CannotTell as e:
            rules = [
                rule
                for rule, value in (
                    ("allowedAgents", self.allowed_agents),
                    ("allowedImagePrefixes", self.allowed_image_prefixes),
                )
                if value is not None
            ]
            raise _denied(
                ", ".join(rules), f"the connector cannot tell what this {what} would run: {e}"
            ) from None
        self.check_started(workloads)

    def check_started(self, workloads: Sequence[RenderedWorkload]) -> None:
        """The rules on what runs, for each workload an apply starts or restarts, rendered
        with the configs in effect (see :mod:`fleet_connector.requests.started`)."""
        from ankaios_model import workload_images  # noqa: PLC0415 - see _check_what_runs

        for workload in workloads:
            name = workload.name
            if name in self.protected_workloads:
                raise _denied(
                    "protectedWorkloads",
                    f"workload {name!r} may not be replaced remotely (a config it uses changes)",
                )
            if self.allowed_agents is not None and workload.agent not in self.allowed_agents:
                raise _denied(
                    "allowedAgents",
                    f"workload {name!r} would run on agent {workload.agent!r}, "
                    "which is not allowed",
                )
            if self.allowed_image_prefixes is not None:
                try:
                    images = workload_images.images(workload.runtime, workload.runtime_config)
                except workload_images.CannotTell as e:
                    raise _denied(
                        "allowedImagePrefixes",
                        f"the images workload {name!r} would run cannot be told: {e}",
                    ) from None
                for image in images:
                    if not image.startswith(self.allowed_image_prefixes):
                        raise _denied(
                            "allowedImagePrefixes",
                            f"image {image!r} of {name!r} is not allowed",
                        )

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
