"""Keeps the connector's own secrets out of what it sends.

Whoever may read the state may read ``runtimeConfig``, and a password given there (``-e
MQTT_PASSWORD=...`` in the startup state) would be readable through a state request. The
README says to give secrets as files instead; this is the second line: a secret the
connector knows never leaves it in a reply, in any spelling JSON gives it, nor written with
escapes (``pa\\u002dss``) that the runtime's YAML or JSON turns back into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"
# Shorter values would redact ordinary text; no credential is that short.
MIN_LENGTH = 6
# Escapes of YAML double-quoted scalars and JSON strings (a runtimeConfig is YAML, and may
# hold JSON): \xXX, \uXXXX, \UXXXXXXXX and the one-character ones.
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)", re.DOTALL)
_SIMPLE = {
    "0": "\0", "a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
    "e": "\x1b", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029",
}  # fmt: skip
# Escaped text hides a secret at most this deep (a JSON string in YAML in JSON).
_DEPTH = 3


class Redactor:
    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        self._secrets = sorted(
            {s for s in secrets if s and len(s) >= MIN_LENGTH}, key=len, reverse=True
        )
        for secret in self._secrets:
            # As it is, and as JSON writes it (a reply is JSON; a runtimeConfig in a
            # reply may hold JSON itself, so twice escaped too).
            for once in (secret, _escaped(secret, True), _escaped(secret, False)):
                forms.update((once, _escaped(once, True), _escaped(once, False)))
        # Longest first, so a form that contains another is replaced whole.
        self._forms = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        if self._secrets and "\\\\" in text:
            # A string value with escapes of its own: read as its reader will, it may spell
            # a secret that none of the forms above matched.
            try:
                tree = json.loads(text)
            except ValueError:
                return text
            cleaned, changed = self._clean(tree)
            if changed:
                return json.dumps(cleaned)
        return text

    def _clean(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, str):
            return self._clean_text(value)
        if isinstance(value, list):
            items = [self._clean(item) for item in value]
            return [item for item, _ in items], any(changed for _, changed in items)
        if isinstance(value, dict):
            pairs = {key: self._clean(item) for key, item in value.items()}
            return {k: v for k, (v, _) in pairs.items()}, any(c for _, c in pairs.values())
        return value, False

    def _clean_text(self, text: str) -> tuple[str, bool]:
        decoded = text
        for _ in range(_DEPTH):
            if "\\" not in decoded:
                break
            decoded = _unescape(decoded)
            if any(secret in decoded for secret in self._secrets):
                # Shown decoded, so that what is left of it reads as it will be read.
                for secret in self._secrets:
                    decoded = decoded.replace(secret, REDACTED)
                return decoded, True
        return text, False


def _escaped(text: str, ascii_only: bool) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape[0] in "xuU" and len(escape) > 1:
            try:
                return chr(int(escape[1:], 16))
            except (ValueError, OverflowError):
                return match.group(0)
        return _SIMPLE.get(escape, escape)

    return _ESCAPE.sub(one, text)
