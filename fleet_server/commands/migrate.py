"""``fleet-server migrate``: bring the schema up to date and exit (serve does it too)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from fleet_connector.options import resolve
from fleet_server.commands.common import add_database_option
from fleet_server.config import DATABASE_OPTION, database_url
from fleet_server.db import connect, migrate


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help="apply the database migrations and exit")
    add_database_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    db = connect(database_url(resolve([DATABASE_OPTION], vars(args), environ), environ))
    try:
        for migration in migrate(db):
            print(f"applied {migration.version:04d}_{migration.name}")
        print(f"{db.describe()}: schema up to date")
    finally:
        db.close()
    return 0
