"""Signed requests: Ed25519 over the exact payload, bound to key, operation, cars, counter, time.

What is signed (:func:`signed_bytes`) is a fixed, line-based text that leaves no room for
two readings: a domain line, then ``key``, ``operation``, ``target``, ``counter`` and
``not-after`` (each from a character set without newlines, checked before anything else),
the payload's length and the payload's bytes, unchanged. So a signature made for a plan
does not verify for an apply, one for car 1 does not verify for car 2, and no byte of the
payload can be swapped.

It travels either as MQTT 5 user properties (``sig-key``, ``sig-operation``, ``sig-target``,
``sig-counter``, ``sig-not-after``, ``sig``) next to the unchanged payload, or, on any MQTT
version, as an envelope that a file can hold (``mosquitto_pub -f signed.txt``)::

    ANKAIOS-SIGNED-REQUEST-V1
    key: ops-2026
    operation: manifest/apply
    target: 1
    counter: 1780000000000001
    not-after: 1780003600
    signature: <base64>
    <one empty line>
    <the payload, byte for byte, to the end of the message>

The car (:class:`Verifier`) checks the fields, the key against ``TRUSTED_KEYS``, the
operation and its VIN, the signature, the time, and last the counter, which must exceed the
last one it accepted from that key; the check and the new counter are one SQLite
transaction in ``STATE_DIR``, so a counter is accepted once, across restarts.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.mqtt.topics import Operation

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from fleet_connector.journal.store import Store

log = logging.getLogger(__name__)


def _ed25519() -> ModuleType:
    """cryptography, loaded on first use: it costs a car about 8 MB of memory, and most
    connectors never check a signature."""
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    return ed25519


DOMAIN = b"ankaios-fleet-connector signed request v1\n"
ENVELOPE_MAGIC = b"ANKAIOS-SIGNED-REQUEST-V1\n"
PROPERTY_PREFIX = "sig"
# Field name in the envelope -> MQTT 5 user property.
FIELDS = {
    "key": "sig-key",
    "operation": "sig-operation",
    "target": "sig-target",
    "counter": "sig-counter",
    "not-after": "sig-not-after",
    "signature": "sig",
}
ALL_CARS = "*"
# Requests that change nothing may stay unsigned under REQUIRE_SIGNED; every other
# operation, also one added later, must be signed.
READ_ONLY = frozenset(
    {Operation.PLAN, Operation.PLAN_DELETE, Operation.STATE, Operation.LOGS, Operation.HISTORY}
)

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VIN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_COUNTER = re.compile(r"[1-9][0-9]{0,17}")
_TIME = re.compile(r"0|[1-9][0-9]{0,11}")
_HEADER_LIMIT = 8192


def _refused(message: str) -> RequestError:
    return RequestError(ErrorCode.SIGNATURE_INVALID, f"signature refused: {message}")


@dataclass(frozen=True)
class Claims:
    """What a signature vouches for, besides the payload."""

    key: str
    operation: Operation
    targets: tuple[str, ...]
    """VINs in the order given, or ``("*",)`` for every car."""
    counter: int
    not_after: int
    """Unix seconds after which the request is refused."""

    def fields(self) -> dict[str, str]:
        return {
            "key": self.key,
            "operation": self.operation.value,
            "target": ",".join(self.targets),
            "counter": str(self.counter),
            "not-after": str(self.not_after),
        }

    @classmethod
    def parse(cls, fields: dict[str, str]) -> Claims:
        """Claims from their text form; raises SIGNATURE_INVALID naming the bad field."""
        for name in FIELDS:
            if name not in fields:
                raise _refused(f"the field {name!r} is missing")
        key = fields["key"]
        if not _KEY_ID.fullmatch(key):
            raise _refused("the key id must be 1 to 64 letters, digits or any of _ . -")
        try:
            operation = Operation(fields["operation"])
        except ValueError:
            known = ", ".join(o.value for o in Operation)
            raise _refused(f"operation {fields['operation']!r} is not one of {known}") from None
        target = fields["target"]
        targets = tuple(target.split(","))
        if target != ALL_CARS and not all(_VIN.fullmatch(vin) for vin in targets):
            raise _refused("target must be '*' or VINs separated by commas")
        if not _COUNTER.fullmatch(fields["counter"]):
            raise _refused("counter must be a whole number from 1, without leading zeros")
        if not _TIME.fullmatch(fields["not-after"]):
            raise _refused("not-after must be a time in whole Unix seconds")
        return cls(key, operation, targets, int(fields["counter"]), int(fields["not-after"]))


def signed_bytes(claims: Claims, payload: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers."""
    lines = "".join(f"{name}={value}\n" for name, value in claims.fields().items())
    return DOMAIN + lines.encode() + f"payload-length={len(payload)}\n".encode() + payload


@dataclass(frozen=True)
class Signed:
    """A payload with its claims and signature, as it travels."""

    claims: Claims
    signature: bytes
    payload: bytes

    def envelope(self) -> bytes:
        header = "".join(f"{name}: {value}\n" for name, value in self._text_fields().items())
        return ENVELOPE_MAGIC + header.encode() + b"\n" + self.payload

    def user_properties(self) -> list[tuple[str, str]]:
        return [(FIELDS[name], value) for name, value in self._text_fields().items()]

    def _text_fields(self) -> dict[str, str]:
        return {**self.claims.fields(), "signature": base64.b64encode(self.signature).decode()}


def sign(key: SigningKey, claims: Claims, payload: bytes) -> Signed:
    if claims.key != key.key_id:
        raise ValueError(f"claims name key {claims.key!r}, but the key is {key.key_id!r}")
    return Signed(claims, key.private.sign(signed_bytes(claims, payload)), payload)


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """An operator's private key with its id (the file ``fleetctl keys generate`` writes)."""

    key_id: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, key_id: str) -> SigningKey:
        if not _KEY_ID.fullmatch(key_id):
            raise ValueError("a key id is 1 to 64 letters, digits or any of _ . -")
        return cls(key_id, _ed25519().Ed25519PrivateKey.generate())

    def to_text(self) -> str:
        raw = self.private.private_bytes_raw()
        return (
            "# Ed25519 key for signing fleet requests; keep it secret.\n"
            f"key-id: {self.key_id}\nprivate-key: {base64.b64encode(raw).decode()}\n"
        )

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Raises ValueError (or OSError) saying what is wrong with the file."""
        fields = _key_value_lines(path.read_text(encoding="utf-8"), ":")
        key_id = fields.get("key-id", "")
        if not _KEY_ID.fullmatch(key_id):
            raise ValueError(f"{path} has no valid key-id line")
        raw = _b64(fields.get("private-key", ""), 32, "private-key")
        return cls(key_id, _ed25519().Ed25519PrivateKey.from_private_bytes(raw))

    def trusted_line(self) -> str:
        """This key's line for a car's ``TRUSTED_KEYS`` file."""
        raw = self.private.public_key().public_bytes_raw()
        return f"{self.key_id} ed25519 {base64.b64encode(raw).decode()}"


def _key_value_lines(text: str, separator: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition(separator)
            fields[name.strip()] = value.strip()
    return fields


def _b64(text: str, length: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != length:
        raise ValueError(f"{what} must be {length} bytes, not {len(raw)}")
    return raw


def load_trusted_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """``TRUSTED_KEYS``: lines ``<key id> ed25519 <base64 public key>``; ``#`` comments.

    Several keys may be trusted at once, which is how keys are rotated: add the new one,
    switch the signers over, remove the old one.
    """
    keys: dict[str, Ed25519PublicKey] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 3 or words[1] != "ed25519" or not _KEY_ID.fullmatch(words[0]):
            raise ValueError(f"{path}:{number}: expected '<key id> ed25519 <base64 key>'")
        if words[0] in keys:
            raise ValueError(f"{path}:{number}: key {words[0]!r} is listed twice")
        try:
            raw = _b64(words[2], 32, "the public key")
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {e}") from None
        keys[words[0]] = _ed25519().Ed25519PublicKey.from_public_bytes(raw)
    return keys


# -- the car's side ---------------------------------------------------------------------------


def parse_envelope(data: bytes) -> tuple[dict[str, str], bytes]:
    """Fields and payload of an envelope; raises SIGNATURE_INVALID if it is not well formed."""
    end = data.find(b"\n\n", len(ENVELOPE_MAGIC) - 1)
    if end < 0 or end > _HEADER_LIMIT:
        raise _refused("the envelope has no empty line between its header and the payload")
    try:
        header = data[len(ENVELOPE_MAGIC) : end + 1].decode("ascii")
    except UnicodeDecodeError:
        raise _refused("the envelope header is not ASCII text") from None
    fields: dict[str, str] = {}
    for line in header.splitlines():
        name, separator, value = line.partition(": ")
        if not separator or name not in FIELDS:
            raise _refused(f"the envelope has a line that is not a known field: {line[:80]!r}")
        if name in fields:
            raise _refused(f"the envelope names {name!r} twice")
        fields[name] = value
    return fields, data[end + 2 :]


def _property_fields(properties: Sequence[tuple[str, str]]) -> dict[str, str] | None:
    found = [(n, v) for n, v in properties if n == PROPERTY_PREFIX or n.startswith("sig-")]
    if not found:
        return None
    by_property = {prop: name for name, prop in FIELDS.items()}
    fields: dict[str, str] = {}
    for prop, value in found:
        name = by_property.get(prop)
        if name is None:
            raise _refused(f"unknown signature property {prop!r}")
        if name in fields:
            raise _refused(f"the signature property {prop!r} is given twice")
        fields[name] = value
    return fields


class Verifier:
    """Checks signed requests for one car and remembers each key's last counter."""

    def __init__(
        self,
        vin: str,
        trusted_keys: Path | None,
        store: Store | None,
        *,
        require_signed: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if trusted_keys is not None and store is None:
            raise ValueError("TRUSTED_KEYS needs STATE_DIR, where the replay counters are kept")
        if require_signed and trusted_keys is None:
            raise ValueError("REQUIRE_SIGNED needs TRUSTED_KEYS")
        self._vin = vin
        self._path = trusted_keys
        self._store = store
        self._require = require_signed
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded: tuple[int, int] | None = None
        if trusted_keys is not None:
            self._reload()
        if store is not None:
            with store.transaction() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS signature_counters ("
                    " key TEXT PRIMARY KEY, counter INTEGER NOT NULL, accepted_at TEXT NOT NULL)"
                )

    def _reload(self) -> None:
        """Reads TRUSTED_KEYS again when it changed, so keys rotate without a restart."""
        assert self._path is not None
        stat = os.stat(self._path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._loaded:
            return
        self._keys = load_trusted_keys(self._path)
        self._loaded = stamp
        log.info("trusted keys from %s: %s", self._path, ", ".join(sorted(self._keys)) or "none")

    def admit(
        self,
        operation: Operation,
        payload: bytes,
        properties: Iterable[tuple[str, str]] = (),
        *,
        redelivered: bool = False,
    ) -> bytes:
        """The payload to carry out; raises SIGNATURE_INVALID for a request to refuse.

        A signature found is always checked, whatever the operation; REQUIRE_SIGNED only
        decides whether a request without one is refused. ``redelivered``: the journal
        holds this very request (same topic, id and bytes), so its counter was used by
        it; the journal answers it again instead of carrying it out, so it is no replay.
        """
        from_properties = _property_fields(list(properties))
        enveloped = payload.startswith(ENVELOPE_MAGIC)
        if from_properties is not None and enveloped:
            raise _refused("a request is signed either by user properties or by an envelope")
        if from_properties is None and not enveloped:
            if self._require and operation not in READ_ONLY:
                raise _refused(
                    f"this car carries out {operation.value} requests only when they are signed "
                    "(REQUIRE_SIGNED)"
                )
            return payload
        fields, inner = (from_properties, payload) if from_properties else parse_envelope(payload)
        claims = Claims.parse(fields)
        signature = self._signature(fields["signature"])
        with self._lock:
            self._check(claims, signature, inner, operation, redelivered)
        return inner

    @staticmethod
    def _signature(text: str) -> bytes:
        try:
            return _b64(text, 64, "the signature")
        except ValueError as e:
            raise _refused(str(e)) from None

    def _check(
        self,
        claims: Claims,
        signature: bytes,
        payload: bytes,
        operation: Operation,
        redelivered: bool = False,
    ) -> None:
        if self._path is None or self._store is None:
            raise _refused("this car has no TRUSTED_KEYS to check signatures with")
        try:
            self._reload()
        except (OSError, ValueError) as e:
            log.error("cannot read TRUSTED_KEYS again (%s); keeping the keys read before", e)
        public = self._keys.get(claims.key)
        if public is None:
            raise _refused(f"key {claims.key!r} is not trusted by this car")
        if claims.operation is not operation:
            raise _refused(f"it was made for {claims.operation.value}, not {operation.value}")
        if claims.targets != (ALL_CARS,) and self._vin not in claims.targets:
            raise _refused(f"it was made for VIN {','.join(claims.targets)}, not {self._vin}")
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - see _ed25519

        try:
            public.verify(signature, signed_bytes(claims, payload))
        except InvalidSignature:
            raise _refused(
                f"it does not match the request: altered, or not made with key {claims.key!r}"
            ) from None
        now = self._clock()
        if now > claims.not_after:
            raise _refused(
                f"it expired at {_iso(claims.not_after)} (the car's time is {_iso(int(now))})"
            )
        if not redelivered:
            self._consume(claims)

    def _consume(self, claims: Claims) -> None:
        """Accepts the counter, or refuses a replay; one transaction, so once only."""
        assert self._store is not None
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT counter FROM signature_counters WHERE key = ?", (claims.key,)
            ).fetchone()
            if row is not None and claims.counter <= row[0]:
                raise _refused(
                    f"counter {claims.counter} of key {claims.key!r} is not above the last "
                    f"one accepted ({row[0]}): a replay"
                )
            db.execute(
                "INSERT INTO signature_counters (key, counter, accepted_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET counter = excluded.counter, "
                "accepted_at = excluded.accepted_at",
                (claims.key, claims.counter, _iso(int(self._clock()))),
            )


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(seconds)
