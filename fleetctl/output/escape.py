"""Car-supplied text made safe to write to a terminal.

Cars are not trusted: a workload's log line, an error message, a VIN or a workload name
can hold ANSI escapes (an OSC 52 clipboard write, a title change, a cleared screen), a
carriage return or a bidirectional override that makes a line say something else than it
does. Everything fleetctl writes for people and that came from a car goes through
:func:`terminal_safe` (one line) or :func:`terminal_text` (several lines): the characters
that could act on a terminal are shown escaped, the way Python writes them (``\\x1b``).

This module imports nothing of fleetctl, so any command, the tables and the client can use it.
"""

from __future__ import annotations

import re

# C0 and C1 controls (ESC, BEL, CR, LF, TAB, DEL, CSI ...), zero-width characters, line and
# paragraph separators, bidirectional embeddings, overrides and isolates, invisible
# operators, the byte-order mark and lone surrogates.
_UNSAFE = (
    "\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\ud800-\udfff"
)
_ONE_LINE = re.compile(f"[{_UNSAFE}]")
# The same, but a line feed passes: for text of several lines that fleetctl put together.
_LINES = re.compile(f"(?!\n)[{_UNSAFE}]")
# Like _ONE_LINE, but a tab passes: log lines keep their indentation.
_LOG_LINE = re.compile(f"(?!\t)[{_UNSAFE}]")


def _escaped(match: re.Match[str]) -> str:
    return ascii(match.group())[1:-1]


def terminal_safe(text: str) -> str:
    """``text`` as one line, every character that could act on a terminal escaped."""
    return _ONE_LINE.sub(_escaped, text)


def terminal_text(text: str) -> str:
    """``text`` of several lines: like :func:`terminal_safe`, but line feeds stay."""
    return _LINES.sub(_escaped, text)


def log_line(text: str) -> str:
    """One line of a workload's log: like :func:`terminal_safe`, but tabs stay."""
    return _LOG_LINE.sub(_escaped, text)
