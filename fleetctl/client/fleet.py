"""Which cars a command is for: VINs from flags, range/list specs and files.

``--vins`` takes comma-separated items; an item ``A-B`` whose ends share a prefix and end in
digits is a range (``1-500``, ``CAR001-CAR020``, ``CAR01-20``), anything else is one VIN.
Zero padding of the start is kept, so ``CAR001-CAR020`` names ``CAR001`` ... ``CAR020``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from fleet_connector.config import check_vin
from fleet_connector.options import ConfigError

# More than this in one range is almost certainly a typo (1-50000 for 1-500).
MAX_RANGE = 100_000

_RANGE = re.compile(r"(?P<prefix>.*?)(?P<start>\d+)-(?P<end_prefix>.*?)(?P<end>\d+)")


def expand_spec(spec: str) -> list[str]:
    """The VINs of one ``--vins`` value, in order; raises ConfigError."""
    vins: list[str] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        vins.extend(_expand_item(item))
    if not vins:
        raise ConfigError(f"--vins {spec!r} names no car")
    return vins


def _expand_item(item: str) -> list[str]:
    match = _RANGE.fullmatch(item)
    if match is None or match["end_prefix"] not in ("", match["prefix"]):
        check_vin(item)
        return [item]
    if match["end_prefix"] == "" and match["prefix"] and "-" in match["prefix"]:
        # "AB-1-3": a prefix with a dash is ambiguous; refuse rather than guess.
        raise ConfigError(f"--vins item {item!r} is ambiguous; write PREFIX1-PREFIX3")
    prefix, start_text = match["prefix"], match["start"]
    start, end = int(start_text), int(match["end"])
    if end < start:
        raise ConfigError(f"--vins range {item!r} ends before it starts")
    if end - start + 1 > MAX_RANGE:
        raise ConfigError(f"--vins range {item!r} names more than {MAX_RANGE} cars")
    width = len(start_text) if start_text.startswith("0") else 0
    vins = [f"{prefix}{number:0{width}d}" for number in range(start, end + 1)]
    for vin in (vins[0], vins[-1]):
        check_vin(vin)
    return vins


def read_vins_file(path: Path) -> list[str]:
    """One VIN per line; blank lines and ``#`` comments are skipped; ``-`` is stdin."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read VIN file {path}: {e}") from None
    vins = []
    for line in text.splitlines():
        vin = line.split("#", 1)[0].strip()
        if vin:
            check_vin(vin)
            vins.append(vin)
    if not vins:
        raise ConfigError(f"VIN file {path} names no car")
    return vins


def select(
    vins: Sequence[str] = (), specs: Sequence[str] = (), files: Sequence[str] = ()
) -> list[str]:
    """All VINs named by the flags, first mention first, each once."""
    named: list[str] = []
    for vin in vins:
        check_vin(vin.strip())
        named.append(vin.strip())
    for spec in specs:
        named.extend(expand_spec(spec))
    for name in files:
        named.extend(read_vins_file(Path(name)))
    return _unique(named)


def _unique(vins: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(vins))
