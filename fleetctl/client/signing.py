"""The operator's side of signed requests: a key, a counter that only grows, one signature per car.

The car refuses a counter it has seen from the key before (see
``fleet_connector.requests.signatures``), so the counter must grow across fleetctl runs, machines
and lost files: it is the larger of the last one used plus one (kept next to the key in
``<key file>.counter``) and the time in microseconds. One run takes one counter: the cars
count separately, so each car of the run sees it once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleet_connector.requests.signatures import ALL_CARS, Claims, SigningKey, sign

DEFAULT_VALID_FOR = 3600


def load_key(path: Path) -> SigningKey:
    try:
        return SigningKey.load(path)
    except OSError as e:
        raise ConfigError(f"cannot read signing key {path}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError(f"signing key {path}: {e}") from None


def next_counter(key_path: Path) -> int:
    """A counter above every one used with this key file before; kept durably."""
    path = key_path.with_name(key_path.name + ".counter")
    with open(path, "a+", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        text = handle.read().strip()
        last = int(text) if text.isdigit() else 0
        counter = max(last + 1, time.time_ns() // 1000)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(f"{counter}\n", encoding="ascii")
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        temporary.replace(path)
    return counter


class Signer:
    """Signs each request of one run for its car; made once per run."""

    def __init__(self, key_path: Path, operation: Operation, valid_for: int) -> None:
        self.key = load_key(key_path)
        self.operation = operation
        try:
            self.counter = next_counter(key_path)
        except OSError as e:
            raise ConfigError(f"cannot keep the counter next to {key_path}: {e.strerror}") from None
        self.not_after = int(time.time()) + valid_for

    def envelope(self, payload: bytes, targets: Sequence[str]) -> bytes:
        claims = Claims(
            self.key.key_id, self.operation, tuple(targets), self.counter, self.not_after
        )
        return sign(self.key, claims, payload).envelope()

    def for_car(self, payload: bytes) -> _PerCar:
        return _PerCar(self, payload)


class _PerCar:
    """``vin -> signed payload`` for a rollout."""

    def __init__(self, signer: Signer, payload: bytes) -> None:
        self._signer = signer
        self._payload = payload

    def __call__(self, vin: str) -> bytes:
        return self._signer.envelope(self._payload, [vin])


def targets_of(vins: Sequence[str], all_cars: bool) -> list[str]:
    if all_cars:
        return [ALL_CARS]
    if not vins:
        raise ConfigError("name the cars the signature is for with --vin/--vins, or --all-cars")
    return list(vins)
