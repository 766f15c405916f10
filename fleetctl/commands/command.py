"""What a command is to the app: what it checks before anything is sent, and how it runs.

Exit codes: 0 every car succeeded; 1 a car failed, timed out or was not attempted, or the
broker could not be used; 2 usage error (bad flags, unreadable or invalid file), found
before anything is sent.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from fleet_connector.mqtt.broker import BrokerSettings
from fleetctl.client import logs

OK, FAILED, USAGE = 0, 1, 2
# How long the commands that do not take --timeout wait for the broker.
CONNECT_TIMEOUT = 10.0


def no_payload(args: argparse.Namespace, vins: list[str]) -> bytes:
    return b""


@dataclass(frozen=True)
class Command:
    """A command's behaviour, attached to its parser by :func:`define`."""

    run: Callable[[Invocation], int]
    prepare: Callable[[argparse.Namespace, list[str]], bytes] = no_payload
    """Checks what flags cannot (raises ConfigError: exit 2) and returns what is to be sent."""
    needs_cars: bool = False
    """Exit 2 unless cars are named with --vin, --vins or --vins-file."""
    offline: bool = False
    """Never connects: the broker's flags and environment are not read, and a ConfigError
    while running is a usage error too."""


def define(parser: argparse.ArgumentParser, command: Command) -> None:
    """Makes ``command`` what runs when the command line names ``parser``'s command."""
    parser.set_defaults(handler=command)


@dataclass(frozen=True)
class Invocation:
    """A command line, parsed and checked."""

    handler: Command
    args: argparse.Namespace
    settings: BrokerSettings
    vins: list[str]
    payload: bytes = b""


# SIGTERM while watching or following logs: stop like Ctrl-C does.
Stopped = logs.Interrupted


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise Stopped

    if threading.current_thread() is not threading.main_thread():
        # Signals reach only the main thread; a watch run from another thread stops by --count.
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
