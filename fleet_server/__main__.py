"""``fleet-server``: serve (the default), ``tokens``, ``audit verify``, ``migrate``.

Bad configuration is one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from fleet_connector.options import ConfigError
from fleet_server.auth import TokenError
from fleet_server.commands import audit, migrate, serve, tokens
from fleet_server.db import DatabaseError

COMMANDS = {"serve": serve, "tokens": tokens, "audit": audit, "migrate": migrate}


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so a usage error is one line like any other."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fleet-server",
        description="The fleet as a shared service: inventory, labels, API, roles, audit, "
        "metrics. Without a command: serve.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        module.add_parser(commands, name)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    # `fleet-server --listen ...` means `fleet-server serve --listen ...`.
    if not args_list or (args_list[0] not in COMMANDS and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    try:
        args = build_parser().parse_args(args_list)
        return int(args.run(args, env))
    except (ConfigError, TokenError) as e:
        print(f"fleet-server: error: {e}", file=sys.stderr)
        return 2
    except DatabaseError as e:
        print(f"fleet-server: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
