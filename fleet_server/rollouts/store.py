"""Rollouts in the database: every change in one transaction with its audit entry.

The engine's writes are fenced by the lease (lease.py): a car is marked sent only while the
rollout is ``running`` and this instance holds an unexpired lease, in the same statement, so
an instance that lost its lease (or a rollout aborted meanwhile) sends nothing. Results of
cars already in flight are recorded whatever the rollout's state (a car in flight finishes),
but only by the lease holder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleet_server import audit
from fleet_server.db import Database
from fleet_server.db.database import Row, Transaction

RUNNING = "running"
PAUSED = "paused"
WAITING = "waiting"
DONE = "done"
DONE_WITH_FAILURES = "done-with-failures"
ABORTED = "aborted"
ACTIVE = (RUNNING, PAUSED, WAITING)
FINAL = (DONE, DONE_WITH_FAILURES, ABORTED)
ROLLOUT_STATES = (*ACTIVE, *FINAL)

PENDING = "pending"
SENT = "sent"
SUCCEEDED = "succeeded"
FAILED = "failed"
ROLLED_BACK = "rolled_back"
SKIPPED = "skipped"
CAR_STATES = (PENDING, SENT, SUCCEEDED, FAILED, ROLLED_BACK, SKIPPED)
CAR_FINAL = (SUCCEEDED, FAILED, ROLLED_BACK, SKIPPED)
FAILURES = (FAILED, ROLLED_BACK)


class Conflict(Exception):
    """The action does not fit the rollout's state (e.g. resuming an aborted one)."""


@dataclass
class CarRow:
    vin: str
    wave: int
    state: str
    attempt: int = 0
    request_id: str | None = None
    joined_late: bool = False
    waiting: str | None = None
    kind: str | None = None
    code: str | None = None
    message: str | None = None
    detail: dict[str, Any] | None = None
    sent_at: float | None = None
    finished_at: float | None = None
    payload: str | None = None
    """The signed request of this attempt, if signed (sent again byte for byte)."""

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"vin": self.vin, "state": self.state, "wave": self.wave}
        for key in ("request_id", "waiting", "kind", "code", "message"):
            value = getattr(self, key)
            if value is not None:
                found[key] = value
        if self.attempt:
            found["attempt"] = self.attempt
        if self.joined_late:
            found["joined_late"] = True
        if self.detail:
            found.update(self.detail)
        return found


@dataclass
class RolloutRow:
    id: str
    name: str
    spec: dict[str, Any]
    state: str
    reason: str | None
    stage: int
    waiting: str | None
    approvals: list[dict[str, Any]]
    created_by: str
    created_at: float
    updated_at: float
    finished_at: float | None
    first_sent_at: float | None
    sent_count: int
    cars: list[CarRow] = field(default_factory=list)


_ROLLOUT_COLUMNS = (
    "id, name, spec, state, reason, stage, waiting, approvals, created_by, created_at, "
    "updated_at, finished_at, first_sent_at, sent_count"
)
_CAR_COLUMNS = (
    "vin, wave, state, attempt, request_id, joined_late, waiting, kind, code, message, detail, "
    "sent_at, finished_at, payload"
)


def _rollout(row: Row) -> RolloutRow:
    return RolloutRow(
        id=row[0],
        name=row[1] or "",
        spec=json.loads(row[2]),
        state=row[3],
        reason=row[4],
        stage=int(row[5]),
        waiting=row[6],
        approvals=json.loads(row[7]),
        created_by=row[8],
        created_at=float(row[9]),
        updated_at=float(row[10]),
        finished_at=row[11],
        first_sent_at=row[12],
        sent_count=int(row[13]),
    )


def _car(row: Row) -> CarRow:
    return CarRow(
        vin=row[0],
        wave=int(row[1]),
        state=row[2],
        attempt=int(row[3]),
        request_id=row[4],
        joined_late=bool(row[5]),
        waiting=row[6],
        kind=row[7],
        code=row[8],
        message=row[9],
        detail=json.loads(row[10]) if row[10] else None,
        sent_at=row[11],
        finished_at=row[12],
        payload=row[13],
    )


def request_id(rollout_id: str, vin: str, attempt: int) -> str:
    """Stable per car and attempt: whoever sends it (again) sends the same id."""
    return f"{rollout_id}-{vin}-{attempt}"


# -- reading -------------------------------------------------------------------------------


def load(db: Database, rollout_id: str) -> RolloutRow | None:
    with db.transaction(write=False) as tx:
        row = tx.execute(
            f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?",  # noqa: S608
            (rollout_id,),
        ).fetchone()
        if row is None:
            return None
        rollout = _rollout(row)
        rollout.cars = [
            _car(r)
            for r in tx.execute(
                f"SELECT {_CAR_COLUMNS} FROM rollout_cars WHERE rollout_id = ? "  # noqa: S608
                "ORDER BY wave, vin",
                (rollout_id,),
            ).fetchall()
        ]
    return rollout


def listing(db: Database, *, limit: int = 100, offset: int = 0) -> tuple[list[RolloutRow], int]:
    with db.transaction(write=False) as tx:
        rows = tx.execute(
            f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_at DESC, id "  # noqa: S608
            "LIMIT ? OFFSET ?",
            (limit, offset),
        ).fetchall()
        total = tx.execute("SELECT count(*) FROM rollouts").fetchone()
        counts: dict[str, dict[str, int]] = {}
        ids = [r[0] for r in rows]
        if ids:
            marks = ", ".join("?" * len(ids))
            for rid, state, count in tx.execute(
                "SELECT rollout_id, state, count(*) FROM rollout_cars "  # noqa: S608
                f"WHERE rollout_id IN ({marks}) GROUP BY rollout_id, state",
                ids,
            ).fetchall():
                counts.setdefault(rid, {})[state] = int(count)
    found = []
    for row in rows:
        rollout = _rollout(row)
        rollout.cars = []
        rollout.spec = {"counts": counts.get(rollout.id, {}), **rollout.spec}
        found.append(rollout)
    return found, int(total[0]) if total else 0


def active_ids(db: Database) -> list[str]:
    with db.transaction(write=False) as tx:
        rows = tx.execute(
            "SELECT id FROM rollouts WHERE state IN (?, ?, ?) ORDER BY created_at", ACTIVE
        ).fetchall()
    return [r[0] for r in rows]


def state_counts(db: Database) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Rollouts by state, and the cars of active rollouts by rollout and state (metrics)."""
    with db.transaction(write=False) as tx:
        rollouts = {
            r[0]: int(r[1])
            for r in tx.execute("SELECT state, count(*) FROM rollouts GROUP BY state").fetchall()
        }
        cars: dict[str, dict[str, int]] = {}
        for rid, state, count in tx.execute(
            "SELECT c.rollout_id, c.state, count(*) FROM rollout_cars c JOIN rollouts r "
            "ON r.id = c.rollout_id WHERE r.state IN (?, ?, ?) GROUP BY c.rollout_id, c.state",
            ACTIVE,
        ).fetchall():
            cars.setdefault(rid, {})[state] = int(count)
    return rollouts, cars


# -- creating and operators' actions -------------------------------------------------------


def create(
    db: Database,
    *,
    rollout_id: str,
    name: str,
    spec: dict[str, Any],
    waves: Sequence[Sequence[str]],
    actor: str,
    now: float,
) -> None:
    with db.transaction() as tx:
        tx.execute(
            "INSERT INTO rollouts (id, name, spec, state, stage, approvals, created_by, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, 0, '[]', ?, ?, ?)",
            (rollout_id, name, json.dumps(spec), RUNNING, actor, now, now),
        )
        tx.executemany(
            "INSERT INTO rollout_cars (rollout_id, vin, wave, state) VALUES (?, ?, ?, ?)",
            [
                (rollout_id, vin, number, PENDING)
                for number, wave in enumerate(waves)
                for vin in wave
            ],
        )
        tx.execute(
            "INSERT INTO rollout_leases (rollout_id, owner, expires_at) VALUES (?, NULL, 0)",
            (rollout_id,),
        )
        vins = [vin for wave in waves for vin in wave]
        audit.append(
            tx,
            actor=actor,
            action="rollout.create",
            vins=vins,
            detail={
                "rollout": rollout_id,
                "name": name,
                "state": RUNNING,
                "cars": len(vins),
                "waves": [len(w) for w in waves],
            },
        )


def _locked(tx: Transaction, rollout_id: str) -> tuple[str, list[dict[str, Any]]] | None:
    row = tx.execute(
        "SELECT state, approvals FROM rollouts WHERE id = ?" + tx.dialect.for_update,  # noqa: S608
        (rollout_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), json.loads(row[1]))


def operator_action(
    db: Database, rollout_id: str, action: str, *, actor: str, now: float, stage: int | None = None
) -> str:
    """pause, resume, abort or approve; returns the new state. KeyError: no such rollout;
    Conflict: not in a state that allows it (a finished or aborted rollout allows nothing)."""
    with db.transaction() as tx:
        found = _locked(tx, rollout_id)
        if found is None:
            raise KeyError(rollout_id)
        state, approvals = found
        if state in FINAL:
            raise Conflict(
                f"rollout {rollout_id} is {state}, which is final: it cannot be {action}d; "
                "start a new rollout (GET it for the same spec with the remaining cars)"
            )
        detail: dict[str, Any] = {"rollout": rollout_id, "from": state}
        new = state
        if action == "pause":
            new = PAUSED
        elif action == "resume":
            if state != PAUSED:
                raise Conflict(f"rollout {rollout_id} is {state}, not paused")
            new = RUNNING
        elif action == "abort":
            new = ABORTED
        elif action == "approve":
            assert stage is not None
            if any(a.get("stage") == stage for a in approvals):
                raise Conflict(f"stage {stage} of rollout {rollout_id} is approved already")
            approvals.append({"stage": stage, "by": actor, "at": now})
            detail["stage"] = stage
            tx.execute(
                "UPDATE rollouts SET approvals = ? WHERE id = ?",
                (json.dumps(approvals), rollout_id),
            )
        else:
            raise ValueError(action)
        detail["state"] = new
        fields = "state = ?, updated_at = ?"
        params: list[Any] = [new, now]
        if new == ABORTED:
            fields += ", finished_at = ?, reason = ?, waiting = NULL"
            params += [now, f"aborted by {actor}"]
            skipped = _skip_pending(tx, rollout_id, f"the rollout was aborted by {actor}")
            detail["skipped"] = len(skipped)
        tx.execute(f"UPDATE rollouts SET {fields} WHERE id = ?", (*params, rollout_id))  # noqa: S608
        audit.append(tx, actor=actor, action=f"rollout.{action}", detail=detail)
    return new


def _skip_pending(tx: Transaction, rollout_id: str, why: str) -> list[str]:
    vins = [
        r[0]
        for r in tx.execute(
            "SELECT vin FROM rollout_cars WHERE rollout_id = ? AND state = ?",
            (rollout_id, PENDING),
        ).fetchall()
    ]
    tx.execute(
        "UPDATE rollout_cars SET state = ?, message = ?, waiting = NULL "
        "WHERE rollout_id = ? AND state = ?",
        (SKIPPED, why, rollout_id, PENDING),
    )
    return vins


# -- the engine's writes, fenced by the lease ----------------------------------------------

_HOLDS = (
    "EXISTS (SELECT 1 FROM rollout_leases WHERE rollout_id = ? AND owner = ? AND expires_at > ?)"
)


def _holds(tx: Transaction, rollout_id: str, owner: str, now: float) -> bool:
    row = tx.execute(
        "SELECT 1 FROM rollout_leases WHERE rollout_id = ? AND owner = ? AND expires_at > ?",
        (rollout_id, owner, now),
    ).fetchone()
    return row is not None


def claim_send(
    db: Database,
    rollout_id: str,
    vin: str,
    *,
    owner: str,
    actor: str,
    now: float,
    sign: Callable[[Transaction], bytes] | None = None,
    key_id: str | None = None,
) -> tuple[str, bytes | None] | None:
    """Marks a pending car sent with its request id (and its signed request, made with
    ``sign`` in this transaction); None if it may not be sent (the rollout is no longer
    running, the lease is not ours, the car is not pending)."""
    with db.transaction() as tx:
        row = tx.execute(
            "SELECT attempt FROM rollout_cars WHERE rollout_id = ? AND vin = ? AND state = ?"  # noqa: S608
            + tx.dialect.for_update,
            (rollout_id, vin, PENDING),
        ).fetchone()
        if row is None:
            return None
        attempt = int(row[0]) + 1
        rid = request_id(rollout_id, vin, attempt)
        payload = sign(tx) if sign is not None else None
        tx.execute(
            "UPDATE rollout_cars SET state = ?, attempt = ?, request_id = ?, sent_at = ?, "  # noqa: S608
            "payload = ?, waiting = NULL WHERE rollout_id = ? AND vin = ? AND state = ? "
            "AND EXISTS (SELECT 1 FROM rollouts WHERE id = ? AND state IN (?, ?)) "
            f"AND {_HOLDS}",
            (
                SENT,
                attempt,
                rid,
                now,
                None if payload is None else payload.decode(),
                rollout_id,
                vin,
                PENDING,
                rollout_id,
                RUNNING,
                WAITING,
                rollout_id,
                owner,
                now,
            ),
        )
        if tx.rowcount != 1:
            return None
        tx.execute(
            "UPDATE rollouts SET sent_count = sent_count + 1, updated_at = ?, "
            "first_sent_at = CASE WHEN first_sent_at IS NULL THEN ? ELSE first_sent_at END "
            "WHERE id = ?",
            (now, now, rollout_id),
        )
        audit.append(
            tx,
            actor=actor,
            action="rollout.car.sent",
            vins=[vin],
            request_ids=[rid],
            key_id=key_id if payload is not None else None,
            detail={"rollout": rollout_id, "state": SENT, "attempt": attempt},
        )
    return rid, payload


def new_attempt(
    db: Database,
    rollout_id: str,
    vin: str,
    *,
    owner: str,
    actor: str,
    now: float,
    sign: Callable[[Transaction], bytes],
    key_id: str,
) -> tuple[str, bytes] | None:
    """The next attempt of a car still ``sent`` whose signed request ran out before the car
    got it: a new request id and a new signature; None unless the lease is ours."""
    with db.transaction() as tx:
        if not _holds(tx, rollout_id, owner, now):
            return None
        row = tx.execute(
            "SELECT attempt FROM rollout_cars WHERE rollout_id = ? AND vin = ? AND state = ?"  # noqa: S608
            + tx.dialect.for_update,
            (rollout_id, vin, SENT),
        ).fetchone()
        if row is None:
            return None
        attempt = int(row[0]) + 1
        rid = request_id(rollout_id, vin, attempt)
        payload = sign(tx)
        tx.execute(
            "UPDATE rollout_cars SET attempt = ?, request_id = ?, sent_at = ?, payload = ? "
            "WHERE rollout_id = ? AND vin = ?",
            (attempt, rid, now, payload.decode(), rollout_id, vin),
        )
        audit.append(
            tx,
            actor=actor,
            action="rollout.car.sent",
            vins=[vin],
            request_ids=[rid],
            key_id=key_id,
            detail={
                "rollout": rollout_id,
                "state": SENT,
                "attempt": attempt,
                "reason": "the previous attempt's signature ran out before the car got it",
            },
        )
    return rid, payload


def record_car(
    db: Database,
    rollout_id: str,
    vin: str,
    *,
    state: str,
    owner: str,
    actor: str,
    now: float,
    expect: Iterable[str] = (SENT,),
    kind: str | None = None,
    code: str | None = None,
    message: str | None = None,
    detail: dict[str, Any] | None = None,
    request_ids: Sequence[str] = (),
) -> bool:
    """A car's new state (succeeded, failed, rolled_back), if it is in one of ``expect``
    and the lease is ours."""
    expected = tuple(expect)
    with db.transaction() as tx:
        if not _holds(tx, rollout_id, owner, now):
            return False
        marks = ", ".join("?" * len(expected))
        tx.execute(
            "UPDATE rollout_cars SET state = ?, kind = ?, code = ?, message = ?, detail = ?, "  # noqa: S608
            "finished_at = ?, waiting = NULL "
            f"WHERE rollout_id = ? AND vin = ? AND state IN ({marks})",
            (
                state,
                kind,
                code,
                message,
                json.dumps(detail) if detail else None,
                now,
                rollout_id,
                vin,
                *expected,
            ),
        )
        if tx.rowcount != 1:
            return False
        tx.execute("UPDATE rollouts SET updated_at = ? WHERE id = ?", (now, rollout_id))
        entry: dict[str, Any] = {"rollout": rollout_id, "state": state}
        for key, value in (("kind", kind), ("code", code), ("message", message)):
            if value is not None:
                entry[key] = value[:500] if isinstance(value, str) else value
        audit.append(
            tx,
            actor=actor,
            action=f"rollout.car.{state}",
            vins=[vin],
            request_ids=list(request_ids),
            detail=entry,
        )
    return True


def set_waiting(
    db: Database, rollout_id: str, reasons: dict[str, str | None], *, owner: str, now: float
) -> None:
    """Why pending cars wait (offline, gate, budget, window); not audited: not a state."""
    with db.transaction() as tx:
        if not _holds(tx, rollout_id, owner, now):
            return
        tx.executemany(
            "UPDATE rollout_cars SET waiting = ? WHERE rollout_id = ? AND vin = ?",
            [(why, rollout_id, vin) for vin, why in reasons.items()],
        )


def add_cars(
    db: Database,
    rollout_id: str,
    vins: Sequence[str],
    wave: int,
    *,
    owner: str,
    actor: str,
    now: float,
) -> list[str]:
    """Late joiners, pending in ``wave``; returns those added."""
    with db.transaction() as tx:
        if not _holds(tx, rollout_id, owner, now):
            return []
        known = {
            r[0]
            for r in tx.execute(
                "SELECT vin FROM rollout_cars WHERE rollout_id = ?", (rollout_id,)
            ).fetchall()
        }
        new = [v for v in vins if v not in known]
        tx.executemany(
            "INSERT INTO rollout_cars (rollout_id, vin, wave, state, joined_late) "
            "VALUES (?, ?, ?, ?, 1)",
            [(rollout_id, vin, wave, PENDING) for vin in new],
        )
        if new:
            audit.append(
                tx,
                actor=actor,
                action="rollout.car.joined",
                vins=new,
                detail={"rollout": rollout_id, "state": PENDING, "wave": wave},
            )
    return new


def set_rollout(
    db: Database,
    rollout_id: str,
    *,
    owner: str,
    actor: str,
    now: float,
    state: str | None = None,
    reason: str | None = None,
    stage: int | None = None,
    waiting: str | None = None,
    skip_pending: str | None = None,
) -> bool:
    """The engine's change of an active rollout (state, stage, waiting); audited when the
    state or stage changes. Never overrides an operator's pause or abort."""
    with db.transaction() as tx:
        row = tx.execute(
            "SELECT state, stage, waiting, reason FROM rollouts WHERE id = ?"  # noqa: S608
            + tx.dialect.for_update,
            (rollout_id,),
        ).fetchone()
        if row is None or row[0] not in ACTIVE or not _holds(tx, rollout_id, owner, now):
            return False
        current, current_stage = str(row[0]), int(row[1])
        if current == PAUSED and state in (RUNNING, WAITING):
            state = None  # an operator paused it; only resume ends that
        new_state = state or current
        new_stage = current_stage if stage is None else stage
        changed = new_state != current or new_stage != current_stage
        if not changed and waiting == row[2] and (reason is None or reason == row[3]):
            return False
        skipped: list[str] = []
        if skip_pending is not None and new_state in FINAL:
            skipped = _skip_pending(tx, rollout_id, skip_pending)
        tx.execute(
            "UPDATE rollouts SET state = ?, stage = ?, waiting = ?, reason = ?, updated_at = ?, "
            "finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE id = ?",
            (
                new_state,
                new_stage,
                waiting,
                reason if reason is not None else row[3],
                now,
                new_state in FINAL,
                now,
                rollout_id,
            ),
        )
        if changed:
            detail: dict[str, Any] = {
                "rollout": rollout_id,
                "from": current,
                "state": new_state,
                "stage": new_stage,
            }
            if reason:
                detail["reason"] = reason
            if waiting:
                detail["waiting"] = waiting
            if skipped:
                detail["skipped"] = len(skipped)
            audit.append(tx, actor=actor, action="rollout.state", vins=skipped, detail=detail)
    return True
