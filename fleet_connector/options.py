"""Options read once from flags and environment: a flag overrides its environment variable.

Each program declares its options as a list of :class:`Option`; :func:`resolve` turns the
flags given (:mod:`fleet_connector.flags` reads them from argv) and the environment into
plain values or raises :class:`ConfigError` with one clear line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """Invalid configuration; the message is one line for the user."""


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its environment variable and how to read it."""

    name: str
    flag: str
    env: str | None
    help: str
    default: Any = None
    convert: Callable[[str], Any] = str
    secret: bool = False
    is_switch: bool = False

    def describe(self) -> str:
        env = f" [env {self.env}]" if self.env else ""
        default = "" if self.default is None or self.secret else f" (default: {self.default})"
        return f"{self.help}{default}{env}"


def resolve(
    options: Sequence[Option], flags: Mapping[str, Any], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Values of all options; flags win over environment, environment over defaults.

    ``flags``: the flags given, by option name (None or missing: not given); see
    :func:`fleet_connector.flags.parse`.
    """
    values: dict[str, Any] = {}
    for option in options:
        raw: Any = flags.get(option.name)
        source = option.flag
        if raw is None and option.env and environ.get(option.env, "") != "":
            raw = environ[option.env]
            source = option.env
        if raw is None:
            values[option.name] = option.default
            continue
        if option.is_switch:
            values[option.name] = raw is True or str(raw).lower() in ("1", "true", "yes", "on")
            continue
        try:
            values[option.name] = option.convert(raw)
        except ValueError as e:
            detail = "" if option.secret else f" {raw!r}"
            raise ConfigError(f"invalid value for {source}:{detail} ({e})") from None
    return values


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number greater than 0")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a whole number greater than 0")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be a whole number, 0 or more")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be a port number from 1 to 65535") from None
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return value
