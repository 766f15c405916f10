"""``fleetctl state [MASK ...]``: the cars' state, or the parts the field masks name."""

from __future__ import annotations

import argparse
import json

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleetctl.commands import options, requests
from fleetctl.commands.command import Command, Invocation, define
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    state = subcommands.add_parser(
        "state",
        help="read cars' state",
        description="Read the state of every car named; with no MASK the complete state.",
    )
    options.add_request_options(state)
    state.add_argument(
        "masks",
        nargs="*",
        metavar="MASK",
        help="field masks, e.g. workloadStates or desiredState.workloads.NAME",
    )
    define(state, Command(_run, prepare=_masks, needs_cars=True))


def _masks(args: argparse.Namespace, vins: list[str]) -> bytes:
    if any(not mask.strip() for mask in args.masks):
        raise ConfigError("a field mask must not be empty")
    return json.dumps(list(args.masks)).encode()


def _run(invocation: Invocation) -> int:
    return requests.send(invocation, Operation.STATE, {"masks": invocation.args.masks})
