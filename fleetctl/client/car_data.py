"""What cars publish, read as hostile data.

A car may publish anything (a defect, or a compromised car): a message that is not JSON,
nested deeper than the decoder's recursion limit, or with objects where text belongs. One
car's message must never break a command for the others, so it is read here, once.
"""

from __future__ import annotations

import json
from typing import Any

# Longest text taken from one field; a car cannot fill a terminal or a table with one value.
MAX_TEXT = 200


def json_object(payload: bytes) -> dict[str, Any] | None:
    """The payload as a JSON object; None for anything else (not JSON, too deep, a list)."""
    try:
        data: Any = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def plain_text(value: Any) -> str:
    """A field shown to a person: plain values only (else empty), at most MAX_TEXT long."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value)[:MAX_TEXT]
