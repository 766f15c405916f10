"""A minimal control-interface client for tests that need to see raw frames."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ankaios_sdk._protos import _ank_base as ank_base
from ankaios_sdk._protos import _control_api as control_api

from ankaios_emulator import Emulator
from ankaios_emulator.transport import encode_frame

MakeEmulator = Callable[..., Emulator]

NGINX_MANIFEST = """\
apiVersion: v1
workloads:
  nginx:
    runtime: podman
    agent: agent_A
    runtimeConfig: "image: nginx"
"""


def connector_state(
    access: str | None = 'StateRule, operation: ReadWrite, filterMasks: ["*"]',
) -> str:
    """A startup state with the tutorial's connector workload; ``access`` is its one allow
    rule after ``type: `` (None: no controlInterfaceAccess)."""
    text = """\
apiVersion: v1
workloads:
  fleetconnector:
    runtime: podman
    agent: agent_A
    runtimeConfig: "image: connector"
"""
    if access is None:
        return text
    return text + f"    controlInterfaceAccess:\n      allowRules: [{{type: {access}}}]\n"


def add_workload(request_id: str, name: str) -> Any:
    """A ``ToAnkaios`` update request that adds a minimal workload ``name`` on agent_A."""
    workload = ank_base.Workload(agent="agent_A", runtime="podman", runtimeConfig="image: x")
    new_state = ank_base.CompleteState(
        desiredState=ank_base.State(
            apiVersion="v1", workloads=ank_base.WorkloadMap(workloads={name: workload})
        )
    )
    return control_api.ToAnkaios(
        request=ank_base.Request(
            requestId=request_id,
            updateStateRequest=ank_base.UpdateStateRequest(
                newState=new_state, updateMask=[f"desiredState.workloads.{name}"]
            ),
        )
    )


class RawClient:
    """A minimal control-interface client that writes and reads frames itself."""

    def __init__(self, directory: Path, reopen_output: bool = False) -> None:
        """``reopen_output``: open ``output`` for each message and close it again, as
        Ankaios's Node.js example does; ``input`` stays open for reading throughout."""
        self._directory = directory
        self._reopen = reopen_output
        # The emulator always has a reader on output, so this does not block.
        self._out: int | None = None if reopen_output else self._open_output()
        self._in = os.open(directory / "input", os.O_RDONLY | os.O_NONBLOCK)
        self._buf = bytearray()
        self.saw_eof = False
        self.stop_at_eof = False

    def _open_output(self) -> int:
        return os.open(self._directory / "output", os.O_WRONLY)

    def send(self, message: Any) -> None:
        self.send_bytes(encode_frame(message.SerializeToString()))

    def send_bytes(self, data: bytes) -> None:
        if self._out is not None:
            os.write(self._out, data)
            return
        out = self._open_output()
        try:
            os.write(out, data)
        finally:
            os.close(out)

    def close_output(self) -> None:
        if self._out is not None:
            os.close(self._out)
            self._out = None

    def hello(self, version: str = "1.0.0") -> None:
        self.send(control_api.ToAnkaios(hello=control_api.Hello(protocolVersion=version)))

    def read_payload(self, timeout: float = 5.0) -> bytes:
        """The next whole frame's payload, reading exactly the announced length."""
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while True:
                frame = self._take()
                if frame is not None:
                    return frame
                if deadline.is_set():
                    raise TimeoutError("no complete frame")
                ready, _, _ = select.select([self._in], [], [], 0.05)
                if ready:
                    chunk = os.read(self._in, 1 << 20)
                    if chunk:
                        self._buf += chunk
                    else:
                        # Every writer of input is gone; a blocking reader would stop here.
                        self.saw_eof = True
                        if self.stop_at_eof:
                            raise EOFError("end of file on input")
                        deadline.wait(0.05)
        finally:
            timer.cancel()

    def read(self, timeout: float = 5.0) -> Any:
        message = control_api.FromAnkaios()
        message.ParseFromString(self.read_payload(timeout))
        return message

    def _take(self) -> bytes | None:
        length = shift = 0
        for index, byte in enumerate(self._buf[:10]):
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                start = index + 1
                if len(self._buf) - start < length:
                    return None
                payload = bytes(self._buf[start : start + length])
                del self._buf[: start + length]
                return payload
        return None

    def close(self) -> None:
        self.close_output()
        if self._in >= 0:
            os.close(self._in)
            self._in = -1
