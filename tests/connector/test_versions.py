"""The presence's versions: what importlib.metadata says, without loading it."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from fleet_connector import versions


@pytest.mark.parametrize(
    "distribution", ["ankaios-fleet-connector", "ankaios-sdk", "paho-mqtt", "PyYAML", "protobuf"]
)
def test_an_installed_distribution_has_the_version_importlib_metadata_gives(
    distribution: str,
) -> None:
    assert versions.version(distribution) == metadata.version(distribution)


def test_the_first_distribution_along_sys_path_counts_its_name_normalised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for entry, version in (("first", "2.0.1"), ("second", "1.0")):
        info = tmp_path / entry / f"Some.Thing-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: Some.Thing\nversion: {version}\n\nVersion: 9\n"
        )
    monkeypatch.setattr(
        sys,
        "path",
        [
            str(tmp_path / "missing"),
            *map(
                str,
                (
                    tmp_path / "first",
                    tmp_path / "second",
                ),
            ),
        ],
    )
    assert versions.version("some-thing") == metadata.version("some-thing") == "2.0.1"


def test_a_distribution_not_installed_is_unknown() -> None:
    assert versions.version("no-such-distribution-here") == "unknown"
