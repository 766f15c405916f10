"""Helpers for the container tests: podman calls, containers by label, the images' names."""

from __future__ import annotations

import json
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[2]
CONNECTOR_IMAGE = "localhost/fleet-connector"
SENDER_IMAGE = "localhost/vehicle-data-sender"


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def containers_with(*labels: str) -> list[dict[str, object]]:
    """`podman ps --all` entries carrying every one of ``labels`` (``key=value``)."""
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    out = podman("ps", "--all", "--format=json", *filters).stdout
    entries = json.loads(out) if out.strip() else []
    return list(entries)


def remove_containers_with(label: str) -> None:
    podman("rm", "--force", "--ignore", "--time", "0", "--filter", f"label={label}", check=False)


@dataclass(frozen=True)
class Images:
    connector: str
    sender: str
