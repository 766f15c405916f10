"""``fleet-server audit verify``: does the hash chain of the audit trail hold?"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from fleet_server.audit import verify
from fleet_server.commands.common import add_database_option, open_database


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help="check the audit trail")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "verify", help="exit 0 when no entry was changed or removed, else 1 naming the first"
    )
    add_database_option(check)
    check.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db = open_database(args, environ)
    try:
        result = verify(db)
    finally:
        db.close()
    if result.ok:
        print(f"audit trail intact: {result.count} entries")
        return 0
    print(f"audit trail broken: {result.problem}", file=sys.stderr)
    return 1
