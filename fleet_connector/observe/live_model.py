"""What Ankaios says about each workload instance and agent, kept current from its events.

Pure bookkeeping, no I/O: the complete state (a subscription's first answer) replaces the
model, each event patches it. Events of Ankaios 1.0 name the altered paths (``alteredFields``)
and carry only those paths' values, so a state change brings ``state``/``subState`` and, when
it changed, ``additionalInfo``; a removal brings only the removed path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

# Instance states that are on their way out; a workload's topic shows another instance of
# it (the new one of an update, or one moved to another agent) when there is one.
_LEAVING = frozenset({"Stopping", "Removed"})


def public_state(state: str) -> str:
    """Ankaios's state in the topics' spelling: ``NotScheduled`` -> ``not_scheduled``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", state).lower()


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class InstanceState:
    """One instance's execution state, in Ankaios's spelling (``Pending``/``Initial``)."""

    agent: str
    workload: str
    instance_id: str
    state: str
    substate: str
    info: str
    since: float
    """Wall-clock time the connector first saw the instance in this state."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "instance_id": self.instance_id,
            "state": public_state(self.state),
            "substate": self.substate,
            "info": self.info,
            "since": timestamp(self.since),
        }


@dataclass(frozen=True)
class AgentState:
    name: str
    connected: bool
    tags: dict[str, str]
    cpu_usage: int | None
    free_memory: int | None
    since: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "tags": self.tags,
            "cpu_usage": self.cpu_usage,
            "free_memory": self.free_memory,
            "since": timestamp(self.since),
        }


def execution_state(proto: Any) -> tuple[str, str] | None:
    """(state, substate) of an ``ank_base.ExecutionState``; None when it names no state."""
    kind = proto.WhichOneof("ExecutionStateEnum")
    if kind is None:
        return None
    state = kind[0].upper() + kind[1:]
    value = getattr(proto, kind)
    enum_value = proto.DESCRIPTOR.fields_by_name[kind].enum_type.values_by_number.get(value)
    if enum_value is None:
        return state, str(value)
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", state).upper() + "_"
    name = enum_value.name
    if name.startswith(prefix):
        name = name[len(prefix) :]
    return state, "".join(part.capitalize() for part in name.split("_"))


Key = tuple[str, str, str]
"""(agent, workload, instance id)"""


class LiveModel:
    """Instances and agents as last reported; every change returns the workloads it touched."""

    def __init__(self) -> None:
        self.instances: dict[Key, InstanceState] = {}
        self.agents: dict[str, AgentState] = {}

    def workloads(self) -> set[str]:
        return {key[1] for key in self.instances}

    def of_workload(self, name: str) -> list[InstanceState]:
        return [s for key, s in self.instances.items() if key[1] == name]

    def current(self, name: str) -> InstanceState | None:
        """The instance a workload's topic shows: the newest one not on its way out."""
        candidates = self.of_workload(name)
        if not candidates:
            return None
        staying = [s for s in candidates if s.state not in _LEAVING]
        return max(staying or candidates, key=lambda s: (s.since, s.instance_id))

    def instance(self, agent: str, workload: str, instance_id: str) -> InstanceState | None:
        return self.instances.get((agent, workload, instance_id))

    # -- changes -----------------------------------------------------------------------

    def replace_all(self, complete_state: Any, now: float) -> set[str]:
        """A complete state: what it lacks is gone; unchanged states keep their ``since``."""
        old = self.instances
        self.instances = {}
        touched = self._merge(complete_state.workloadStates, now, old)
        return touched | {key[1] for key in old if key not in self.instances}

    def apply_event(self, complete_state: Any, altered: Any, now: float) -> set[str]:
        touched: set[str] = set()
        for path in altered.removedFields:
            touched |= self._remove(path.split("."))
        touched |= self._merge(complete_state.workloadStates, now, self.instances)
        return touched

    def replace_agents(self, agent_map: Any, now: float) -> set[str]:
        """Agents from an ``ank_base.AgentMap``; those missing from it are disconnected."""
        seen: dict[str, AgentState] = {}
        for name, attributes in agent_map.agents.items():
            status = attributes.status
            cpu = status.cpu_usage.cpu_usage if status.HasField("cpu_usage") else None
            memory = status.free_memory.free_memory if status.HasField("free_memory") else None
            tags = dict(attributes.tags.tags)
            old = self.agents.get(name)
            since = old.since if old is not None and old.connected else now
            seen[name] = AgentState(name, True, tags, cpu, memory, since)
        for name, old in self.agents.items():
            if name not in seen:
                seen[name] = old if not old.connected else replace(old, connected=False, since=now)
        changed = {n for n, a in seen.items() if self.agents.get(n) != a}
        self.agents = seen
        return changed

    def _merge(self, states_map: Any, now: float, previous: dict[Key, InstanceState]) -> set[str]:
        touched: set[str] = set()
        for agent, per_agent in states_map.agentStateMap.items():
            for workload, per_workload in per_agent.wlNameStateMap.items():
                for instance_id, proto in per_workload.idStateMap.items():
                    key = (agent, workload, instance_id)
                    old = previous.get(key)
                    named = execution_state(proto)
                    info = proto.additionalInfo if proto.HasField("additionalInfo") else None
                    if named is None:
                        if old is None:
                            continue
                        named = (old.state, old.substate)
                    state, substate = named
                    if info is None:
                        info = old.info if old is not None else ""
                    since = (
                        old.since
                        if old is not None and (old.state, old.substate) == (state, substate)
                        else now
                    )
                    new = InstanceState(agent, workload, instance_id, state, substate, info, since)
                    self.instances[key] = new
                    if new != old:
                        touched.add(workload)
        return touched

    def _remove(self, parts: list[str]) -> set[str]:
        # workloadStates[.<agent>[.<workload>[.<id>[.<field>]]]]
        if not parts or parts[0] != "workloadStates" or len(parts) > 4:
            return set()
        prefix = tuple(parts[1:])
        gone = [key for key in self.instances if key[: len(prefix)] == prefix]
        for key in gone:
            del self.instances[key]
        return {key[1] for key in gone}
