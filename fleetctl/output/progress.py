"""A one-line progress bar on stderr for people; nothing at all when stderr is not a terminal."""

from __future__ import annotations

from typing import TextIO

WIDTH = 30


class Progress:
    """Counts finished cars; redraws the line on every change."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool | None = None) -> None:
        self.total = total
        self._stream = stream
        self._enabled = _isatty(stream) if enabled is None else enabled
        self._done = 0
        self._failed = 0
        self._phase = ""
        self._drawn = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def phase(self, text: str) -> None:
        self._phase = text
        self._draw()

    def advance(self, ok: bool) -> None:
        self._done += 1
        if not ok:
            self._failed += 1
        self._draw()

    def close(self) -> None:
        if self._enabled and self._drawn:
            # Clear the bar so the results start on a clean line.
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def render(self) -> str:
        filled = WIDTH * self._done // self.total if self.total else WIDTH
        bar = "#" * filled + "-" * (WIDTH - filled)
        failed = f", {self._failed} failed" if self._failed else ""
        phase = f"  {self._phase}" if self._phase else ""
        return f"[{bar}] {self._done}/{self.total} cars{failed}{phase}"

    def _draw(self) -> None:
        if not self._enabled:
            return
        self._stream.write("\r\x1b[K" + self.render())
        self._stream.flush()
        self._drawn = True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
