"""``fleetctl status``: the cars' presence, from their connectors' retained messages."""

from __future__ import annotations

from fleetctl import output
from fleetctl.client import presence, server_runs
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
    define(status, Command(_run, through_server=_through_server))


def _through_server(invocation: Invocation) -> int:
    """The cars as fleet-server's inventory has them, with their labels."""
    args = invocation.args
    server = invocation.server
    assert server is not None
    if invocation.vins:
        chosen = set(server_runs.choose(server, invocation.vins, invocation.selector))
        cars = []
        for vin in invocation.vins:
            car = server.car(vin) if vin in chosen else None
            cars.append(car or {"vin": vin, "online": None})
    else:
        cars = server.cars(invocation.selector)
    print(output.render_inventory(cars, args.output), flush=True)
    if invocation.vins and not all(output.inventory_ready(car) for car in cars):
        return FAILED
    return OK


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
