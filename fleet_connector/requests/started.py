"""Which workloads an apply would start or restart, rendered as Ankaios will run them.

The policy judges these, not the manifest's text: a workload's ``runtimeConfig`` and
``agent`` are handlebars templates rendered with the configs in effect after the update
(those already in the car and those the manifest changes), and a config-only apply
re-renders, and so restarts, every workload that uses a changed config. The current
state is read from Ankaios and the update replayed on the server model that
:mod:`fleet_connector.requests.plan` uses, so the answer follows the Ankaios server's own rules.
"""

from __future__ import annotations

from collections.abc import Callable

from ankaios_sdk._protos import _ank_base

from ankaios_model.rendering import RenderedWorkload
from ankaios_model.state import UpdateError
from ankaios_model.workload_images import CannotTell
from fleet_connector.errors import RequestError
from fleet_connector.requests.plan import CurrentStateError, server_model


def started_workloads(
    read_state: Callable[[], _ank_base.CompleteState],
    state: _ank_base.CompleteState,
    masks: list[str],
) -> list[RenderedWorkload]:
    """The rendered workloads an update (an apply's, a rollback's, a reconcile's) creates or
    replaces; raises :class:`CannotTell` when the car's state cannot be read or the update
    cannot be followed."""
    try:
        current = read_state()
    except RequestError as e:
        raise CannotTell(
            f"reading desiredState.workloads and desiredState.configs from Ankaios failed "
            f"({e.code}: {e.message})"
        ) from None
    try:
        model = server_model(current)
    except CurrentStateError as e:
        raise CannotTell(f"the car's state could not be modelled: {e}") from None
    before = model.rendered()
    try:
        model.update(state, masks)
    except UpdateError as e:
        raise CannotTell(f"Ankaios would not take the update as it is: {e}") from None
    after = model.rendered()
    return [workload for name, workload in sorted(after.items()) if before.get(name) != workload]
