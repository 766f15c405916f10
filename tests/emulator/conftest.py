"""Fixtures for running the real ankaios-sdk 1.0.1 against the emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ankaios_sdk._components.control_interface import ControlInterface
from emulator.ci_client import MakeEmulator, RawClient

from ankaios_emulator import Emulator

SdkPath = Callable[[Path], None]


@pytest.fixture
def sdk_path(monkeypatch: pytest.MonkeyPatch) -> SdkPath:
    """Point the unmodified SDK at a control-interface directory."""

    def point(directory: Path) -> None:
        monkeypatch.setattr(ControlInterface, "ANKAIOS_CONTROL_INTERFACE_BASE_PATH", str(directory))

    return point


@pytest.fixture
def make_emulator(tmp_path: Path, sdk_path: SdkPath) -> Iterator[MakeEmulator]:
    """Start emulators (single control interface in tmp_path/ci by default); stop them all."""
    made: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        if "run_dir" not in kwargs:
            kwargs.setdefault("control_interface", tmp_path / "ci")
        emu = Emulator(**kwargs)
        made.append(emu)
        emu.start()
        if kwargs.get("control_interface") is not None:
            sdk_path(emu.control_interface)
        return emu

    yield make
    for emu in made:
        emu.stop()


@pytest.fixture
def emu(make_emulator: MakeEmulator) -> Emulator:
    return make_emulator()


@pytest.fixture
def raw_client() -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def connect(directory: Path, reopen_output: bool = False) -> RawClient:
        client = RawClient(directory, reopen_output=reopen_output)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
