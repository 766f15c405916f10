"""``fleetctl logs``: workloads' logs of one car, like ``ank logs``."""

from __future__ import annotations

import argparse

from fleet_connector.options import ConfigError, non_negative_int
from fleetctl.client import logs
from fleetctl.commands import options
from fleetctl.commands.command import Command, Invocation, define, stop_on_sigterm
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "logs",
        help="print workloads' logs of one car",
        description="Print the logs of workloads of one car (--vin), like ank logs.",
    )
    options.add_cars(parser)
    options.add_broker(parser)
    parser.add_argument("workloads", nargs="+", metavar="WORKLOAD")
    parser.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)"
    )
    parser.add_argument(
        "--follow-for",
        type=options.seconds,
        default=600.0,
        metavar="SECONDS",
        help="with -f: stop after this long (default: 600, the connector's usual limit)",
    )
    parser.add_argument(
        "-n",
        "--tail",
        type=options.checked(non_negative_int, "a whole number, 0 or more"),
        metavar="N",
        help="only the last N lines (default: all, up to the connector's limit)",
    )
    parser.add_argument("--since", metavar="TIME", help="RFC 3339 time, e.g. 2026-12-02T10:00:00Z")
    parser.add_argument("--until", metavar="TIME", help="RFC 3339 time")
    parser.add_argument(
        "--timeout",
        type=options.seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the broker and for each answer (default: 10)",
    )
    define(parser, Command(_run, prepare=_one_car))


def _one_car(args: argparse.Namespace, vins: list[str]) -> bytes:
    if len(vins) != 1:
        raise ConfigError("fleetctl logs reads one car: name it with --vin")
    return b""


def _run(invocation: Invocation) -> int:
    args = invocation.args
    query = logs.LogsQuery(
        vin=invocation.vins[0],
        workloads=list(args.workloads),
        tail=args.tail,
        follow=args.follow_for if args.follow else 0,
        since=args.since,
        until=args.until,
    )
    with stop_on_sigterm():
        return logs.run(invocation.settings, query, timeout=args.timeout)
