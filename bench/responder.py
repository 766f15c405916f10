"""Ankaios at the speed of the FIFOs: a responder that cannot be the bottleneck, and a raw
client that measures how many requests an Ankaios peer answers per second.

``python -m bench.responder DIR``: creates ``DIR/input`` and ``DIR/output``, accepts the
Hello and answers every ``CompleteStateRequest`` with one fixed, small complete state (the
one the emulator gives for ``["workloadStates"]`` with no workloads), in one thread, reading
and writing whole batches of frames. It knows nothing else; it exists so the throughput
benchmark can show the connector's own ceiling where the emulator would be the limit.
Prints ``ready`` once the FIFOs exist; runs until SIGTERM.

:func:`ceiling` is the other half: it speaks the control interface itself (Hello, then N
pipelined state requests, each with its own id) and counts answers per second, for the
emulator or this responder, without any connector in between.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

from ankaios_sdk._protos import _ank_base, _control_api
from ankaios_sdk.utils import ANKAIOS_VERSION

from fleet_connector.ankaios.control_interface import decode_frames, encode_varint


def _frame(message: _control_api.ToAnkaios | _control_api.FromAnkaios) -> bytes:
    payload: bytes = message.SerializeToString()
    return encode_varint(len(payload)) + payload


def _answer(request_id: str) -> bytes:
    response = _ank_base.Response(
        requestId=request_id,
        completeStateResponse=_ank_base.CompleteStateResponse(
            completeState=_ank_base.CompleteState(
                desiredState=_ank_base.State(apiVersion="v1"),
            )
        ),
    )
    return _frame(_control_api.FromAnkaios(response=response))


def serve(directory: Path, stop: threading.Event) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("input", "output"):
        if not (directory / name).exists():
            os.mkfifo(directory / name, 0o600)
    reader = os.open(directory / "output", os.O_RDONLY | os.O_NONBLOCK)
    print("ready", flush=True)
    writer: int | None = None
    buffer = bytearray()
    accepted = _frame(
        _control_api.FromAnkaios(controlInterfaceAccepted=_control_api.ControlInterfaceAccepted())
    )
    while not stop.is_set():
        if not select.select([reader], [], [], 0.2)[0]:
            continue
        chunk = os.read(reader, 1 << 20)
        if not chunk:  # the workload went away: wait for the next one
            os.close(reader)
            reader = os.open(directory / "output", os.O_RDONLY | os.O_NONBLOCK)
            continue
        buffer.extend(chunk)
        out = bytearray()
        for frame in decode_frames(buffer):
            message = _control_api.ToAnkaios()
            message.ParseFromString(frame)
            if message.HasField("hello"):
                out += accepted
            elif message.request.HasField("completeStateRequest"):
                out += _answer(message.request.requestId)
        if out:
            if writer is None:
                writer = os.open(directory / "input", os.O_WRONLY)
            view = memoryview(out)
            while view:
                view = view[os.write(writer, view) :]


def ceiling(directory: Path, requests: int, timeout: float = 60.0) -> dict[str, float]:
    """Answers per second from the Ankaios peer at ``directory``, N requests pipelined."""
    in_fd = os.open(directory / "input", os.O_RDONLY | os.O_NONBLOCK)
    out_fd = os.open(directory / "output", os.O_WRONLY)
    try:
        hello = _control_api.ToAnkaios(hello=_control_api.Hello(protocolVersion=ANKAIOS_VERSION))
        os.write(out_fd, _frame(hello))
        buffer = bytearray()
        while not decode_frames(buffer):
            select.select([in_fd], [], [], 5)
            buffer.extend(os.read(in_fd, 1 << 20))
        frames = [
            _frame(
                _control_api.ToAnkaios(
                    request=_ank_base.Request(
                        requestId=f"ceiling-{i}",
                        completeStateRequest=_ank_base.CompleteStateRequest(
                            fieldMask=["workloadStates"]
                        ),
                    )
                )
            )
            for i in range(requests)
        ]

        def write_all() -> None:
            for frame in frames:
                view = memoryview(frame)
                while view:
                    view = view[os.write(out_fd, view) :]

        started = time.perf_counter()
        writer = threading.Thread(target=write_all, daemon=True)
        writer.start()
        answered = 0
        deadline = time.monotonic() + timeout
        while answered < requests and time.monotonic() < deadline:
            if not select.select([in_fd], [], [], 1.0)[0]:
                continue
            buffer.extend(os.read(in_fd, 1 << 20))
            answered += len(decode_frames(buffer))
        elapsed = time.perf_counter() - started
        writer.join(1.0)
        return {
            "requests": requests,
            "answered": answered,
            "seconds": round(elapsed, 3),
            "per_second": round(answered / elapsed, 1),
        }
    finally:
        os.close(in_fd)
        os.close(out_fd)


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    serve(Path(sys.argv[1]), stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
