"""``fleetctl get workloads``: the cars' live workload states, without asking the cars."""

from __future__ import annotations

from fleetctl.client import live
from fleetctl.commands import options
from fleetctl.commands.command import OK, Command, Invocation, define
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    get = subcommands.add_parser(
        "get",
        help="list what the cars' connectors publish, without asking the cars",
        description="get workloads: the live workload states of the cars named (or of every "
        "car on the broker), from the connectors' retained messages.",
    )
    options.add_cars(get)
    options.add_broker(get)
    get.add_argument("what", choices=["workloads"], metavar="workloads")
    options.add_listening(get)
    options.add_output(get, "table, json or yaml")
    define(get, Command(_run))


def _run(invocation: Invocation) -> int:
    args = invocation.args
    rows = live.collect(
        invocation.settings, vins=invocation.vins, listen=args.listen, timeout=args.timeout
    )
    print(live.render(rows, args.output), flush=True)
    return OK
