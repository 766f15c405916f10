"""``fleetctl config``: contexts, as kubectl has them (see fleetctl/client/contexts.py).

``set-context NAME --server URL --token-file F`` makes or changes a context,
``use-context NAME`` makes it current, ``get-contexts`` lists them, ``current-context``
names the current one, ``delete-context NAME`` removes one. With a current context that
names a server, the other commands go through that fleet-server; ``--context NAME`` on any
command picks another for one command.
"""

from __future__ import annotations

import argparse
import sys

from fleetctl import output
from fleetctl.client import contexts
from fleetctl.commands import options
from fleetctl.commands.command import FAILED, OK, Command, Invocation, define
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    config = subcommands.add_parser(
        "config",
        help="contexts: which fleet-server (or the broker) commands go to",
        description="Contexts, as kubectl has them, in $XDG_CONFIG_HOME/fleetctl/config.yaml "
        "(or $FLEETCTL_CONFIG). A context with a server sends commands through that "
        "fleet-server's API; one without works on the broker.",
    )
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")

    set_context = actions.add_parser(
        "set-context",
        help="make or change a context",
        description="Make the context NAME, or change only the fields given.",
    )
    set_context.add_argument("name", metavar="NAME")
    set_context.add_argument(
        "--server", metavar="URL", help="fleet-server's URL, e.g. https://fleet.example:8080"
    )
    set_context.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the API token (fleet-server tokens create prints it)",
    )
    define(set_context, Command(_set_context, offline=True))

    use_context = actions.add_parser("use-context", help="make a context the current one")
    use_context.add_argument("name", metavar="NAME")
    define(use_context, Command(_use_context, offline=True))

    get_contexts = actions.add_parser("get-contexts", help="list the contexts")
    options.add_output(get_contexts, "table (default), json or yaml")
    define(get_contexts, Command(_get_contexts, offline=True))

    current = actions.add_parser("current-context", help="name the current context")
    define(current, Command(_current_context, offline=True))

    delete = actions.add_parser("delete-context", help="remove a context")
    delete.add_argument("name", metavar="NAME")
    define(delete, Command(_delete_context, offline=True))


def _set_context(invocation: Invocation) -> int:
    args: argparse.Namespace = invocation.args
    found = contexts.load(invocation.environ)
    if args.server is None and args.token_file is None and args.name not in found.contexts:
        # A context with neither is a broker context: allowed, but say what it is.
        print(f"fleetctl: context {args.name!r} works on the broker", file=sys.stderr)
    context = contexts.set_context(found, args.name, args.server, args.token_file)
    contexts.save(found)
    print(f"context {context.name!r} set in {found.path}")
    return OK


def _use_context(invocation: Invocation) -> int:
    found = contexts.load(invocation.environ)
    name = found.get(invocation.args.name).name
    found.current = name
    contexts.save(found)
    print(f"switched to context {name!r}")
    return OK


def _get_contexts(invocation: Invocation) -> int:
    found = contexts.load(invocation.environ)
    items = [
        {
            "name": c.name,
            "current": c.name == found.current,
            "server": c.server,
            "token_file": c.token_file,
        }
        for c in sorted(found.contexts.values(), key=lambda c: c.name)
    ]
    fmt = invocation.args.output
    if fmt != "table":
        print(output.dump({"current": found.current, "contexts": items}, fmt))
        return OK
    if not items:
        print(f"no contexts in {found.path}: commands work on the broker")
        return OK
    rows = [("CURRENT", "NAME", "SERVER", "TOKEN FILE")]
    rows.extend(
        (
            "*" if item["current"] else "",
            str(item["name"]),
            str(item["server"] or "(the broker)"),
            str(item["token_file"] or "-"),
        )
        for item in items
    )
    print(output.table(rows))
    return OK


def _current_context(invocation: Invocation) -> int:
    found = contexts.load(invocation.environ)
    if not found.current:
        print("fleetctl: no current context (commands work on the broker)", file=sys.stderr)
        return FAILED
    print(found.current)
    return OK


def _delete_context(invocation: Invocation) -> int:
    found = contexts.load(invocation.environ)
    name = found.get(invocation.args.name).name
    del found.contexts[name]
    if found.current == name:
        found.current = None
    contexts.save(found)
    print(f"deleted context {name!r}")
    return OK
