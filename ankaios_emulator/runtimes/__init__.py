"""Runtime implementations selectable with ``--runtime``."""

from __future__ import annotations

from pathlib import Path

from ..runtime import Runtime, StateSink
from ..scheduler import Scheduler
from .podman import PodmanRuntime
from .process import STOP_GRACE_S, ProcessRuntime
from .simulate import SimulateRuntime
from .unsupported import (
    KUBE_FILES_UNSUPPORTED,
    SUPPORTED_RUNTIMES,
    UnsupportedRuntime,
    is_supported,
)

RUNTIME_NAMES = ("simulate", "process", "podman")


def create_runtime(
    name: str,
    report: StateSink,
    scheduler: Scheduler,
    *,
    step_delay: float,
    image_map: dict[str, list[str]] | None = None,
    work_dir: Path | None = None,
    stop_grace: float = STOP_GRACE_S,
) -> Runtime:
    if name == "simulate":
        return SimulateRuntime(report, scheduler, step_delay)
    if name == "process":
        return ProcessRuntime(
            report, scheduler, image_map or {}, work_dir=work_dir, stop_grace=stop_grace
        )
    if name == "podman":
        return PodmanRuntime(report, scheduler)
    raise ValueError(f"unknown runtime '{name}' (choose from {', '.join(RUNTIME_NAMES)})")


__all__ = [
    "KUBE_FILES_UNSUPPORTED",
    "RUNTIME_NAMES",
    "STOP_GRACE_S",
    "SUPPORTED_RUNTIMES",
    "PodmanRuntime",
    "ProcessRuntime",
    "SimulateRuntime",
    "UnsupportedRuntime",
    "create_runtime",
    "is_supported",
]
