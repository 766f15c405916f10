"""Where a command's manifest comes from: a file, ``-`` (standard input), a directory of
manifests (merged, as ``ank apply`` merges several files), or names to delete.

Whatever the source, the bytes sent are checked the way the connector parses them first, so
a manifest a car would refuse is a usage error (exit 2) before anything is sent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.options import ConfigError

STDIN = "-"
SUFFIXES = (".yaml", ".yml")
# `fleetctl delete workload NAME ...`: what the first word may be, and the manifest key.
KINDS = {
    "workload": "workloads",
    "workloads": "workloads",
    "config": "configs",
    "configs": "configs",
}


def load(source: str) -> bytes:
    """The manifest to send for ``source``; raises ConfigError saying what is wrong."""
    if source == STDIN:
        return _checked(STDIN, sys.stdin.buffer.read())
    path = Path(source)
    if path.is_dir():
        return _merged(path)
    return _checked(source, _read(path))


def files(source: str) -> list[str]:
    """The files ``source`` names: itself, ``-``, or a directory's manifests."""
    path = Path(source)
    if source != STDIN and path.is_dir():
        return [str(p) for p in _manifests_in(path)]
    return [source]


def read(name: str) -> bytes:
    """One file's bytes (``-``: standard input); ConfigError when it cannot be read."""
    return sys.stdin.buffer.read() if name == STDIN else _read(Path(name))


def names(kind: str, items: list[str]) -> bytes:
    """A manifest naming workloads or configs, for a delete: the names are all it needs."""
    key = KINDS[kind]
    document = {
        "apiVersion": "v0.1",
        key: {name: {} if key == "workloads" else "" for name in items},
    }
    return _checked(f"{kind} {' '.join(items)}", yaml.safe_dump(document).encode())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read manifest {path}: {e.strerror}") from None


def _checked(name: str, payload: bytes) -> bytes:
    try:
        parse_manifest(payload)
    except RequestError as e:
        raise ConfigError(f"{name}: {e.message}") from None
    return payload


def _manifests_in(directory: Path) -> list[Path]:
    found = sorted(p for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not found:
        raise ConfigError(f"no manifests ({', '.join('*' + s for s in SUFFIXES)}) in {directory}")
    return found


def _merged(directory: Path) -> bytes:
    """The directory's manifests as one: every workload and config, each named once."""
    paths = _manifests_in(directory)
    if len(paths) == 1:
        return _checked(str(paths[0]), _read(paths[0]))
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, str], Path] = {}
    for path in paths:
        payload = _checked(str(path), _read(path))
        document = yaml.safe_load(payload)
        version = document.get("apiVersion")
        if merged.setdefault("apiVersion", version) != version:
            raise ConfigError(
                f"{path}: apiVersion {version} differs from {merged['apiVersion']} in "
                f"{paths[0]}; one apply sends one version"
            )
        for key in ("workloads", "configs"):
            for name, value in (document.get(key) or {}).items():
                if (key, name) in origin:
                    raise ConfigError(f"{path}: {key[:-1]} {name} is also in {origin[(key, name)]}")
                origin[(key, name)] = path
                merged.setdefault(key, {})[name] = value
    return _checked(str(directory), yaml.safe_dump(merged, sort_keys=False).encode())
