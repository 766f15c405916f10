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


def last_lines(ci: ControlInterface, keys: list[Key], tail: int, timeout: float) -> Tail:
    """Up to ``tail`` last lines of each instance; waits at most ``timeout`` for them."""
    result = Tail({key[1]: [] for key in keys})
    if not keys:
        return result
    inbox: queue.Queue[Response] = queue.Queue()
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
                    result.lines.setdefault(entry.workloadName.workloadName, []).append(
                        entry.message
                    )
            elif response.content_type == ResponseType.LOGS_STOP_RESPONSE:
                open_streams = (open_streams or 1) - 1
    finally:
        ci.close_stream(request_id)
        if open_streams != 0:
            cancel_campaign(ci, request_id, timeout)
    for name, lines in result.lines.items():
        result.lines[name] = lines[-tail:] if tail else []
    return result
