"""``fleetctl status``: the cars' presence, from their connectors' retained messages."""

from __future__ import annotations

from fleetctl import output
from fleetctl.client import presence
from fleetctl.commands import options
from fleetctl.commands.command import FAILED, OK, Command, Invocation, define
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    status = subcommands.add_parser(
        "status",
        help="list cars' presence",
        description="List the cars on the broker (or the cars named) with their presence, "
        "from the connectors' retained status messages. With cars named, exits 1 unless "
        "every one is online with Ankaios connected.",
    )
    options.add_cars(status)
    options.add_broker(status)
    options.add_listening(status)
    options.add_output(status, "table (default), json or yaml")
    define(status, Command(_run))


def _run(invocation: Invocation) -> int:
    args = invocation.args
    found = presence.collect(
        invocation.settings,
        vins=invocation.vins,
        listen=args.listen,
        timeout=args.timeout,
    )
    if invocation.vins:
        cars = [found.get(vin) or presence.Presence(vin, "unknown") for vin in invocation.vins]
    else:
        cars = [found[vin] for vin in sorted(found)]
    print(output.render_presence(cars, args.output), flush=True)
    if invocation.vins and not all(car.ready for car in cars):
        return FAILED
    return OK
