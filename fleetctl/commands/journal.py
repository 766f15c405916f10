"""``fleetctl rollback`` and ``history``: the connectors' journals of changes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fleet_connector.mqtt.topics import Operation
from fleetctl.commands import options, requests
from fleetctl.commands.command import Command, Invocation, define
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    rollback = subcommands.add_parser(
        "rollback",
        help="undo the last change on cars (needs the connectors' STATE_DIR)",
        description="Undo the newest change of every car named, from its connector's journal; "
        "with --entry or --request-id, that journal entry.",
    )
    options.add_request_options(rollback)
    target = rollback.add_mutually_exclusive_group()
    target.add_argument(
        "--entry", type=options.count, metavar="N", help="the journal entry to undo"
    )
    target.add_argument("--request-id", metavar="ID", help="the request to undo, by its id")
    options.add_signing(rollback)
    define(rollback, Command(_rollback, prepare=_selector, needs_cars=True))

    history = subcommands.add_parser(
        "history",
        help="read cars' journals of changes, newest first",
        description="Read the journal of changes of every car named (needs the connectors' "
        "STATE_DIR).",
    )
    options.add_request_options(history)
    history.add_argument(
        "--limit", type=options.count, metavar="N", help="the newest N entries only"
    )
    define(history, Command(_history, prepare=_selector, needs_cars=True))


def _selector(args: argparse.Namespace, vins: list[str]) -> bytes:
    """Which entries: --entry or --request-id (rollback), --limit (history); none: all."""
    selector: dict[str, Any] = {}
    for key in ("entry", "request_id", "limit"):
        if getattr(args, key, None) is not None:
            selector[key] = getattr(args, key)
    return json.dumps(selector).encode()


def _rollback(invocation: Invocation) -> int:
    return requests.send(invocation, Operation.ROLLBACK, {})


def _history(invocation: Invocation) -> int:
    return requests.send(invocation, Operation.HISTORY, {})
