"""``fleetctl``: the app, assembled from its commands (one module each in :mod:`fleetctl.commands`).

Exit codes: 0 every car succeeded; 1 a car failed, timed out or was not attempted, or the
broker could not be used; 2 usage error (bad flags, unreadable or invalid file), found
before anything is sent.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata

from fleet_connector.flags import parse
from fleet_connector.mqtt.broker import BROKER_OPTIONS, BrokerSettings
from fleet_connector.options import ConfigError
from fleetctl.client import fleet
from fleetctl.client.connection import BrokerError
from fleetctl.commands import (
    apply,
    dashboard,
    get,
    journal,
    keys,
    logs,
    rollout,
    state,
    status,
    validate,
    watch,
)
from fleetctl.commands.command import FAILED, OK, USAGE, Command, Invocation
from fleetctl.commands.options import Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fleetctl",
        description="Apply and delete manifests, read states and presence of Ankaios cars "
        "through their fleet connectors over MQTT.",
        epilog="exit codes: 0 every car succeeded, 1 any car failed or timed out (or the "
        "broker could not be used), 2 usage error",
    )
    parser.add_argument("--version", action="version", version=f"fleetctl {_version()}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order fleetctl --help lists them.
    apply.register(subcommands)  # apply, delete, plan
    validate.register(subcommands)
    keys.register(subcommands)  # keys, sign
    state.register(subcommands)
    status.register(subcommands)
    watch.register(subcommands)
    get.register(subcommands)
    logs.register(subcommands)
    dashboard.register(subcommands)
    rollout.register(subcommands)
    journal.register(subcommands)  # rollback, history
    return parser


def _version() -> str:
    try:
        return metadata.version("ankaios-fleet-connector")
    except metadata.PackageNotFoundError:
        return "unknown"


def parse_command_line(argv: Sequence[str], environ: Mapping[str, str]) -> Invocation:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    command: Command = args.handler
    if command.offline:
        # No broker: its options (and the environment's) do not apply.
        settings = BrokerSettings()
    else:
        # flags.parse applies flags, environment and defaults to the broker options only;
        # the namespace for everything else comes from the plain parse above.
        settings = BrokerSettings.from_values(parse(parser, BROKER_OPTIONS, argv, environ))
    vins = fleet.select(
        getattr(args, "vin", []), getattr(args, "vins", []), getattr(args, "vins_file", [])
    )
    if command.needs_cars and not vins:
        raise ConfigError("name the cars with --vin, --vins or --vins-file")
    return Invocation(command, args, settings, vins, command.prepare(args, vins))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        invocation = parse_command_line(argv, os.environ if environ is None else environ)
        if invocation.handler.offline:
            return invocation.handler.run(invocation)
    except ConfigError as e:
        print(f"fleetctl: error: {e}", file=sys.stderr)
        return USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else OK
    try:
        return invocation.handler.run(invocation)
    except BrokerError as e:
        print(f"fleetctl: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(
            "fleetctl: interrupted; requests already sent may still be carried out",
            file=sys.stderr,
        )
        return FAILED
