"""``fleetctl``: the app, assembled from its commands (one module each in :mod:`fleetctl.commands`).

Exit codes: 0 every car succeeded; 1 a car failed, timed out or was not attempted, or the
broker could not be used; 2 usage error (bad flags, unreadable or invalid file), found
before anything is sent; 130 Ctrl-C; 141 the output's reader went away (``| head``).
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
from fleetctl.client import contexts, fleet
from fleetctl.client.connection import BrokerError
from fleetctl.client.server import ServerError
from fleetctl.commands import (
    apply,
    completion,
    config,
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
from fleetctl.commands.command import (
    BROKEN_PIPE,
    FAILED,
    INTERRUPTED,
    OK,
    USAGE,
    Command,
    Invocation,
)
from fleetctl.commands.options import Parser, add_context
from fleetctl.output.escape import terminal_safe


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fleetctl",
        description="Apply and delete manifests, read states and presence of Ankaios cars "
        "through their fleet connectors over MQTT.",
        epilog="exit codes: 0 every car succeeded, 1 any car failed or timed out (or the "
        "broker could not be used), 2 usage error, 130 Ctrl-C, 141 output closed (| head)",
    )
    parser.add_argument("--version", action="version", version=f"fleetctl {_version()}")
    add_context(parser)
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
    config.register(subcommands)  # contexts
    completion.register(subcommands)  # completion, and the hidden __complete
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
    server = context = None
    if not command.offline:
        context = contexts.selected(contexts.load(environ), getattr(args, "context", None))
        server = contexts.server_of(context)
    selector = getattr(args, "selector", None)
    if command.offline or server is not None:
        # No broker: its options (and the environment's) do not apply.
        settings = BrokerSettings()
    else:
        if selector:
            raise ConfigError(
                "-l/--selector needs a context with a fleet-server, where labels live "
                "(fleetctl config set-context NAME --server URL --token-file FILE)"
            )
        # flags.parse applies flags, environment and defaults to the broker options only;
        # the namespace for everything else comes from the plain parse above.
        settings = BrokerSettings.from_values(parse(parser, BROKER_OPTIONS, argv, environ))
    through_server = command.through_server
    if server is not None and through_server is None:
        name = context.name if context else ""
        raise ConfigError(
            f"fleetctl {args.command} works on the broker only, and the context {name!r} "
            "names a fleet-server; choose a context without a server with --context NAME"
        )
    vins = fleet.select(
        getattr(args, "vin", []), getattr(args, "vins", []), getattr(args, "vins_file", [])
    )
    if command.needs_cars and not vins and not (server is not None and selector):
        raise ConfigError(
            "name the cars with --vin, --vins or --vins-file"
            + (" or choose them with -l/--selector" if server is not None else "")
        )
    if server is not None and through_server is not None:
        command = Command(through_server, command.prepare, command.needs_cars)
    return Invocation(
        command,
        args,
        settings,
        vins,
        command.prepare(args, vins),
        server=server,
        selector=selector,
        environ=environ,
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command: Command | None = None
    try:
        try:
            invocation = parse_command_line(argv, os.environ if environ is None else environ)
            command = invocation.handler
            if command.offline:
                return command.run(invocation)
        except ConfigError as e:
            print(f"fleetctl: error: {e}", file=sys.stderr)
            return USAGE
        except SystemExit as e:  # --help
            return e.code if isinstance(e.code, int) else OK
        try:
            return command.run(invocation)
        except (BrokerError, ServerError) as e:
            # A broker's or a car's words may be in it.
            print(terminal_safe(f"fleetctl: {e}"), file=sys.stderr)
            return FAILED
    except KeyboardInterrupt:
        if command is not None and command.changes_cars:
            print(
                "fleetctl: interrupted; requests already sent may still be carried out",
                file=sys.stderr,
            )
        return INTERRUPTED
    except BrokenPipeError:
        # `fleetctl ... | head`: the reader has what it wanted. Quietly, as programs that
        # SIGPIPE ends; stdout goes to /dev/null so the interpreter's last flush is quiet too.
        _discard_stdout()
        return BROKEN_PIPE


def _discard_stdout() -> None:
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's capture): nothing is flushed to a pipe at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)
