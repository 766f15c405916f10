"""The last lines a set of workload instances printed, in one short logs campaign."""

from __future__ import annotations

import contextlib
import queue
import time
from dataclasses import dataclass, field

from ankaios_sdk import Response, ResponseType
from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.client import ACCESS_DENIED
from fleet_connector.ankaios.control_interface import ControlInterface, Unavailable, proto_of
from fleet_connector.observe.live_model import Key

# Longest log line passed on, in characters; a longer one is cut there and the cut counted.
# A workload printing 200,000 characters without a newline made one batch of 2.4 MB, more
# than the broker takes (docs/connector.md, "Logs").
MAX_LINE = 16 * 1024


def cut(line: str, limit: int = MAX_LINE) -> tuple[str, bool]:
    """The line cut to ``limit`` characters, and whether it was."""
    return (line, False) if len(line) <= limit else (line[:limit], True)


def instance_name(key: Key) -> _ank_base.WorkloadInstanceName:
    agent, workload, instance_id = key
    return _ank_base.WorkloadInstanceName(workloadName=workload, agentName=agent, id=instance_id)


def log_rule_message(workloads: list[str]) -> str:
    return (
        "Access denied: no LogRule in the connector's controlInterfaceAccess allows the logs "
        f"of {', '.join(sorted(set(workloads)))} (add a LogRule with workloadNames: "
        f"[{', '.join(sorted(set(workloads)))}])"
    )


def cancel_campaign(ci: ControlInterface, request_id: str, timeout: float) -> None:
    """Asks Ankaios to end a logs campaign; its answers are no longer routed anywhere."""
    with contextlib.suppress(Unavailable):
        ci.send(
            _ank_base.Request(
                requestId=request_id, logsCancelRequest=_ank_base.LogsCancelRequest()
            ),
            timeout,
        )


@dataclass
class Tail:
    lines: dict[str, list[str]] = field(default_factory=dict)
    """workload name -> its last lines"""
    error: str | None = None
    cut: dict[str, int] = field(default_factory=dict)
    """workload name -> how many of its lines were cut to ``line_limit``"""


def last_lines(
    ci: ControlInterface, keys: list[Key], tail: int, timeout: float, line_limit: int = MAX_LINE
) -> Tail:
    """Up to ``tail`` last lines of each instance, each at most ``line_limit`` characters;
    waits at most ``timeout`` for them."""
    result = Tail({key[1]: [] for key in keys})
    if not keys:
        return result
    inbox: queue.Queue[Response] = queue.Queue()
    received: dict[str, list[tuple[str, bool]]] = {}
    request = _ank_base.Request(
        logsRequest=_ank_base.LogsRequest(
            workloadNames=[instance_name(k) for k in keys], follow=False, tail=tail
        )
    )
    try:
        request_id = ci.open_stream(request, inbox.put, timeout)
    except Unavailable as e:
        result.error = str(e)
        return result
    deadline = time.monotonic() + timeout
    open_streams: int | None = None
    try:
        while open_streams is None or open_streams > 0:
            try:
                response = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                result.error = f"no complete logs within {timeout:g} s"
                break
            proto = proto_of(response)
            if response.content_type == ResponseType.ERROR:
                message = str(response.content)
                denied = message == ACCESS_DENIED
                result.error = log_rule_message([k[1] for k in keys]) if denied else message
                break
            if response.content_type == ResponseType.LOGS_REQUEST_ACCEPTED:
                open_streams = len(proto.logsRequestAccepted.workloadNames)
            elif response.content_type == ResponseType.LOGS_ENTRY:
                for entry in proto.logEntriesResponse.logEntries:
                    lines = received.setdefault(entry.workloadName.workloadName, [])
                    lines.append(cut(entry.message, line_limit))
                    if len(lines) > 2 * tail + 1:  # only the last ``tail`` are kept
                        del lines[: len(lines) - tail]
            elif response.content_type == ResponseType.LOGS_STOP_RESPONSE:
                open_streams = (open_streams or 1) - 1
    finally:
        ci.close_stream(request_id)
        if open_streams != 0:
            cancel_campaign(ci, request_id, timeout)
    for name, lines in received.items():
        kept = lines[-tail:] if tail else []
        result.lines[name] = [line for line, _ in kept]
        cuts = sum(1 for _, was_cut in kept if was_cut)
        if cuts:
            result.cut[name] = cuts
    return result
