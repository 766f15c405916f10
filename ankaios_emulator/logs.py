"""Log campaigns: stream an instance's output lines to the requesting control interface.

Like the agent (``agent/src/workload_log_facade.rs``) every instance is streamed on its own:
batches of ``LogEntriesResponse`` carrying that instance's name, then one
``LogsStopResponse`` when its stream ends (at once without ``follow``, on removal with it).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ankaios_sdk._protos import _ank_base as ank_base

from .runtime import LogBuffer, LogLine

log = logging.getLogger(__name__)

_FOLLOW_POLL_S = 0.1
# The agent starts a log fetcher (``podman logs``) after the server has answered, so the
# first entries never overtake LogsRequestAccepted; the SDK drops entries that do.
START_LATENCY_S = 0.05


@dataclass(frozen=True)
class LogOptions:
    follow: bool
    tail: int
    since: float | None
    until: float | None

    @classmethod
    def from_request(cls, request: Any) -> LogOptions:
        return cls(
            follow=request.follow if request.HasField("follow") else False,
            tail=request.tail if request.HasField("tail") else -1,
            since=_timestamp(request.since) if request.HasField("since") else None,
            until=_timestamp(request.until) if request.HasField("until") else None,
        )

    def select(self, lines: list[LogLine]) -> list[LogLine]:
        chosen = [
            line
            for line in lines
            if (self.since is None or line.timestamp >= self.since)
            and (self.until is None or line.timestamp <= self.until)
        ]
        if self.tail >= 0:
            chosen = chosen[-self.tail :] if self.tail else []
        return chosen


def _timestamp(text: str) -> float | None:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        log.warning("ignoring unparsable log time %r", text)
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


Send = Callable[[Any, Callable[[], None]], None]


class LogCampaign:
    """One ``LogsRequest`` of one client; cancelled by ``LogsCancelRequest`` or its end."""

    def __init__(
        self,
        request_id: str,
        sources: list[tuple[Any, LogBuffer]],
        options: LogOptions,
        send: Send,
        on_finished: Callable[[LogCampaign], None],
    ) -> None:
        self.request_id = request_id
        self._sources = sources
        self._options = options
        self._send = send
        self._on_finished = on_finished
        self._cancel = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._stream,
                args=(name, buffer),
                name=f"logs-{request_id[:8]}-{name.workloadName}",
                daemon=True,
            )
            for name, buffer in sources
        ]
        self._remaining = len(self._threads)
        self._lock = threading.Lock()
        # agents whose log providers went away (disconnected): their streams stop
        self._gone_agents: set[str] = set()

    def start(self) -> None:
        if not self._threads:
            self._on_finished(self)
        for thread in self._threads:
            thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    def stop_agent(self, agent: str) -> None:
        """End the streams of ``agent``'s instances with ``LogsStopResponse`` (the server
        does so for a disconnected agent's log providers)."""
        with self._lock:
            self._gone_agents.add(agent)

    def _provider_gone(self, name: Any) -> bool:
        with self._lock:
            return str(name.agentName) in self._gone_agents

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread() and thread.is_alive():
                thread.join(timeout)

    def _entries(self, name: Any, lines: list[LogLine]) -> Any:
        return ank_base.Response(
            requestId=self.request_id,
            logEntriesResponse=ank_base.LogEntriesResponse(
                logEntries=[
                    ank_base.LogEntry(workloadName=name, message=line.text) for line in lines
                ]
            ),
        )

    def _stream(self, name: Any, buffer: LogBuffer) -> None:
        if self._cancel.wait(START_LATENCY_S):
            self._finish()
            return
        lines, closed = buffer.snapshot()
        count = len(lines)
        selected = self._options.select(lines)
        if selected and not self._cancel.is_set():
            self._send(self._entries(name, selected), self.cancel)
        while (
            self._options.follow
            and not closed
            and not self._cancel.is_set()
            and not self._provider_gone(name)
        ):
            new, closed = buffer.wait_beyond(count, _FOLLOW_POLL_S)
            count += len(new)
            if self._options.until is not None:
                new = [line for line in new if line.timestamp <= self._options.until]
            if new and not self._cancel.is_set():
                self._send(self._entries(name, new), self.cancel)
        if not self._cancel.is_set():
            self._send(
                ank_base.Response(
                    requestId=self.request_id,
                    logsStopResponse=ank_base.LogsStopResponse(workloadName=name),
                ),
                self.cancel,
            )
        self._finish()

    def _finish(self) -> None:
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self._on_finished(self)
