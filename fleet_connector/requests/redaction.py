"""Keeps the connector's own secrets out of what it sends.

Whoever may read the state may read ``runtimeConfig``, and a password given there (``-e
MQTT_PASSWORD=...`` in the startup state) would be readable through a state request. The
README says to give secrets as files instead; this is the second line: a secret the
connector knows never leaves it in a reply, in any spelling JSON gives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

REDACTED = "<redacted>"
# Shorter values would redact ordinary text; no credential is that short.
MIN_LENGTH = 6


class Redactor:
    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LENGTH:
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
        return text


def _escaped(text: str, ascii_only: bool) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]
