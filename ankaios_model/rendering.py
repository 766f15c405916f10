"""A workload as the Ankaios server renders it with its configs, before it dispatches it.

The server model (:mod:`ankaios_model.state`) renders and compares workloads with this,
for the emulator and for the connector (which must know what a workload turns into: to
plan an apply, to check the image a templated workload will run). Follows
``ConfigRenderer::render_workloads`` of Ankaios 1.0
(``server/src/ankaios_server/config_renderer.rs``); workloads are in the spec form of
``ankaios_model.tree`` (every field present), the form the server keeps.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ankaios_model.templating import RenderError, render

__all__ = ["InvalidState", "RenderedWorkload", "render_workload"]


class InvalidState(Exception):
    """The state cannot be rendered; ``str()`` is the server's ``UpdateStateError`` reason."""


@dataclass(frozen=True)
class RenderedWorkload:
    """A workload after config rendering, as the server compares and dispatches it.

    ``configs`` is kept for information but excluded from equality: Ankaios clears the
    mapping in rendered workloads, so changing only an alias never restarts a workload.
    """

    name: str
    agent: str
    runtime: str
    runtime_config: str
    restart_policy: str
    dependencies: dict[str, str]
    tags: dict[str, str]
    control_interface_access: dict[str, Any]
    files: list[dict[str, str]]
    configs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def instance_id(self) -> str:
        return hashlib.sha256(self.runtime_config.encode()).hexdigest()

    @property
    def instance_name(self) -> str:
        return f"{self.name}.{self.instance_id}.{self.agent}"


def render_workload(
    name: str, wl: Mapping[str, Any], configs: Mapping[str, Any]
) -> RenderedWorkload:
    """Render like ``ConfigRenderer::render_workloads``; raises :class:`InvalidState`."""
    if not wl["configs"]:
        return RenderedWorkload(
            name=name,
            agent=wl["agent"],
            runtime=wl["runtime"],
            runtime_config=wl["runtimeConfig"],
            restart_policy=wl["restartPolicy"],
            dependencies=dict(wl["dependencies"]),
            tags=dict(wl["tags"]),
            control_interface_access=copy.deepcopy(wl["controlInterfaceAccess"]),
            files=copy.deepcopy(wl["files"]),
            configs=dict(wl["configs"]),
        )
    context: dict[str, Any] = {}
    for alias, key in sorted(wl["configs"].items()):
        if key not in configs:
            raise InvalidState(f"Workload references config key '{key}' that does not exist")
        context[alias] = configs[key]
    try:
        runtime_config = render(wl["runtimeConfig"], context)
    except RenderError as exc:
        raise InvalidState(f"Failed to render field 'runtimeConfig': '{exc}'") from None
    try:
        agent = render(wl["agent"], context)
    except RenderError as exc:
        raise InvalidState(f"Failed to render field 'agent': '{exc}'") from None
    files: list[dict[str, str]] = []
    for f in wl["files"]:
        rendered = dict(f)
        for key in ("data", "binaryData"):
            if key in f:
                try:
                    rendered[key] = render(f[key], context)
                except RenderError as exc:
                    raise InvalidState(
                        f"Failed to render field 'files with mount point {f['mountPoint']}': "
                        f"'{exc}'"
                    ) from None
        files.append(rendered)
    return RenderedWorkload(
        name=name,
        agent=agent,
        runtime=wl["runtime"],
        runtime_config=runtime_config,
        restart_policy=wl["restartPolicy"],
        dependencies=dict(wl["dependencies"]),
        tags=dict(wl["tags"]),
        control_interface_access=copy.deepcopy(wl["controlInterfaceAccess"]),
        files=files,
        configs=dict(wl["configs"]),
    )
