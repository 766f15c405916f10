"""``fleetctl get workloads|agents|configs [NAME...]`` and ``describe car VIN``: what the cars'
connectors publish (workloads, agents, presence: no car is asked), and the configs, which
only the cars know (a state request)."""

from __future__ import annotations

import argparse
import json

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleetctl import output
from fleetctl.client import live, server_runs
from fleetctl.commands import options, requests
from fleetctl.commands.command import FAILED, OK, Command, Invocation, define
from fleetctl.commands.options import Subcommands

# Singular and plural, as kubectl and ank take them.
KINDS = {
    "workload": "workloads",
    "workloads": "workloads",
    "agent": "agents",
    "agents": "agents",
    "config": "configs",
    "configs": "configs",
}


def register(subcommands: Subcommands) -> None:
    get = subcommands.add_parser(
        "get",
        help="list the cars' workloads, agents or configs",
        description="get workloads|agents [NAME...]: the live workload states or agents of "
        "the cars named (or of every car on the broker), from the connectors' retained "
        "messages; no car is asked. get configs [NAME...] --vin ...: the configs, read from "
        "each car named (a state request).",
    )
    options.add_cars(get)
    options.add_broker(get)
    get.add_argument(
        "what",
        choices=sorted(KINDS),
        metavar="workloads|agents|configs",
        help="what to list (singular or plural)",
    )
    get.add_argument("names", nargs="*", metavar="NAME", help="only these")
    options.add_listening(get)
    options.add_output(get, "table, wide, json or yaml", wide=True)
    define(get, Command(_run, prepare=_check, through_server=_through_server))

    describe = subcommands.add_parser(
        "describe",
        help="everything the broker holds about one car",
        description="describe car VIN: its presence, agents and workloads, from the "
        "connector's retained messages (no request reaches the car). Exits 1 when the "
        "broker has nothing for it.",
    )
    options.add_broker(describe)
    describe.add_argument("kind", choices=["car"], help="what to describe")
    describe.add_argument("car", metavar="VIN")
    options.add_listening(describe)
    options.add_output(describe, "table, json or yaml")
    define(describe, Command(_describe))


def _check(args: argparse.Namespace, vins: list[str]) -> bytes:
    if KINDS[args.what] == "configs":
        if not vins:
            raise ConfigError(
                "get configs asks the cars: name them with --vin, --vins or --vins-file"
            )
        masks = [f"desiredState.configs.{name}" for name in args.names] or ["desiredState.configs"]
        return json.dumps(masks).encode()
    return b""


def _through_server(invocation: Invocation) -> int:
    """The workloads as fleet-server's inventory has them (an offline car's: last known)."""
    args = invocation.args
    server = invocation.server
    assert server is not None
    if invocation.vins:
        chosen = server_runs.choose(server, invocation.vins, invocation.selector)
        cars = [car for vin in chosen if (car := server.car(vin)) is not None]
    else:
        cars = server.cars(invocation.selector)
    print(live.render(server_runs.workload_rows(cars), args.output), flush=True)
    return OK


def _run(invocation: Invocation) -> int:
    args = invocation.args
    kind = KINDS[args.what]
    if kind == "configs":
        # A state request like `fleetctl state desiredState.configs`, shown as configs.
        for name, default in (("batch_size", None), ("max_failures", None), ("expiry", None)):
            setattr(args, name, getattr(args, name, default))
        return requests.send(
            invocation, Operation.STATE, {"configs": args.names}, command="get-configs"
        )
    retained = live.collect_retained(
        invocation.settings, vins=invocation.vins, listen=args.listen, timeout=args.timeout
    )
    wanted = set(args.names)
    if kind == "agents":
        agents = [a for a in retained.agents if not wanted or a.agent in wanted]
        print(live.render_agents(agents, retained.presences, args.output), flush=True)
        return OK
    rows = [r for r in retained.workloads if not wanted or r.workload in wanted]
    print(live.render(rows, args.output), flush=True)
    return OK


def _describe(invocation: Invocation) -> int:
    args = invocation.args
    vin = args.car
    retained = live.collect_retained(
        invocation.settings, vins=[vin], listen=args.listen, timeout=args.timeout
    )
    presence = retained.presences.get(vin)
    if presence is None and not retained.workloads and not retained.agents:
        print(f"fleetctl: the broker holds nothing for car {output.terminal_safe(vin)}", flush=True)
        return FAILED
    print(live.render_car(vin, retained, args.output), flush=True)
    return OK
