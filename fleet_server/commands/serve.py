"""``fleet-server [serve]``: the API, the inventory ingest and the metrics."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from fleet_connector.flags import add_options
from fleet_connector.mqtt.broker import BROKER_OPTIONS
from fleet_server.config import DATABASE_OPTION, SERVE_OPTIONS, serve_config


def add_parser(commands: Any, name: str) -> None:
    parser = commands.add_parser(name, help="run the service (the default command)")
    add_options(parser, [DATABASE_OPTION, *SERVE_OPTIONS])
    add_options(parser.add_argument_group("broker"), BROKER_OPTIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    # aiohttp & co. only for serving: the token and audit commands start fast without them.
    from fleet_server.service import run_service  # noqa: PLC0415

    config = serve_config(vars(args), environ)
    return run_service(config)
