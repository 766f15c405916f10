"""Deterministic chance: the same seed, VIN and counter always draw the same number.

A ``random.Random`` per car would hold 2.5 KB of generator state; a hash of what is being
decided costs nothing to keep and does not depend on the order cars are served in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

_SCALE = float(1 << 64)


def unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / _SCALE


@dataclass(frozen=True)
class Latency:
    """How long a car takes to answer: ``0.05`` (fixed), ``uniform:0.01:0.2`` or
    ``exp:0.05`` (exponential with that mean), in seconds; optionally capped by ``max``."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0
    cap: float = 60.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        kind, _, rest = text.strip().partition(":")
        try:
            if not rest:
                value = float(kind)
                if value < 0:
                    raise ValueError
                return cls("fixed", value)
            numbers = [float(x) for x in rest.split(":")]
        except ValueError:
            raise ValueError(
                f"latency {text!r}: a number of seconds, uniform:A:B or exp:MEAN"
            ) from None
        if kind == "uniform" and len(numbers) == 2 and 0 <= numbers[0] <= numbers[1]:
            return cls("uniform", numbers[0], numbers[1])
        if kind == "exp" and len(numbers) == 1 and numbers[0] >= 0:
            return cls("exp", numbers[0])
        raise ValueError(f"latency {text!r}: a number of seconds, uniform:A:B or exp:MEAN")

    def sample(self, u: float) -> float:
        """The latency for a draw ``u`` in [0, 1)."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * u
        return min(self.cap, -self.a * math.log(1.0 - u))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        if self.kind == "uniform":
            return f"uniform:{self.a:g}:{self.b:g}"
        return f"exp:{self.a:g}"
