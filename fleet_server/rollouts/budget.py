"""Disruption budgets: at most a share of each label group is being changed at once.

``{"groupBy": "region", "maxUnavailable": "10%"}``: the rollout's cars are grouped by their
``region`` label (cars without it form one group of their own); of each group at most 10%
(at least one car) are in flight at a time. A car held back waits, counted as waiting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet_server.selectors import LabelError, check_key
from fleetctl.rollouts.spec import Amount

NO_GROUP = ""


@dataclass(frozen=True)
class Budget:
    group_by: str
    max_unavailable: Amount

    @classmethod
    def parse(cls, value: Any) -> Budget:
        if not isinstance(value, dict) or set(value) != {"groupBy", "maxUnavailable"}:
            raise ValueError('budget is {"groupBy": "region", "maxUnavailable": "10%"}')
        key = value["groupBy"]
        try:
            check_key(key if isinstance(key, str) else "")
        except LabelError as e:
            raise ValueError(f"budget.groupBy: {e}") from None
        raw = str(value["maxUnavailable"]) if not isinstance(value["maxUnavailable"], bool) else ""
        text = raw.strip()
        percent = text.endswith("%")
        try:
            number = float(text.rstrip("%"))
        except ValueError:
            number = -1
        if (percent and not 0 < number <= 100) or (
            not percent and (number < 1 or number != int(number))
        ):
            raise ValueError("budget.maxUnavailable is a count (at least 1) or a percentage")
        return cls(key, Amount(number, percent))

    def group(self, labels: Mapping[str, str]) -> str:
        return labels.get(self.group_by, NO_GROUP)


class BudgetCheck:
    """For one decision: the group sizes and how many of each are in flight now."""

    def __init__(self, budget: Budget, groups: Mapping[str, str], in_flight: Iterable[str]) -> None:
        """``groups``: every car of the rollout -> its group; ``in_flight``: VINs changing."""
        self.budget = budget
        self._groups = groups
        self._sizes = Counter(groups.values())
        self._busy = Counter(groups.get(vin, NO_GROUP) for vin in in_flight)

    def limit(self, group: str) -> int:
        return self.budget.max_unavailable.of(self._sizes.get(group, 1))

    def take(self, vin: str) -> bool:
        """Whether ``vin`` may start now; if so it counts as in flight from here on."""
        group = self._groups.get(vin, NO_GROUP)
        if self._busy[group] >= self.limit(group):
            return False
        self._busy[group] += 1
        return True

    def why(self, vin: str) -> str:
        group = self._groups.get(vin, NO_GROUP)
        name = f"{self.budget.group_by}={group}" if group else f"no {self.budget.group_by}"
        return f"budget: {self._busy[group]} of {self._sizes[group]} cars ({name}) changing"
