"""Signed rollout requests (``--sign-key``): one signature per car and attempt.

Cars with ``REQUIRE_SIGNED`` carry out only signed changes, and accept each key's counter
once (fleet_connector/requests/signatures.py). So the counter lives in the shared database
(``signing_counters``) and every signature takes the next one inside the transaction that
records the attempt; the signed bytes are stored with the attempt and sent again unchanged
after a takeover: the car's journal knows a request by its id and bytes, and admits that
very request again as a redelivery instead of a replay. Each signature is valid for
``--sign-valid-for`` seconds from its attempt, so a car offline for longer is simply signed
for anew by its next attempt rather than by a long-lived signature.
"""

from __future__ import annotations

import time
from pathlib import Path

from fleet_connector.errors import RequestError
from fleet_connector.mqtt.topics import Operation
from fleet_connector.requests.signatures import (
    ENVELOPE_MAGIC,
    Claims,
    SigningKey,
    parse_envelope,
    sign,
)
from fleet_server.db import Database
from fleet_server.db.database import Transaction


def check_key_file(text: str) -> Path:
    """The --sign-key option's value: a key file ``fleetctl keys generate`` wrote."""
    path = Path(text)
    try:
        SigningKey.load(path)
    except OSError as e:
        raise ValueError(f"cannot read it: {e.strerror}") from None
    return path


class Signer:
    def __init__(self, key: SigningKey, valid_for: float) -> None:
        self.key = key
        self.valid_for = valid_for

    @classmethod
    def load(cls, path: Path, valid_for: float) -> Signer:
        return cls(SigningKey.load(path), valid_for)

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def next_counter(self, tx: Transaction) -> int:
        row = tx.execute(
            "SELECT counter FROM signing_counters WHERE key_id = ?" + tx.dialect.for_update,  # noqa: S608
            (self.key.key_id,),
        ).fetchone()
        counter = max(int(row[0]) + 1 if row else 1, time.time_ns() // 1000)
        tx.execute(
            "INSERT INTO signing_counters (key_id, counter) VALUES (?, ?) "
            "ON CONFLICT (key_id) DO UPDATE SET counter = excluded.counter",
            (self.key.key_id, counter),
        )
        return counter

    def envelope(self, tx: Transaction, operation: Operation, vin: str, payload: bytes) -> bytes:
        """``payload`` signed for ``vin`` alone, with the next counter."""
        claims = Claims(
            self.key.key_id,
            operation,
            (vin,),
            self.next_counter(tx),
            int(time.time() + self.valid_for),
        )
        return sign(self.key, claims, payload).envelope()

    def sign_now(self, db: Database, operation: Operation, vin: str, payload: bytes) -> bytes:
        with db.transaction() as tx:
            return self.envelope(tx, operation, vin, payload)


def not_after(payload: bytes) -> float | None:
    """When a signed request's signature runs out; None for an unsigned one."""
    if not payload.startswith(ENVELOPE_MAGIC):
        return None
    try:
        fields, _ = parse_envelope(payload)
        return float(fields["not-after"])
    except (RequestError, KeyError, ValueError):
        return None
