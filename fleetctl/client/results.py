"""The outcome of a command per car, and of the whole run: what every output format shows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    """The car answered with an error, or a workload it started did not run."""
    TIMEOUT = "timeout"
    """No reply in time, or workloads not running by the end of --wait-timeout."""
    NOT_ATTEMPTED = "not_attempted"
    """The rollout stopped (--max-failures) before this car's wave."""


# Codes fleetctl reports itself; the others are the connector's (fleet_connector.errors).
NO_REPLY = "NO_REPLY"
NOT_RUNNING = "NOT_RUNNING"
WAIT_TIMEOUT = "WAIT_TIMEOUT"
BROKER_REFUSED = "BROKER_REFUSED"
NOT_DELIVERED = "NOT_DELIVERED"
BAD_REPLY = "BAD_REPLY"
"""The car's reply is not JSON, too deep, or not shaped like a reply to the request."""
STOPPED = "ROLLOUT_STOPPED"


@dataclass(frozen=True)
class Instance:
    """One workload instance an apply added, with its execution state as last read."""

    agent: str
    workload: str
    id: str
    state: str = ""
    substate: str = ""
    additional_info: str = ""

    @property
    def mask(self) -> str:
        return f"workloadStates.{self.agent}.{self.workload}.{self.id}"

    def describe(self) -> str:
        if not self.state:
            return f"{self.workload}: no state reported yet"
        info = f": {self.additional_info}" if self.additional_info else ""
        return f"{self.workload}: {self.state} ({self.substate}){info}"

    def to_dict(self) -> dict[str, str]:
        return {
            "agent_name": self.agent,
            "workload_name": self.workload,
            "workload_id": self.id,
            "state": self.state,
            "substate": self.substate,
            "additional_info": self.additional_info,
        }


@dataclass
class CarResult:
    vin: str
    status: Status
    reply: Any = None
    """The connector's reply data on success (for apply also when a --wait failed)."""
    code: str | None = None
    message: str = ""
    request_id: str | None = None
    seconds: float | None = None
    """From publishing the request to its reply."""
    workloads: list[Instance] | None = None
    """With --wait: the instances waited for, with their last known state."""
    logs: dict[str, list[str]] | None = None
    """With --wait: the last log lines of workloads that failed, by workload."""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "vin": self.vin,
            "status": str(self.status),
            "request_id": self.request_id,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "reply": self.reply,
            "error": None if self.code is None else {"code": self.code, "message": self.message},
            "workloads": None if self.workloads is None else [w.to_dict() for w in self.workloads],
            **({"logs": self.logs} if self.logs else {}),
        }


@dataclass
class RunResult:
    """A command over a set of cars; ``cars`` keeps the order the cars were named in."""

    command: str
    cars: list[CarResult]
    waves: int = 1
    stopped_after_wave: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(car.ok for car in self.cars)

    def count(self, status: Status) -> int:
        return sum(1 for car in self.cars if car.status is status)

    @property
    def not_attempted(self) -> list[str]:
        return [car.vin for car in self.cars if car.status is Status.NOT_ATTEMPTED]

    def summary(self) -> dict[str, int]:
        counts = {"total": len(self.cars)}
        counts.update({str(status): self.count(status) for status in Status})
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            **self.extra,
            "summary": self.summary(),
            "waves": self.waves,
            "stopped_after_wave": self.stopped_after_wave,
            "not_attempted": self.not_attempted,
            "cars": [car.to_dict() for car in self.cars],
        }
