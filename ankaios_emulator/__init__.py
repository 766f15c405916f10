"""A control-interface peer faithful to Eclipse Ankaios 1.0 for the unmodified ``ankaios-sdk``.

It creates the ``input``/``output`` FIFOs, speaks the length-delimited protobuf protocol
with the Hello handshake, and answers like an Ankaios 1.0 server and agent would::

    from ankaios_emulator import Emulator

    with Emulator(control_interface=tmp_path / "ci") as emu:
        ...  # point ControlInterface.ANKAIOS_CONTROL_INTERFACE_BASE_PATH at emu.control_interface

This package emulates (sessions, transport, runtimes, scheduler, events, logs, faults, the
CLI); how the server treats a desired state (merge, validation, rendering, field masks) is
:mod:`ankaios_model`, which the connector uses to plan with: one model, so the tests that
run the connector against the emulator prove what they claim.
"""

from __future__ import annotations

from .config import DEFAULT_ACCESS, EmulatorError
from .emulator import Emulator
from .faults import Faults
from .runtime import ExecState, Runtime
from .session import Session, SessionState

__all__ = [
    "DEFAULT_ACCESS",
    "Emulator",
    "EmulatorError",
    "ExecState",
    "Faults",
    "Runtime",
    "Session",
    "SessionState",
]
