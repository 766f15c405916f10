"""``fleetctl dashboard``: serve a live web page of the fleet (see :mod:`fleetctl.dashboard`)."""

from __future__ import annotations

from fleetctl import dashboard
from fleetctl.commands import options
from fleetctl.commands.command import CONNECT_TIMEOUT, Command, Invocation, define
from fleetctl.commands.options import Subcommands

DEFAULT_PORT = 8080
LOOPBACK = "127.0.0.1"


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("out of range")
    return value


def register(subcommands: Subcommands) -> None:
    board = subcommands.add_parser(
        "dashboard",
        help="serve a live web page of the fleet",
        description="Serve a web page with the cars (or the cars named), their workloads, "
        "agents, recent apply/delete outcomes and log tails, updated live. Read-only.",
    )
    options.add_cars(board)
    options.add_broker(board)
    group = board.add_argument_group("dashboard")
    group.add_argument(
        "--port",
        type=options.checked(_port, "a port from 0 to 65535"),
        default=DEFAULT_PORT,
        metavar="N",
        help=f"the port to serve on; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    group.add_argument(
        "--listen",
        default=LOOPBACK,
        metavar="ADDRESS",
        help=f"the address to serve on (default: {LOOPBACK}); any other address lets "
        "whoever reaches it see the fleet and read logs, without a password",
    )
    define(board, Command(_run))


def _run(invocation: Invocation) -> int:
    args = invocation.args
    return dashboard.run(
        invocation.settings, invocation.vins, args.listen, args.port, CONNECT_TIMEOUT
    )
