"""Add and delete conditions between workloads, as Ankaios 1.0.1 derives and checks them.

* Add conditions are the workloads' ``dependencies`` (``ADD_COND_*``): a workload starts
  once, for each dependency, *some* instance of it is in the wanted state.
* Delete conditions are derived by the server (``server/src/ankaios_server/delete_graph.rs``):
  when a workload B is added with ``A: ADD_COND_RUNNING``, the entry A -> {B:
  ``DEL_COND_NOT_PENDING_NOR_RUNNING``} goes into the delete graph; ``ADD_COND_SUCCEEDED``
  and ``ADD_COND_FAILED`` create none. A deleted instance of A (also the old instance of an
  update) carries the graph's conditions of A to the agent, which holds the deletion back
  until *every* instance of each B is neither pending nor running; ``Pending(WaitingToStart)``
  counts as fulfilled, and a B without any state fulfils it trivially
  (``agent/src/workload_scheduler/dependency_state_validator.rs``).
* The graph entry of A is dropped as soon as *any* instance of A is reported ``Removed``
  (``remove_deleted_workloads_from_delete_graph``), also the old instance of an update; it
  comes back only when a dependent B is added (again). Kept as in Ankaios.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ankaios_model.state import RenderedWorkload

ADD_COND_RUNNING = "ADD_COND_RUNNING"
DEL_COND_NOT_PENDING_NOR_RUNNING = "DEL_COND_NOT_PENDING_NOR_RUNNING"
# Exists in the proto; Ankaios 1.0.1's server never creates it.
DEL_COND_RUNNING = "DEL_COND_RUNNING"

# (state, subState) that fulfils each add condition (is_running / is_succeeded /
# is_failed in ankaios_api/src/ank_base/workload_state.rs: only these substates).
_ADD_CONDITION_STATES = {
    ADD_COND_RUNNING: ("Running", "Ok"),
    "ADD_COND_SUCCEEDED": ("Succeeded", "Ok"),
    "ADD_COND_FAILED": ("Failed", "ExecFailed"),
}

StateTree = Mapping[str, Any]
"""One execution state in tree form: ``{"state": ..., "subState": ..., ...}``."""


def _key(state: StateTree) -> tuple[Any, Any]:
    return state.get("state"), state.get("subState")


def add_condition_met(condition: str, states: Iterable[StateTree]) -> bool:
    """Some instance of the dependency is in the wanted state (unknown conditions hold)."""
    wanted = _ADD_CONDITION_STATES.get(condition)
    return wanted is None or any(_key(s) == wanted for s in states)


def _delete_condition_met_by(condition: str, state: StateTree) -> bool:
    if _key(state) == ("Pending", "WaitingToStart"):
        return True
    if condition == DEL_COND_RUNNING:
        return _key(state) == ("Running", "Ok")
    # DEL_COND_NOT_PENDING_NOR_RUNNING: any Pending substate, or Running(Ok).
    return state.get("state") != "Pending" and _key(state) != ("Running", "Ok")


def delete_condition_met(condition: str, states: Iterable[StateTree]) -> bool:
    """Every instance of the dependent workload allows the deletion (none: it holds)."""
    return all(_delete_condition_met_by(condition, s) for s in states)


class DeleteGraph:
    """The server's delete graph: workload -> {dependent workload: delete condition}."""

    def __init__(self) -> None:
        self._graph: dict[str, dict[str, str]] = {}

    def insert(self, added: Sequence[RenderedWorkload]) -> None:
        """Record the delete conditions the added workloads' dependencies imply."""
        for workload in added:
            for dependency, condition in workload.dependencies.items():
                # Ankaios: other add conditions let the dependency go at once.
                if str(condition) == ADD_COND_RUNNING:
                    self._graph.setdefault(dependency, {})[workload.name] = (
                        DEL_COND_NOT_PENDING_NOR_RUNNING
                    )

    def conditions_for(self, workload_name: str) -> dict[str, str]:
        """The delete conditions a deleted instance of ``workload_name`` carries."""
        return dict(self._graph.get(workload_name, {}))

    def removed(self, workload_name: str) -> None:
        """An instance of ``workload_name`` was reported Removed: forget its entry."""
        self._graph.pop(workload_name, None)

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {name: dict(dependents) for name, dependents in self._graph.items()}
