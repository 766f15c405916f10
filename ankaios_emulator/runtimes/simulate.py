"""States only: every workload walks Pending(Starting) -> Running(Ok) on a fixed step."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime import PENDING_STARTING, REMOVED, RUNNING, Runtime, StateSink
from ..scheduler import Scheduler

if TYPE_CHECKING:
    from ankaios_model.state import RenderedWorkload


class SimulateRuntime(Runtime):
    """Deterministic and fast, for tests; nothing is executed."""

    name = "simulate"

    def __init__(self, report: StateSink, scheduler: Scheduler, step_delay: float) -> None:
        super().__init__(report)
        self._scheduler = scheduler
        self._step = step_delay
        self._lock = threading.Lock()
        # Bumped on stop so a pending "Running" step of a stopped instance is dropped.
        self._generation: dict[str, int] = {}

    def start(self, workload: RenderedWorkload, control_interface: Path | None) -> None:
        name = workload.instance_name
        with self._lock:
            generation = self._generation.get(name, 0) + 1
            self._generation[name] = generation
        self.log_buffer(name).append(f"[simulate] starting {name}")

        def step(state_index: int) -> None:
            with self._lock:
                if self._generation.get(name) != generation:
                    return
            if state_index == 0:
                self._report(workload, PENDING_STARTING)
                self._scheduler.call_later(self._step, lambda: step(1))
            else:
                self._report(workload, RUNNING)
                self.log_buffer(name).append(f"[simulate] {name} is running")

        self._scheduler.call_later(self._step, lambda: step(0))

    def stop(self, workload: RenderedWorkload) -> None:
        name = workload.instance_name
        with self._lock:
            self._generation[name] = self._generation.get(name, 0) + 1

        def removed() -> None:
            self.close_logs(name)
            self._report(workload, REMOVED)

        self._scheduler.call_later(self._step, removed)

    def shutdown(self) -> None:
        with self._lock:
            self._generation.clear()
