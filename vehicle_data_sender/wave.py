"""The simulated speed: the reference sender's deterministic triangle wave."""

from __future__ import annotations

TOP = 100
BOTTOM = 0


class TriangleWave:
    """1, 2, ..., 100, 99, ..., 0, 1, 2, ... as the tutorial's sender produces it.

    `peek()` is the value to send next; `advance()` moves on once it was sent, so a value
    that could not be published is offered again instead of leaving a gap.
    """

    def __init__(self) -> None:
        self._value = BOTTOM
        self._step = 1

    def _following(self) -> tuple[int, int]:
        value = self._value + self._step
        step = self._step
        if value >= TOP:
            step = -1
        elif value <= BOTTOM:
            step = 1
        return value, step

    def peek(self) -> int:
        return self._following()[0]

    def advance(self) -> int:
        """Moves to the next value and returns it."""
        self._value, self._step = self._following()
        return self._value
