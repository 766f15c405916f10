"""A workload whose ``runtime`` the agent does not know, as Ankaios 1.0.1 handles it.

The agent registers its runtime connectors by name (``agent/src/main.rs``:
``SUPPORTED_RUNTIMES`` = podman, containerd, podman-kube). ``RuntimeManager::add_workload``
gives a workload with any other runtime name an ``UnsupportedRuntime`` connector
(``agent/src/runtime_connectors/unsupported_runtime.rs``): the control loop reports
``Pending(Starting)`` "Triggered at runtime.", creating fails with
``RuntimeError::Unsupported("Unsupported Runtime")``, which is not retried and becomes
``Pending(StartingFailed)`` "Unsupported Runtime" (``workload_control_loop.rs``). Deleting
it finds no workload id: ``Stopping(RequestedAtRuntime)`` then ``Removed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime import PENDING_STARTING, REMOVED, Runtime, starting_failed

if TYPE_CHECKING:
    from ankaios_model.state import RenderedWorkload

# The runtime names an Ankaios 1.0.1 agent registers (all of them by default).
SUPPORTED_RUNTIMES = ("podman", "containerd", "podman-kube")
UNSUPPORTED_RUNTIME = "Unsupported Runtime"


def is_supported(runtime: str) -> bool:
    # Exact, case-sensitive: the agent looks the name up in a HashMap.
    return runtime in SUPPORTED_RUNTIMES


class UnsupportedRuntime(Runtime):
    """Fails every start like Ankaios' ``UnsupportedRuntime``; nothing is ever run."""

    name = "unsupported"

    def start(self, workload: RenderedWorkload, control_interface: Path | None) -> None:
        self._report(workload, PENDING_STARTING)
        self._report(workload, starting_failed(UNSUPPORTED_RUNTIME))

    def stop(self, workload: RenderedWorkload) -> None:
        self._report(workload, REMOVED)

    def shutdown(self) -> None:
        pass
