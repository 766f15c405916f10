"""Command-line flags for :class:`~fleet_connector.options.Option` lists, with argparse.

Apart from :mod:`fleet_connector.options` because argparse (about 0.35 MiB of RSS) is not
needed by a connector that Ankaios starts with no flags, its settings all in the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from fleet_connector.options import ConfigError, Option, resolve


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
    return resolve(options, vars(parser.parse_args(list(argv))), environ)
