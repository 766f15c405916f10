"""Flags that several commands share, and how flag values are checked.

A command adds the shared groups right after making its parser and before its own flags,
so that its usage line lists them first, as it always has.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.flags import add_options
from fleet_connector.mqtt.broker import BROKER_OPTIONS
from fleet_connector.options import ConfigError, positive_float, positive_int
from fleetctl import output
from fleetctl.client import signing


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
    """Where the broker is and how to log in (flags over environment over defaults)."""
    add_options(parser.add_argument_group("broker"), BROKER_OPTIONS)


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
    add_output(group, "table for people (default), json or yaml for scripts")
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


def add_output(parser: argparse._ActionsContainer, help_text: str) -> None:
    parser.add_argument("-o", "--output", choices=output.FORMATS, default="table", help=help_text)


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


def add_signing(parser: argparse.ArgumentParser) -> None:
    """--sign-key and --sign-valid-for, for the commands that send requests."""
    parser.add_argument("--sign-key", metavar="KEY", help="sign each car's request with this key")
    add_validity(parser)


def add_validity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sign-valid-for",
        type=_whole_seconds,
        default=signing.DEFAULT_VALID_FOR,
        metavar="SECONDS",
        help="a car refuses the signed request after this long (default: "
        f"{signing.DEFAULT_VALID_FOR}); keep it longer than a car may be offline",
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
    """The file's bytes, sent as they are, once they parse the way the connector parses them."""
    try:
        payload = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read manifest {path}: {e.strerror}") from None
    try:
        parse_manifest(payload)
    except RequestError as e:
        raise ConfigError(f"{path}: {e.message}") from None
    return payload
