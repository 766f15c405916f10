"""The operator's side of signed requests: a key, a counter that only grows, one signature per car.

The car refuses a counter it has seen from the key before, or not above the last one it
accepted (see ``fleet_connector.requests.signatures``), so the counter must grow across
fleetctl runs, machines and lost files: it is the larger of the last one used plus one (kept
next to the key in ``<key file>.counter``) and the time in microseconds.

Every request is signed when it is sent, for its car, with a counter of its own and a
not-after counted from then: a run or a rollout that takes longer than the validity (waves,
soak times, rate limits, cars that were offline) still sends each car a request it can
accept, and a request signed later (by another run) never carries a lower counter than
one signed before it. Cars refuse a not-after further ahead than their maximum validity
(``SIGNED_MAX_VALIDITY``, 24 h by default), which is why the validity is short and the
signature made per attempt instead.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleet_connector.requests.signatures import ALL_CARS, Claims, SigningKey, sign

DEFAULT_VALID_FOR = 3600
CAR_MAX_VALIDITY = 24 * 3600
"""A car's SIGNED_MAX_VALIDITY unless its operator changed it: a longer validity is refused."""


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
    """Signs requests with one key for one operation; each signature gets a fresh counter
    and a not-after ``valid_for`` seconds after it was made."""

    def __init__(
        self,
        key_path: Path,
        operation: Operation,
        valid_for: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = load_key(key_path)
        self.operation = operation
        self.valid_for = valid_for
        self._key_path = key_path
        self._clock = clock
        # Taken now so that a counter file that cannot be written is a usage error found
        # before anything is sent; the first signature uses it.
        self._reserved: int | None = self._next_counter()

    def envelope(self, payload: bytes, targets: Sequence[str]) -> bytes:
        return self.signed(payload, targets)[0]

    def signed(self, payload: bytes, targets: Sequence[str]) -> tuple[bytes, int]:
        """The envelope, signed now, and its not-after (Unix seconds)."""
        counter, self._reserved = self._reserved or self._next_counter(), None
        # Rounded down: never further ahead than asked, so a car's maximum validity that
        # equals --sign-valid-for still accepts it.
        not_after = int(self._clock()) + self.valid_for
        claims = Claims(self.key.key_id, self.operation, tuple(targets), counter, not_after)
        return sign(self.key, claims, payload).envelope(), not_after

    def for_car(self, payload: bytes) -> Callable[[str], bytes]:
        """``vin -> payload signed for that car alone``, signed at each call."""
        return lambda vin: self.envelope(payload, [vin])

    def _next_counter(self) -> int:
        try:
            return next_counter(self._key_path)
        except OSError as e:
            raise ConfigError(
                f"cannot keep the counter next to {self._key_path}: {e.strerror}"
            ) from None


def targets_of(vins: Sequence[str], all_cars: bool) -> list[str]:
    if all_cars:
        return [ALL_CARS]
    if not vins:
        raise ConfigError("name the cars the signature is for with --vin/--vins, or --all-cars")
    return list(vins)
