"""What tests read off the emulator and off processes: requests Ankaios got, memory in use."""

from __future__ import annotations

from pathlib import Path

from ankaios_emulator import Emulator


def update_requests(emulator: Emulator) -> int:
    """How many UpdateStateRequests reached (the emulated) Ankaios."""
    return sum(
        1
        for message in emulator.requests
        if message.HasField("request") and message.request.HasField("updateStateRequest")
    )


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
