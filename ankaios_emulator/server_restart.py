"""What the agent does with its workloads when the Ankaios server comes back after a restart.

Ankaios 1.0.1 keeps no state across a server restart: the new server starts from the
startup manifest and sends each reconnecting agent a ``ServerHello`` with that manifest's
workloads. The agent compares them with the workloads it runs
(``RuntimeManager::resume_and_remove_from_added_workloads`` in
``agent/src/runtime_manager.rs``):

* same instance name and running: resumed - the process keeps running, with a *new*
  control-interface instance (``swdd~agent-existing-workloads-resume-existing~2``);
* same workload name otherwise (succeeded, failed, pending, or another instance id because
  it was updated at runtime): replaced - the old instance is deleted at once, without delete
  conditions, and the startup version created (an update of the known workload);
* not in the startup manifest (applied at runtime): deleted;
* in the startup manifest but not running on the agent: created.

This module only decides; :class:`~ankaios_emulator.emulator.Emulator` carries it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ankaios_model.state import RenderedWorkload


@dataclass
class RestartPlan:
    """The agent's operations after the ``ServerHello`` of a restarted server."""

    resumed: list[RenderedWorkload] = field(default_factory=list)
    # old instance -> the startup instance that replaces it (same workload name)
    replaced: list[tuple[RenderedWorkload, RenderedWorkload]] = field(default_factory=list)
    deleted: list[RenderedWorkload] = field(default_factory=list)
    created: list[RenderedWorkload] = field(default_factory=list)


def plan_restart(
    running: Iterable[tuple[RenderedWorkload, Mapping[str, Any] | None]],
    startup: Mapping[str, RenderedWorkload],
) -> RestartPlan:
    """Match the agent's instances (with their current states) against the startup ones.

    ``running`` are the instances that exist on the agent's runtime (started, not being
    stopped), each with its execution state tree; ``startup`` the rendered startup
    workloads of this agent by name.
    """
    plan = RestartPlan()
    wanted = dict(startup)
    for workload, state in running:
        new = wanted.pop(workload.name, None)
        if new is None:
            plan.deleted.append(workload)
            continue
        is_running = state is not None and state.get("state") == "Running"
        if is_running and new.instance_name == workload.instance_name:
            plan.resumed.append(workload)
        else:
            plan.replaced.append((workload, new))
    plan.created.extend(sorted(wanted.values(), key=lambda w: w.name))
    return plan
