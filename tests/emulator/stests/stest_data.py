"""The manifests of Ankaios v1.0.1's system tests (``tests/resources/configs``), as data.

The stests drive Ankaios with the ``ank`` CLI; here the same manifests go through the
unmodified SDK. ``ank set state <masks> <file>`` has no SDK call of its own: a manifest
with exactly the masked workloads and configs makes ``apply_manifest`` send the same
masks (``desiredState.workloads.<w>``, ``desiredState.configs.<c>``).

SDK 1.0.1's manifest parser reads its own ``to_dict`` spelling in two places: access rules
with ``filterMask`` (the v0.1 name, which Ankaios accepts as an alias of ``filterMasks``)
and files as ``{mount_point, content: {data | binaryData}}``. ``sdk_manifest`` rewrites
just those two, so the SDK sends what ``ank`` would send.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from ankaios_sdk import Manifest

MANIFESTS = Path(__file__).parent / "manifests"


def manifest_text(name: str) -> str:
    return (MANIFESTS / f"{name}.yaml").read_text()


def manifest(name: str) -> Manifest:
    return sdk_manifest(yaml.safe_load(manifest_text(name)))


def sdk_manifest(tree: dict[str, Any]) -> Manifest:
    """An Ankaios manifest (parsed YAML) as SDK 1.0.1's ``Manifest``."""
    tree = copy.deepcopy(tree)
    for workload in (tree.get("workloads") or {}).values():
        access = workload.get("controlInterfaceAccess") or {}
        for rule in [*access.get("allowRules", []), *access.get("denyRules", [])]:
            if "filterMasks" in rule:
                rule["filterMask"] = rule.pop("filterMasks")
        workload["files"] = [
            {
                "mount_point": file["mountPoint"],
                "content": {k: v for k, v in file.items() if k != "mountPoint"},
            }
            for file in workload.get("files", [])
        ]
    return Manifest.from_dict(tree)


def state_subset(name: str, workloads: Sequence[str] = (), configs: Sequence[str] = ()) -> Manifest:
    """The workloads and configs of a ``desiredState:`` file that ``ank set state``
    would send with the masks of those names."""
    tree: Any = yaml.safe_load(manifest_text(name))
    desired = tree["desiredState"]
    subset: dict[str, Any] = {"apiVersion": desired["apiVersion"]}
    if workloads:
        subset["workloads"] = {w: desired["workloads"][w] for w in workloads}
    if configs:
        subset["configs"] = {c: desired["configs"][c] for c in configs}
    return sdk_manifest(subset)
