"""What several commands share: the database option and opening it migrated."""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Mapping

from fleet_connector.flags import add_options
from fleet_connector.options import resolve
from fleet_server.config import DATABASE_OPTION, database_url
from fleet_server.db import Database, connect, migrate


def add_database_option(parser: argparse.ArgumentParser) -> None:
    add_options(parser, [DATABASE_OPTION])


def open_database(args: argparse.Namespace, environ: Mapping[str, str]) -> Database:
    """The database of ``--database``/FLEET_SERVER_DATABASE, migrated to this version."""
    url = database_url(resolve([DATABASE_OPTION], vars(args), environ), environ)
    db = connect(url)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def cli_actor() -> str:
    """The audit trail's actor for a command run at a shell: the local user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
