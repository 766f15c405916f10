"""Workload states as an SDK client sees them through its event queue, in order.

Events carry only what changed, so a transition that lasts a moment (e.g. a state written
and replaced while the same update is handled) is still seen, which polling would miss.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any, NamedTuple

STATES_PREFIX = "workloadStates"


class Seen(NamedTuple):
    """One state of one instance; ``substate`` is the SDK's name, e.g. ``RUNNING_OK``."""

    workload: str
    workload_id: str
    substate: str
    info: str = ""


REMOVED = "REMOVED"


class StateLog:
    """Collects the workload states of an event subscription on ``workloadStates``."""

    def __init__(self, events: queue.Queue[Any]) -> None:
        self._events = events
        self.seen: list[Seen] = []
        # (agent, workload, id) -> last state, to expand removals of whole subtrees
        self._current: dict[tuple[str, str, str], Seen] = {}

    def wait_for(self, predicate: Callable[[StateLog], bool], timeout: float = 5.0) -> None:
        """Read events until ``predicate(self)`` holds; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout} s; seen {self.seen}")
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            self._take(event)

    def of(self, workload: str) -> list[tuple[str, str]]:
        """(substate, info) of every state ``workload``'s instances went through, in order."""
        return [(s.substate, s.info) for s in self.seen if s.workload == workload]

    def states_of(self, workload: str, workload_id: str) -> list[str]:
        return [
            s.substate for s in self.seen if (s.workload, s.workload_id) == (workload, workload_id)
        ]

    def last(self, workload: str, workload_id: str) -> str | None:
        states = self.states_of(workload, workload_id)
        return states[-1] if states else None

    def index(self, workload: str, workload_id: str, substate: str) -> int:
        """Position of the first time the instance reached ``substate``."""
        for position, seen in enumerate(self.seen):
            if (seen.workload, seen.workload_id, seen.substate) == (
                workload,
                workload_id,
                substate,
            ):
                return position
        raise ValueError(f"{workload}.{workload_id} never was {substate}; seen {self.seen}")

    def _take(self, event: Any) -> None:
        # Read the proto: an event in which only additionalInfo changed (e.g. "Retry 1"
        # -> "Retry 2") carries an ExecutionState without state, which SDK 1.0.1's
        # get_workload_states() rejects ("Invalid state for workload.").
        states = event.complete_state._to_proto().workloadStates
        for agent, per_agent in states.agentStateMap.items():
            for workload, per_workload in per_agent.wlNameStateMap.items():
                for workload_id, proto in per_workload.idStateMap.items():
                    key = (agent, workload, workload_id)
                    substate = _substate_name(proto)
                    previous = self._current.get(key)
                    if substate is None:
                        if previous is None:
                            continue
                        substate = previous.substate
                    seen = Seen(workload, workload_id, substate, proto.additionalInfo)
                    if previous != seen:
                        self._current[key] = seen
                        self.seen.append(seen)
        for path in event.removed_fields:
            parts = path.split(".")
            if parts[0] != STATES_PREFIX:
                continue
            prefix = tuple(parts[1:])
            for key in sorted(k for k in self._current if k[: len(prefix)] == prefix):
                gone = self._current.pop(key)
                self.seen.append(Seen(gone.workload, gone.workload_id, REMOVED))


def _substate_name(execution_state: Any) -> str | None:
    """The proto enum value's name, which is the SDK's substate name (``RUNNING_OK``)."""
    field = execution_state.WhichOneof("ExecutionStateEnum")
    if field is None:
        return None
    enum = execution_state.DESCRIPTOR.fields_by_name[field].enum_type
    return str(enum.values_by_number[getattr(execution_state, field)].name)
