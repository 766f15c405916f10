"""The live view of a rollout at a terminal: its waves and their cars, redrawn as they change.

Drawn with ``rich`` (a live table: per wave the cars done, running, failed, offline and
pending, and the rollout's current phase), only when stderr is a terminal and the
``terminal`` extra is installed; otherwise there is no live view at all, so piped and
``-o json`` output stays plain. ``rich`` is imported only then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from fleetctl.rollouts.records import FAILED, OFFLINE, OK, PENDING, SENT, Car

_COLUMNS = (("done", OK), ("running", "running"), ("failed", FAILED), ("offline", OFFLINE))


class LiveView:
    """Tracks each car's state; a rich ``Live`` display redraws the table."""

    def __init__(self, cars: Sequence[Car], live: Any, canary: bool) -> None:
        self._wave = {car.vin: car.wave for car in cars}
        self._state = {car.vin: (PENDING if car.state == SENT else car.state) for car in cars}
        self._canary = canary
        self._phase = ""
        self._live = live
        self._live.update(self._table(), refresh=True)

    @classmethod
    def for_stream(cls, stream: TextIO, cars: Sequence[Car], canary: bool) -> LiveView | None:
        try:
            terminal = stream.isatty()
        except (AttributeError, ValueError):
            terminal = False
        if not terminal:
            return None
        # Imported here: only a terminal needs it, and it is an extra ('.[terminal]').
        try:
            from rich.console import Console  # noqa: PLC0415
            from rich.live import Live  # noqa: PLC0415
        except ImportError:
            return None

        live = Live(console=Console(file=stream), auto_refresh=False, transient=False)
        live.start()
        return cls(cars, live, canary)

    def phase(self, text: str) -> None:
        self._phase = text
        self._live.update(self._table(), refresh=True)

    def update(self, vin: str, state: str) -> None:
        self._state[vin] = state
        self._live.update(self._table(), refresh=True)

    def close(self) -> None:
        self._live.stop()

    def _table(self) -> Any:
        from rich.table import Table  # noqa: PLC0415

        table = Table(title=self._phase or None, title_justify="left")
        table.add_column("wave")
        for title, _ in _COLUMNS:
            table.add_column(title, justify="right")
        table.add_column("pending", justify="right")
        per_wave: dict[int, Counter[str]] = {}
        for vin, state in self._state.items():
            per_wave.setdefault(self._wave[vin], Counter())[state] += 1
        for wave, counts in sorted(per_wave.items()):
            name = (
                "canary" if self._canary and wave == 0 else str(wave + (0 if self._canary else 1))
            )
            cells = [str(counts.get(state, 0)) for _, state in _COLUMNS]
            table.add_row(name, *cells, str(counts.get(PENDING, 0)))
        return table
