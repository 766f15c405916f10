"""``rollback --dry-run``: what a rollback would put back, from each car's journal (history).

The car chooses the change to undo by the rules of
:func:`fleet_connector.journal.rollback.plan`; they are applied here to the history's
summaries (which carry the same fields), so that nothing is changed to find out. A car whose
rollback would be refused (nothing to undo, already undone, superseded) counts as failed,
with the reason the car would give.
"""

from __future__ import annotations

from typing import Any

from fleetctl.client.results import CarResult, RunResult, Status

WOULD_BE_INVALID = "WOULD_BE_INVALID"
# Outcomes of a change that may have taken effect (the journal's rule).
_TOOK_EFFECT = ("OK", "TIMEOUT", "PENDING")


def judge(result: RunResult, selector: dict[str, Any]) -> None:
    """Turns each car's history reply into the rollback it would do (``reply``), or a failure."""
    for car in result.cars:
        if not car.ok:
            continue
        entries = car.reply.get("entries") if isinstance(car.reply, dict) else None
        if not isinstance(entries, list):
            entries = []
        entries = [e for e in entries if isinstance(e, dict)]
        plan, refusal = _plan([*entries], selector)
        if refusal is not None:
            car.status, car.code, car.message = Status.FAILED, WOULD_BE_INVALID, refusal
            car.reply = None
        else:
            car.reply = plan


def _plan(
    entries: list[dict[str, Any]], selector: dict[str, Any]
) -> tuple[dict[str, Any], None] | tuple[None, str]:
    if "entry" in selector:
        target = next((e for e in entries if e.get("entry") == selector["entry"]), None)
        if target is None:
            return None, f"the journal has no entry {selector['entry']}"
    elif "request_id" in selector:
        target = next((e for e in entries if e.get("request_id") == selector["request_id"]), None)
        if target is None:
            return None, f"the journal has no entry for request id {selector['request_id']!r}"
    else:
        # Newest first: the newest change that may have taken effect and was not undone.
        target = next((e for e in entries if _undoable(e)), None)
        if target is None:
            return None, "the journal holds no change to roll back"
    seq = target.get("entry")
    if target.get("operation") not in ("apply", "delete"):
        return None, f"entry {seq} is a {target.get('operation')}, not a change to roll back"
    if target.get("rolled_back_by") is not None:
        return None, f"entry {seq} was already rolled back by entry {target['rolled_back_by']}"
    if target.get("outcome") not in _TOOK_EFFECT:
        return None, (
            f"entry {seq} changed nothing (it was answered {target.get('outcome')}); "
            "there is nothing to roll back"
        )
    touched = _names(target)
    for later in entries:
        if isinstance(later.get("entry"), int) and isinstance(seq, int) and later["entry"] > seq:
            shared = sorted(touched & _names(later)) if _undoable(later) else []
            if shared:
                names = ", ".join(name for _, name in shared)
                return None, (
                    f"entry {seq} is superseded: entry {later['entry']} changed {names} after "
                    f"it; roll back entry {later['entry']} first"
                )
    replaced = target.get("replaced")
    if not isinstance(replaced, dict):
        replaced = {}
    plan: dict[str, Any] = {
        "would_undo": {
            k: target.get(k) for k in ("entry", "request_id", "operation", "received_at")
        }
    }
    for kind in ("workloads", "configs"):
        before = set(replaced.get(kind) or [])
        plan[kind] = {
            name: "put back" if name in before else "delete"
            for k, name in sorted(touched)
            if k == kind
        }
    return plan, None


def _undoable(entry: dict[str, Any]) -> bool:
    return (
        entry.get("operation") in ("apply", "delete")
        and entry.get("rolled_back_by") is None
        and entry.get("outcome") in _TOOK_EFFECT
    )


def _names(entry: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (kind, str(name)) for kind in ("workloads", "configs") for name in entry.get(kind) or []
    }


def details(car: CarResult) -> list[str]:
    """Table lines for one car's planned rollback."""
    if car.code is not None:
        return [f"{car.code}: {car.message}"]
    plan = car.reply if isinstance(car.reply, dict) else {}
    undo = plan.get("would_undo") or {}
    lines = [
        f"would undo #{undo.get('entry')} {undo.get('operation')} of "
        f"{undo.get('received_at')} (id={undo.get('request_id')})"
    ]
    for kind, singular in (("workloads", "workload"), ("configs", "config")):
        for name, action in (plan.get(kind) or {}).items():
            lines.append(
                f"{singular} {name}: "
                + (
                    "comes back as it was before"
                    if action == "put back"
                    else "deleted (it added it)"
                )
            )
    return lines
