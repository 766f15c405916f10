"""Append-only audit entries, each hashed over its content and the previous entry's hash.

hash = SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of
``[seq, at, actor, action, vins, request_ids, key_id, detail, prev_hash]``; the first
entry's prev_hash is 64 zeros. ``audit_head`` holds the count and the last hash and is
updated in the same transaction as each append (and locked by it, so two servers append one
after the other), so changing any entry, removing one from the middle or from the end
breaks the chain that :func:`verify` walks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleet_server.db import Database
from fleet_server.db.database import Row, Transaction

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    vins: list[str]
    request_ids: list[str]
    key_id: str | None
    detail: Any
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "vins": self.vins,
            "request_ids": self.request_ids,
            "key_id": self.key_id,
            "detail": self.detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(seq: int, stored: Sequence[Any]) -> str:
    """The hash of entry ``seq`` from its stored columns ``at`` to ``prev_hash``, in table
    order (vins, request_ids and detail as their canonical JSON text)."""
    text = canonical([seq, *stored])
    return hashlib.sha256(text.encode()).hexdigest()


def append(
    tx: Transaction,
    *,
    actor: str,
    action: str,
    vins: Sequence[str] = (),
    request_ids: Sequence[str] = (),
    key_id: str | None = None,
    detail: Any = None,
) -> int:
    """Appends one entry inside the caller's transaction (with the change it records)."""
    head = tx.execute(
        "SELECT count, last_hash FROM audit_head WHERE id = 1" + tx.dialect.for_update  # noqa: S608
    ).fetchone()
    assert head is not None, "audit_head is created by the first migration"
    seq, prev = int(head[0]) + 1, str(head[1])
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    vins_text = canonical(list(vins))
    ids_text = canonical(list(request_ids))
    detail_text = canonical(detail if detail is not None else {})
    digest = entry_hash(seq, (at, actor, action, vins_text, ids_text, key_id, detail_text, prev))
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, vins, request_ids, key_id, detail, "
        "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, at, actor, action, vins_text, ids_text, key_id, detail_text, prev, digest),
    )
    tx.executemany(
        "INSERT INTO audit_vins (vin, seq) VALUES (?, ?)", [(v, seq) for v in dict.fromkeys(vins)]
    )
    tx.execute("UPDATE audit_head SET count = ?, last_hash = ? WHERE id = 1", (seq, digest))
    return seq


# Constant text, no input: the queries below only put it between SELECT and FROM.
_COLUMNS = (
    "a.seq, a.at, a.actor, a.action, a.vins, a.request_ids, a.key_id, a.detail, a.prev_hash, a.hash"
)


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        seq=int(row[0]),
        at=row[1],
        actor=row[2],
        action=row[3],
        vins=json.loads(row[4]),
        request_ids=json.loads(row[5]),
        key_id=row[6],
        detail=json.loads(row[7]),
        prev_hash=row[8],
        hash=row[9],
    )


def entries(
    db: Database, *, vin: str | None = None, after: int = 0, limit: int = 100
) -> list[AuditEntry]:
    """Entries with seq > ``after``, oldest first; only those naming ``vin`` if given."""
    with db.transaction(write=False) as tx:
        if vin is None:
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM audit_log a WHERE a.seq > ? ORDER BY a.seq LIMIT ?",  # noqa: S608
                (after, limit),
            ).fetchall()
        else:
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM audit_vins v JOIN audit_log a ON a.seq = v.seq "  # noqa: S608
                "WHERE v.vin = ? AND v.seq > ? ORDER BY v.seq LIMIT ?",
                (vin, after, limit),
            ).fetchall()
    return [_entry(r) for r in rows]


@dataclass(frozen=True)
class Verification:
    count: int
    problem: str | None = None
    """What is wrong, naming the first bad entry; None when the chain holds."""

    @property
    def ok(self) -> bool:
        return self.problem is None


BATCH = 5000


def verify(db: Database) -> Verification:
    """Walks the whole chain (in batches, so memory stays flat for millions of entries)."""
    expected_seq, prev, count = 1, GENESIS, 0
    while True:
        with db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT seq, at, actor, action, vins, request_ids, key_id, detail, prev_hash, "
                "hash FROM audit_log WHERE seq >= ? ORDER BY seq LIMIT ?",
                (expected_seq, BATCH),
            ).fetchall()
            if not rows:
                head = tx.execute("SELECT count, last_hash FROM audit_head WHERE id = 1").fetchone()
                extra = tx.execute(
                    "SELECT min(seq) FROM audit_log WHERE seq < 1 OR seq > ?", (count,)
                ).fetchone()
                break
        for row in rows:
            seq = int(row[0])
            if seq != expected_seq:
                return Verification(count, f"entry {expected_seq} is missing (next is {seq})")
            if row[8] != prev:
                return Verification(
                    count, f"entry {seq}: prev_hash does not match entry {seq - 1}'s hash"
                )
            digest = entry_hash(seq, row[1:9])
            if digest != row[9]:
                return Verification(count, f"entry {seq} was changed: its hash does not match")
            prev, expected_seq, count = digest, seq + 1, count + 1
    if extra is not None and extra[0] is not None:
        return Verification(count, f"entry {extra[0]} is outside the chain")
    if head is None or int(head[0]) != count or head[1] != prev:
        want = "?" if head is None else head[0]
        return Verification(
            count, f"the chain ends at entry {count} but the head says {want}: entries removed"
        )
    return Verification(count)
