"""Flags that several commands share, and how flag values are checked.

A command adds the shared groups right after making its parser and before its own flags,
so that its usage line lists them first, as it always has.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from fleet_connector.flags import add_options
from fleet_connector.mqtt.broker import BROKER_OPTIONS
from fleet_connector.options import ConfigError, positive_float, positive_int
from fleetctl import output
from fleetctl.client import signing
from fleetctl.commands import manifests


class Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so main() decides the exit code and tests can call it."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"{message} (see fleetctl {self._command()}--help)")

    def _command(self) -> str:
        name = self.prog.removeprefix("fleetctl").strip()
        return f"{name} " if name else ""


# What register(subcommands) gets: the top-level parser's subcommands.
Subcommands: TypeAlias = "argparse._SubParsersAction[Parser]"


def checked(convert: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse type saying what it expects, not "invalid positive_int value"."""

    def checked(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None

    return checked


# MQTT 5's Message Expiry Interval is a four-byte integer.
MAX_EXPIRY = 2**32 - 1


def _expiry_seconds(text: str) -> int:
    value = positive_int(text)
    if value > MAX_EXPIRY:
        raise ValueError("too large")
    return value


seconds = checked(positive_float, "a number of seconds greater than 0")
count = checked(positive_int, "a whole number greater than 0")
expiry = checked(_expiry_seconds, f"a whole number of seconds from 1 to {MAX_EXPIRY}")


def add_broker(parser: argparse.ArgumentParser) -> None:
    """Where the broker is and how to log in (flags over environment over defaults), or
    which context to work in (a fleet-server or a broker)."""
    add_context(parser)
    add_options(parser.add_argument_group("broker"), BROKER_OPTIONS)


def add_context(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: given before the command (fleetctl --context X status) it is kept, not
    # overwritten by the command's own default.
    parser.add_argument(
        "--context",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="work in this context (fleetctl config get-contexts) instead of the current one",
    )


def add_cars(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cars")
    group.add_argument(
        "--vin", action="append", default=[], metavar="VIN", help="a car, by VIN (repeatable)"
    )
    group.add_argument(
        "--vins",
        action="append",
        default=[],
        metavar="LIST",
        help="cars as a comma-separated list of VINs and ranges, "
        "e.g. 1-500 or CAR001-CAR020,CAR7 (repeatable)",
    )
    group.add_argument(
        "--vins-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file with one VIN per line, # starts a comment, - reads stdin (repeatable)",
    )
    group.add_argument(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="cars by their labels, e.g. region=eu,model in (a,b),!beta (needs a context "
        "with a fleet-server; with cars named too: those named that match)",
    )


def add_requests(parser: argparse.ArgumentParser) -> None:
    """How a request is sent to many cars: waves, timeouts, expiry, and the output format."""
    group = parser.add_argument_group("requests")
    group.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the replies of a wave, and for the broker (default: 10)",
    )
    group.add_argument(
        "--expiry",
        type=expiry,
        metavar="SECONDS",
        help="requests not delivered to a car within SECONDS are dropped by the broker, and "
        "answered EXPIRED by a connector that had them queued that long (MQTT 5 only; "
        "default: no expiry, an offline car gets them when it is back)",
    )
    add_output(
        group, "table for people (default; wide: request ids, seconds), json or yaml", wide=True
    )
    group.add_argument(
        "--batch-size",
        type=count,
        metavar="N",
        help="send to N cars at a time, a wave after the previous one "
        "finished (default: all at once)",
    )
    group.add_argument(
        "--max-failures",
        type=count,
        metavar="K",
        help="stop after the wave in which the K-th car failed; later cars are not attempted",
    )


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """The shared flags of the commands that send one request to every car named."""
    add_cars(parser)
    add_requests(parser)
    add_broker(parser)


def add_output(parser: argparse._ActionsContainer, help_text: str, *, wide: bool = False) -> None:
    """-o; ``wide`` adds the table with more columns (as kubectl's -o wide)."""
    formats = (*output.FORMATS, "wide") if wide else output.FORMATS
    parser.add_argument("-o", "--output", choices=formats, default="table", help=help_text)


def add_listening(parser: argparse.ArgumentParser) -> None:
    """How long to collect the retained messages the connectors publish."""
    parser.add_argument(
        "--listen",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="stop collecting after this long without a new message (default: 1.0)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="stop collecting after this long in any case (default: 10)",
    )


def add_signing(
    parser: argparse.ArgumentParser,
    *,
    key_help: str = "sign each car's request with this key, for that car, when it is sent",
    default_valid_for: int | None = signing.DEFAULT_VALID_FOR,
) -> None:
    """--sign-key and --sign-valid-for, for the commands that send requests."""
    parser.add_argument("--sign-key", metavar="KEY", help=key_help)
    add_validity(parser, default_valid_for)


def add_validity(
    parser: argparse.ArgumentParser, default: int | None = signing.DEFAULT_VALID_FOR
) -> None:
    shown = "the rollout's, else " if default is None else ""
    parser.add_argument(
        "--sign-valid-for",
        type=_whole_seconds,
        default=default,
        metavar="SECONDS",
        help="a car refuses the signed request this long after it was signed (default: "
        f"{shown}{signing.DEFAULT_VALID_FOR}); cars refuse more than their "
        "SIGNED_MAX_VALIDITY (3600 s unless changed). Each car's request is signed when it is "
        "sent: for cars offline longer, send again (rollout resume signs a new attempt)",
    )


def warn_about_validity(valid_for: int | None) -> None:
    """A validity cars refuse by default is the operator's call, but not a silent one."""
    if valid_for is not None and valid_for > signing.CAR_MAX_VALIDITY:
        print(
            f"fleetctl: warning: --sign-valid-for {valid_for} is more than "
            f"{signing.CAR_MAX_VALIDITY} s; cars refuse it unless their SIGNED_MAX_VALIDITY "
            "allows it",
            file=sys.stderr,
        )


def _whole_seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds above 0")
    return value


def load_manifest(path: Path) -> bytes:
    """The manifest to send for a FILE argument: a file, ``-`` (stdin) or a directory."""
    return manifests.load(str(path))
