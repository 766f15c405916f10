"""Manifests checked against the JSON Schema of Ankaios 1.0.1's ``ank apply``, plus warnings.

``ank apply`` (Ankaios 1.0.1) validates ``apiVersion: v1`` manifests against the schema
its ``ank_schema`` crate generates; ``schemas/manifest-v1.json`` mirrors it (patterns and
lengths of names, agents, config keys, filter masks and log rules). Ankaios ignores keys
it does not know, so a typo such as ``restartpolicy`` silently falls back to the default;
both schemas close every Ankaios object (``additionalProperties: false``), and exactly
those findings become warnings, for ``v0.1`` too. Ankaios checks no ``v0.1`` manifest
against a schema, so for ``v0.1`` only the warnings count.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

SCHEMA_VERSIONS = ("v1", "v0.1")


@dataclass(frozen=True)
class Findings:
    """What the schema says about one manifest."""

    errors: tuple[str, ...] = ()
    """Violations Ankaios would refuse (``ank apply`` of v1 manifests)."""
    warnings: tuple[str, ...] = ()
    """Keys Ankaios would ignore, each with where it is and what was probably meant."""


def schema(api_version: str) -> dict[str, Any]:
    """The JSON Schema shipped for ``api_version`` (``v1`` or ``v0.1``)."""
    from importlib import resources  # noqa: PLC0415 - on the first manifest only

    text = resources.files("fleet_connector.requests").joinpath(
        f"schemas/manifest-{api_version}.json"
    )
    loaded: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _validator(api_version: str) -> jsonschema.protocols.Validator:
    # Loaded only to explain a manifest with findings: it costs a car about 4 MB.
    import jsonschema  # noqa: PLC0415

    document = schema(api_version)
    cls = jsonschema.validators.validator_for(document)
    cls.check_schema(document)
    validator: jsonschema.protocols.Validator = cls(document)
    return validator


@functools.cache
def _fast(api_version: str) -> Any:
    # Compiled on the first manifest: a connector that only answers state requests never
    # loads it (bench/README.md, "Footprint").
    import fastjsonschema  # noqa: PLC0415

    return fastjsonschema.compile(schema(api_version))


def _passes_compiled(version: str, document: Any) -> bool:
    try:
        _fast(version)(document)
    except Exception:
        # Any doubt (a finding, or input it cannot handle) is settled by jsonschema.
        return False
    return True


def check(document: Any) -> Findings:
    """Errors and warnings for a loaded manifest (a mapping with a known apiVersion)."""
    version = document.get("apiVersion") if isinstance(document, dict) else None
    if version not in SCHEMA_VERSIONS:
        version = "v1"
    # A manifest without findings, the usual case, passes the compiled schema ten times
    # faster than jsonschema walks it; jsonschema then explains only the others.
    if _passes_compiled(version, document):
        return Findings()
    errors: list[str] = []
    warnings: list[str] = []
    try:
        for error in _validator(version).iter_errors(document):
            warnings.extend(_unknown_keys(error))
            if error.validator != "additionalProperties" or error.validator_value is not False:
                errors.append(f"{_where(error.absolute_path)}: {_one_line(error.message)}")
    except RecursionError:
        # Only a manifest the reader refused already gets here (it bounds the nesting of
        # what it reads); the reader's message is the one to give.
        return Findings()
    if version == "v0.1":
        errors = []
    return Findings(tuple(sorted(set(errors))), tuple(sorted(set(warnings))))


def _unknown_keys(error: jsonschema.ValidationError) -> Iterable[str]:
    """Warnings for a closed object's unknown keys; none for any other finding."""
    if error.validator != "additionalProperties" or error.validator_value is not False:
        return []
    if not isinstance(error.instance, dict) or not isinstance(error.schema, dict):
        return []
    known = list(error.schema.get("properties", {}))
    where = _where(error.absolute_path)
    import difflib  # noqa: PLC0415 - only for manifests with findings, see _fast

    found = []
    for key in sorted(str(k) for k in error.instance if k not in known):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [
            k for k in known if k.lower() == key.lower()
        ]
        hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
        found.append(f"unknown key {key!r} at {where} is ignored by Ankaios{hint}")
    return found


def _where(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
