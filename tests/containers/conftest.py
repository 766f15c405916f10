"""Fixtures for the container tests: podman with the project's containers.conf and the images
`make images` built (localhost/fleet-connector and localhost/vehicle-data-sender).

These tests never skip: without podman or the images they fail and say what to run.
`make test` builds the images first; `pytest -m "not containers"` leaves them out.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from containers.podman_kit import (
    CONNECTOR_IMAGE,
    ROOT,
    SENDER_IMAGE,
    Images,
    podman,
    project_version,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "containers: needs podman and the images of `make images` (make test does)"
    )


@pytest.fixture(scope="session")
def podman_ready() -> Iterator[None]:
    """podman on PATH, used with the project's containers.conf (runc, lower ulimits)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `make setup` (or deselect: -m 'not containers')")
    saved = os.environ.get("CONTAINERS_CONF")
    if saved is None:
        os.environ["CONTAINERS_CONF"] = str(ROOT / "containers.conf")
    yield
    if saved is None:
        os.environ.pop("CONTAINERS_CONF", None)


@pytest.fixture(scope="session")
def images(podman_ready: None) -> Images:
    version = project_version()
    found = Images(f"{CONNECTOR_IMAGE}:{version}", f"{SENDER_IMAGE}:{version}")
    for image in (found.connector, found.sender):
        if podman("image", "exists", image, check=False).returncode != 0:
            pytest.fail(f"image {image} is missing: run `make images` (make test does)")
    return found
