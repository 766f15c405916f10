"""The rollout database: one SQLite file with every rollout and every car's progress.

A car's request id is written (committed) before its request is published and its outcome
as soon as it is known, so a fleetctl killed at any moment leaves a record from which
``resume`` sends each unfinished car the *same* request again: a connector that got it
already answers from its reply cache or journal instead of carrying it out twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fleet_connector.journal.store import Store
from fleetctl.rollouts.spec import Amount, RampUp, Rate, Spec

DATABASE_ENV = "FLEETCTL_DB"

# Car states. "offline": sent, no reply, the car's presence said offline: the broker keeps
# the request, and resume asks again.
PENDING, SENT, OK, FAILED, OFFLINE, SKIPPED = (
    "pending",
    "sent",
    "ok",
    "failed",
    "offline",
    "skipped",
)
UNFINISHED = (PENDING, SENT, OFFLINE)

# Rollout states.
RUNNING, ABORTED, INCOMPLETE, DONE, DONE_WITH_FAILURES = (
    "running",
    "aborted",
    "incomplete",
    "done",
    "done-with-failures",
)
INTERRUPTED = "interrupted"
"""Shown, never stored: recorded as running, but its process is gone (resume it)."""

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS rollouts (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        operation TEXT NOT NULL,
        spec TEXT NOT NULL,
        payload BLOB NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        owner_pid INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS rollout_cars (
        rollout TEXT NOT NULL,
        vin TEXT NOT NULL,
        position INTEGER NOT NULL,
        wave INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 1,
        request_id TEXT,
        state TEXT NOT NULL,
        kind TEXT,
        code TEXT,
        message TEXT,
        sent_at REAL,
        done_at REAL,
        PRIMARY KEY (rollout, vin)
    )""",
]


def default_path() -> Path:
    """``$FLEETCTL_DB``, else ``rollouts.sqlite3`` in the user's data directory."""
    configured = os.environ.get(DATABASE_ENV)
    if configured:
        return Path(configured)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "fleetctl" / "rollouts.sqlite3"


@dataclass
class Car:
    vin: str
    wave: int
    state: str
    attempt: int
    request_id: str | None
    kind: str | None
    code: str | None
    message: str | None


@dataclass
class Rollout:
    id: str
    source: str
    operation: str
    spec: Spec
    status: str
    reason: str | None
    owner_pid: int | None
    created_at: float
    updated_at: float


def spec_to_json(spec: Spec) -> str:
    fields = asdict(spec)
    fields.pop("payload")
    return json.dumps(fields)


def spec_from_json(text: str, payload: bytes) -> Spec:
    fields: dict[str, Any] = json.loads(text)

    def amount(value: dict[str, Any] | None) -> Amount | None:
        return None if value is None else Amount(**value)

    rate = fields.pop("rate")
    if rate is not None:
        ramp = rate.pop("ramp_up")
        rate = Rate(**rate, ramp_up=None if ramp is None else RampUp(**ramp))
    return Spec(
        **{k: v for k, v in fields.items() if k not in ("batch_size", "thresholds")},
        payload=payload,
        batch_size=amount(fields["batch_size"]),
        thresholds={k: Amount(**v) for k, v in fields["thresholds"].items()},
        rate=rate,
    )


class Records:
    """The rollout database; each change is one committed transaction."""

    def __init__(self, path: Path) -> None:
        # The connector's crash-safe SQLite store (WAL, synchronous=FULL; an unreadable
        # file is set aside), in the file the operator chose.
        self._store = Store(path.parent, path.name)
        self.path = self._store.path
        with self._write() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def close(self) -> None:
        self._store.close()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._store.transaction()

    def _read(self, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return self._store.query(sql, parameters)

    # -- rollouts -----------------------------------------------------------------------

    def create(self, spec: Spec) -> str:
        rollout_id = f"r{time.strftime('%Y%m%d')}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        with self._write() as db:
            db.execute(
                "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
                (
                    rollout_id,
                    spec.source,
                    spec.operation,
                    spec_to_json(spec),
                    spec.payload,
                    RUNNING,
                    os.getpid(),
                    now,
                    now,
                ),
            )
            position = 0
            for number, wave in enumerate(spec.waves()):
                for vin in wave:
                    db.execute(
                        "INSERT INTO rollout_cars (rollout, vin, position, wave, state) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (rollout_id, vin, position, number, PENDING),
                    )
                    position += 1
        return rollout_id

    def get(self, rollout_id: str) -> Rollout | None:
        rows = self._read(
            "SELECT id, source, operation, spec, payload, status, reason, owner_pid, "
            "created_at, updated_at FROM rollouts WHERE id = ?",
            (rollout_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return Rollout(
            id=row[0],
            source=row[1],
            operation=row[2],
            spec=spec_from_json(row[3], bytes(row[4])),
            status=row[5],
            reason=row[6],
            owner_pid=row[7],
            created_at=row[8],
            updated_at=row[9],
        )

    def ids(self) -> list[str]:
        rows = self._read("SELECT id FROM rollouts ORDER BY created_at DESC")
        return [str(row[0]) for row in rows]

    def set_status(
        self, rollout_id: str, status: str, reason: str | None = None, owner: int | None = None
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE rollouts SET status = ?, reason = ?, owner_pid = ?, updated_at = ? "
                "WHERE id = ?",
                (status, reason, owner, time.time(), rollout_id),
            )

    def claim(self, rollout_id: str) -> str | None:
        """Takes the rollout for this process; the reason it cannot, if it cannot."""
        with self._write() as db:
            row = db.execute(
                "SELECT status, owner_pid FROM rollouts WHERE id = ?", (rollout_id,)
            ).fetchone()
            if row is None:
                return f"there is no rollout {rollout_id}"
            status, owner = row
            if status == RUNNING and owner != os.getpid() and owned_by_a_live_process(owner):
                return f"rollout {rollout_id} is running in process {owner}"
            if status == ABORTED:
                return f"rollout {rollout_id} was aborted"
            db.execute(
                "UPDATE rollouts SET status = ?, reason = NULL, owner_pid = ?, updated_at = ? "
                "WHERE id = ?",
                (RUNNING, os.getpid(), time.time(), rollout_id),
            )
        return None

    # -- cars ---------------------------------------------------------------------------

    def cars(self, rollout_id: str) -> list[Car]:
        rows = self._read(
            "SELECT vin, wave, state, attempt, request_id, kind, code, message "
            "FROM rollout_cars WHERE rollout = ? ORDER BY position",
            (rollout_id,),
        )
        return [Car(*row) for row in rows]

    def mark_sent(self, rollout_id: str, vin: str) -> str:
        """The car's request id, recorded before the request goes out."""
        with self._write() as db:
            row = db.execute(
                "SELECT request_id, attempt FROM rollout_cars WHERE rollout = ? AND vin = ?",
                (rollout_id, vin),
            ).fetchone()
            request_id = row[0] or f"{rollout_id}-{row[1]}"
            db.execute(
                "UPDATE rollout_cars SET state = CASE WHEN state = ? THEN ? ELSE state END, "
                "request_id = ?, sent_at = coalesce(sent_at, ?) WHERE rollout = ? AND vin = ?",
                (PENDING, SENT, request_id, time.time(), rollout_id, vin),
            )
        return str(request_id)

    def record(
        self,
        rollout_id: str,
        vin: str,
        state: str,
        *,
        kind: str | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE rollout_cars SET state = ?, kind = ?, code = ?, message = ?, "
                "done_at = ? WHERE rollout = ? AND vin = ?",
                (state, kind, code, message, time.time(), rollout_id, vin),
            )

    def retry_failed(self, rollout_id: str) -> int:
        """Failed cars become pending again under a new attempt (a new request id)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE rollout_cars SET state = ?, attempt = attempt + 1, request_id = NULL, "
                "kind = NULL, code = NULL, message = NULL, sent_at = NULL, done_at = NULL "
                "WHERE rollout = ? AND state = ?",
                (PENDING, rollout_id, FAILED),
            )
            db.execute(
                "UPDATE rollouts SET status = ?, reason = NULL, updated_at = ? WHERE id = ?",
                (INCOMPLETE, time.time(), rollout_id),
            )
        return int(cursor.rowcount)


def owned_by_a_live_process(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
