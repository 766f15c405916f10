"""Options read once from flags and environment: a flag overrides its environment variable.

Each program declares its options as a list of :class:`Option`; :func:`parse` turns argv and
the environment into plain values or raises :class:`ConfigError` with one clear line.
"""

from __future__ import annotations

import argparse
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


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of exiting, so callers decide the exit."""

    def error(self, message: str) -> Any:
        raise ConfigError(message)


def build_parser(prog: str, description: str, options: Sequence[Option]) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description)
    add_options(parser, options)
    return parser


def add_options(parser: argparse._ActionsContainer, options: Sequence[Option]) -> None:
    """Adds the flags of ``options`` to a parser or an argument group."""
    for option in options:
        if option.is_switch:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action="store_true",
                default=None,
                help=option.describe(),
            )
        else:
            parser.add_argument(
                option.flag, dest=option.name, metavar=option.name.upper(), help=option.describe()
            )


def parse(
    parser: argparse.ArgumentParser,
    options: Sequence[Option],
    argv: Sequence[str],
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """Values of all options; flags win over environment, environment over defaults."""
    args = parser.parse_args(list(argv))
    values: dict[str, Any] = {}
    for option in options:
        raw: Any = getattr(args, option.name)
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
