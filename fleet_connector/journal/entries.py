"""The journal: every change the connector made to Ankaios, kept in the state directory.

One row per request that changes the desired state (apply, delete, rollback, reconcile):
its request id and key, time and manifest, what Ankaios had under the names it touched
before (the snapshot, read from Ankaios), the outcome and the reply sent. Rows live in
the connector's SQLite store (:mod:`fleet_connector.journal.store`), so each write is one durable
transaction. A row is written *pending* before Ankaios gets the request and finished after
it answered, which is what lets a redelivered request be answered instead of re-applied.

Beside the rows, ``journal_expected`` holds, per workload and config name, what the cloud
last put there (a definition, or nothing for a deletion). It is not pruned with the rows,
so reconciling after an Ankaios restart still knows what was applied long ago.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ankaios_sdk._protos import _ank_base
from google.protobuf import json_format

from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.journal.store import Store

if TYPE_CHECKING:
    import sqlite3

PENDING = "PENDING"
"""Outcome of a row whose request was (maybe) sent to Ankaios without an answer recorded."""
OK = "OK"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key BLOB UNIQUE,
    request_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    received_at TEXT NOT NULL,
    manifest TEXT NOT NULL,
    masks TEXT NOT NULL,
    snapshot BLOB NOT NULL,
    instances TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reply TEXT,
    replied INTEGER NOT NULL DEFAULT 0,
    followed TEXT,
    rollback_of INTEGER,
    rolled_back_by INTEGER
);
CREATE TABLE IF NOT EXISTS journal_expected (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    definition BLOB,
    PRIMARY KEY (kind, name)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def names_of(masks: list[str]) -> tuple[list[str], list[str]]:
    """Workload and config names addressed by update masks of the manifest form."""
    workloads: list[str] = []
    configs: list[str] = []
    for mask in masks:
        parts = mask.split(".")
        if len(parts) == 3 and parts[:2] == ["desiredState", "workloads"]:
            workloads.append(parts[2])
        elif len(parts) == 3 and parts[:2] == ["desiredState", "configs"]:
            configs.append(parts[2])
    return workloads, configs


@dataclass(frozen=True)
class Entry:
    """One journal row."""

    seq: int
    request_id: str
    operation: str
    received_at: str
    manifest: str
    masks: list[str]
    snapshot: _ank_base.CompleteState
    """The desired state under ``masks`` before the change, as Ankaios had it."""
    instances: list[str]
    """Instance names (``<workload>.<id>.<agent>``) of the named workloads before the change."""
    outcome: str
    reply: str | None
    replied: bool
    followed: str | None
    rollback_of: int | None
    rolled_back_by: int | None

    def summary(self) -> dict[str, Any]:
        """What a history reply shows of the row."""
        workloads, configs = names_of(self.masks)
        before = self.snapshot.desiredState
        return {
            "entry": self.seq,
            "request_id": self.request_id,
            "operation": self.operation,
            "received_at": self.received_at,
            "outcome": self.outcome,
            "workloads": workloads,
            "configs": configs,
            "replaced": {
                "workloads": sorted(before.workloads.workloads),
                "configs": sorted(before.configs.configs),
            },
            "followed": self.followed,
            "rollback_of": self.rollback_of,
            "rolled_back_by": self.rolled_back_by,
        }

    def details(self) -> dict[str, Any]:
        """The whole row: the summary plus manifest, snapshot and reply."""
        return {
            **self.summary(),
            "manifest": self.manifest,
            "snapshot": json_format.MessageToDict(self.snapshot.desiredState),
            "instances_before": self.instances,
            "reply": json.loads(self.reply) if self.reply else None,
        }


_COLUMNS = (
    "seq, request_id, operation, received_at, manifest, masks, snapshot, instances, outcome, "
    "reply, replied, followed, rollback_of, rolled_back_by"
)


def _entry(row: tuple[Any, ...]) -> Entry:
    snapshot = _ank_base.CompleteState()
    snapshot.ParseFromString(row[6])
    return Entry(
        seq=row[0],
        request_id=row[1],
        operation=row[2],
        received_at=row[3],
        manifest=row[4],
        masks=json.loads(row[5]),
        snapshot=snapshot,
        instances=json.loads(row[7]),
        outcome=row[8],
        reply=row[9],
        replied=bool(row[10]),
        followed=row[11],
        rollback_of=row[12],
        rolled_back_by=row[13],
    )


class Journal:
    """The journal's tables in the connector's store, bounded by rows and bytes."""

    def __init__(self, store: Store, max_entries: int = 200, max_bytes: int = 16 << 20) -> None:
        self._store = store
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        with store.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    # -- reading ------------------------------------------------------------------------

    def _one(self, where: str, parameters: tuple[object, ...]) -> Entry | None:
        # ``where`` is always one of this module's constant clauses; values are parameters.
        sql = f"SELECT {_COLUMNS} FROM journal WHERE {where}"  # noqa: S608
        rows = self._store.query(sql, parameters)
        return _entry(rows[0]) if rows else None

    def by_key(self, key: bytes) -> Entry | None:
        return self._one("request_key = ?", (key,))

    def get(self, seq: int) -> Entry | None:
        return self._one("seq = ?", (seq,))

    def by_request_id(self, request_id: str) -> Entry | None:
        return self._one("request_id = ? ORDER BY seq DESC LIMIT 1", (request_id,))

    def newest(self, limit: int) -> list[Entry]:
        rows = self._store.query(
            f"SELECT {_COLUMNS} FROM journal ORDER BY seq DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [_entry(row) for row in rows]

    def last_change(self) -> Entry | None:
        """The newest change that may have taken effect and was not undone yet.

        Rollbacks are not themselves undone by a later rollback: repeated rollbacks walk
        further back, like an undo stack.
        """
        return self._one(
            "operation IN ('apply', 'delete') AND rolled_back_by IS NULL "
            "AND outcome IN ('OK', 'TIMEOUT', 'PENDING') ORDER BY seq DESC LIMIT 1",
            (),
        )

    def later_changes(self, seq: int) -> list[Entry]:
        """Applies and deletes after ``seq`` that may have taken effect and were not undone."""
        rows = self._store.query(
            f"SELECT {_COLUMNS} FROM journal WHERE seq > ? "  # noqa: S608
            "AND operation IN ('apply', 'delete') AND rolled_back_by IS NULL "
            "AND outcome IN ('OK', 'TIMEOUT', 'PENDING') ORDER BY seq",
            (seq,),
        )
        return [_entry(row) for row in rows]

    def expected(self) -> dict[tuple[str, str], bytes | None]:
        """(kind, name) -> what the cloud last put there; None where it deleted it."""
        rows = self._store.query("SELECT kind, name, definition FROM journal_expected")
        found: dict[tuple[str, str], bytes | None] = {}
        for kind, name, definition in rows:
            found[(str(kind), str(name))] = (
                bytes(definition) if isinstance(definition, bytes) else None
            )
        return found

    # -- writing ------------------------------------------------------------------------

    def begin(
        self,
        *,
        key: bytes | None,
        request_id: str,
        operation: str,
        manifest: str,
        masks: list[str],
        snapshot: _ank_base.CompleteState,
        instances: list[str],
        rollback_of: int | None = None,
    ) -> int:
        """Records a change about to be sent to Ankaios; returns its entry number."""
        values = (
            request_id,
            operation,
            _now(),
            manifest,
            json.dumps(masks),
            snapshot.SerializeToString(),
            json.dumps(instances),
            PENDING,
            rollback_of,
        )
        with self._store.transaction() as db:
            if key is not None:
                # A retried request (after UNAVAILABLE, say) starts its row afresh.
                db.execute("DELETE FROM journal WHERE request_key = ?", (key,))
            cursor = db.execute(
                "INSERT INTO journal (request_key, request_id, operation, received_at, manifest, "
                "masks, snapshot, instances, outcome, rollback_of) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, *values),
            )
            seq = int(cursor.lastrowid or 0)
            self._prune(db, seq)
        return seq

    def finish(
        self,
        seq: int,
        outcome: str,
        reply: str,
        *,
        expected: _ank_base.CompleteState | None = None,
    ) -> None:
        """Records Ankaios's answer; with ``expected``, what the names now hold."""
        with self._store.transaction() as db:
            db.execute(
                "UPDATE journal SET outcome = ?, reply = ? WHERE seq = ?", (outcome, reply, seq)
            )
            row = db.execute(
                "SELECT masks, rollback_of FROM journal WHERE seq = ?", (seq,)
            ).fetchone()
            if row is None:
                return
            if expected is not None:
                self._expect(db, json.loads(row[0]), expected)
            if row[1] is not None and outcome == OK:
                db.execute("UPDATE journal SET rolled_back_by = ? WHERE seq = ?", (seq, row[1]))

    @staticmethod
    def _expect(db: sqlite3.Connection, masks: list[str], state: _ank_base.CompleteState) -> None:
        workloads, configs = names_of(masks)
        desired = state.desiredState
        tables: list[tuple[str, list[str], Any]] = [
            ("workload", workloads, desired.workloads.workloads),
            ("config", configs, desired.configs.configs),
        ]
        for kind, names, table in tables:
            for name in names:
                held = table.get(name)
                definition = held.SerializeToString() if held is not None else None
                db.execute(
                    "INSERT OR REPLACE INTO journal_expected VALUES (?, ?, ?)",
                    (kind, name, definition),
                )

    def mark_replied(self, seq: int) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE journal SET replied = 1 WHERE seq = ?", (seq,))

    def record_followed(self, seq: int, outcome: str) -> None:
        """The outcome an apply was followed to (e.g. ``running``, ``failed``)."""
        with self._store.transaction() as db:
            db.execute("UPDATE journal SET followed = ? WHERE seq = ?", (outcome, seq))

    def _prune(self, db: sqlite3.Connection, newest: int) -> None:
        """Drops the oldest rows beyond the bounds; the newest row always stays."""
        db.execute(
            "DELETE FROM journal WHERE seq NOT IN (SELECT seq FROM journal ORDER BY seq DESC "
            "LIMIT ?)",
            (self.max_entries,),
        )
        sizes = db.execute(
            "SELECT seq, length(manifest) + length(snapshot) + coalesce(length(reply), 0) "
            "FROM journal ORDER BY seq DESC"
        ).fetchall()
        total = 0
        for seq, size in sizes:
            total += int(size)
            if total > self.max_bytes and seq != newest:
                db.execute("DELETE FROM journal WHERE seq <= ?", (seq,))
                break


HISTORY_LIMIT = 1000


def history(journal: Journal, payload: bytes) -> dict[str, Any]:
    """The reply to a history request: ``{}``/nothing, ``{"limit": N}`` or ``{"entry": N}``.

    Entries come newest first, each summarised; ``entry`` answers with one entry whole
    (its manifest, snapshot and reply).
    """
    usage = 'a history request is empty, {}, {"limit": N} or {"entry": N}'
    selector: Any = {}
    if payload.strip():
        try:
            selector = json.loads(payload)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RequestError(ErrorCode.INVALID_REQUEST, usage) from None
    if not isinstance(selector, dict) or not set(selector) <= {"limit", "entry"}:
        raise RequestError(ErrorCode.INVALID_REQUEST, usage)
    for field in selector:
        value = selector[field]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{field} must be a number from 1")
    if "entry" in selector:
        entry = journal.get(selector["entry"])
        if entry is None:
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"the journal has no entry {selector['entry']}"
            )
        return {"entries": [entry.details()]}
    limit = min(selector.get("limit", HISTORY_LIMIT), HISTORY_LIMIT)
    return {"entries": [entry.summary() for entry in journal.newest(limit)]}
