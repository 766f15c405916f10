"""A recorded rollout as people and scripts see it: ``rollout status``, ``list`` and the end
of a run (a table, or JSON / YAML with the same content)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fleetctl import output
from fleetctl.rollouts import spec as rollout_spec
from fleetctl.rollouts.records import (
    INTERRUPTED,
    RUNNING,
    Records,
    Rollout,
    owned_by_a_live_process,
)


def summary(records: Records, rollout: Rollout) -> dict[str, Any]:
    cars = records.cars(rollout.id)
    states = Counter(car.state for car in cars)
    kinds = Counter(car.kind for car in cars if car.kind)
    waves: dict[int, Counter[str]] = {}
    for car in cars:
        waves.setdefault(car.wave, Counter())[car.state] += 1
    canary = bool(rollout.spec.canary)
    return {
        "id": rollout.id,
        "file": rollout.source,
        "operation": rollout.operation,
        "status": _shown_status(rollout),
        "reason": rollout.reason,
        "totals": {
            "cars": len(cars),
            **{s: states.get(s, 0) for s in ("ok", "failed", "offline", "sent", "pending")},
        },
        "failures": {kind: kinds.get(kind, 0) for kind in rollout_spec.FAILURE_KINDS},
        "waves": [
            {
                "wave": "canary" if canary and number == 0 else number + (0 if canary else 1),
                **dict(sorted(counts.items())),
            }
            for number, counts in sorted(waves.items())
        ],
        "cars": [
            {
                "vin": car.vin,
                "wave": car.wave,
                "state": car.state,
                "attempt": car.attempt,
                "request_id": car.request_id,
                "error": None
                if car.code is None
                else {"code": car.code, "kind": car.kind, "message": car.message},
            }
            for car in cars
        ],
    }


def _shown_status(rollout: Rollout) -> str:
    """``interrupted`` for a rollout recorded as running whose process is gone."""
    if rollout.status == RUNNING and not owned_by_a_live_process(rollout.owner_pid):
        return INTERRUPTED
    return rollout.status


def render(records: Records, rollout: Rollout, fmt: str) -> str:
    data = summary(records, rollout)
    if fmt != "table":
        return output.dump(data, fmt)
    rows: list[list[str]] = [["VIN", "WAVE", "STATE", "DETAIL"]]
    canary = bool(rollout.spec.canary)
    for car in data["cars"]:
        wave = "canary" if canary and car["wave"] == 0 else str(car["wave"] + (0 if canary else 1))
        error = car["error"]
        detail = "" if error is None else f"{error['code']}: {error['message']}"
        rows.append([car["vin"], wave, car["state"], detail])
    totals = data["totals"]
    line = f"rollout {rollout.id}: {data['status']}" + (
        f" ({rollout.reason})" if rollout.reason else ""
    )
    counts = ", ".join(f"{n} {state}" for state, n in totals.items() if n and state != "cars")
    return output.table(rows) + f"\n{line}\n{totals['cars']} car(s): {counts}"


def render_list(records: Records, fmt: str) -> str:
    rollouts = [r for r in (records.get(i) for i in records.ids()) if r is not None]
    data = [
        {k: v for k, v in summary(records, r).items() if k not in ("cars", "waves")}
        for r in rollouts
    ]
    if fmt != "table":
        return output.dump({"rollouts": data}, fmt)
    if not data:
        return "no rollouts"
    rows = [["ID", "STATUS", "CARS", "OK", "FAILED", "OFFLINE", "FILE"]]
    for item in data:
        totals = item["totals"]
        rows.append(
            [
                item["id"],
                item["status"],
                str(totals["cars"]),
                str(totals["ok"]),
                str(totals["failed"]),
                str(totals["offline"]),
                item["file"],
            ]
        )
    return output.table(rows)
