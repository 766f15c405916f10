"""fleet-server's settings, parsed once from flags and environment and passed down.

The broker options (address, port, protocol, TLS, credentials) and their environment
variables are the connector's and fleetctl's own (fleet_connector.mqtt.broker.BROKER_OPTIONS).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_connector.mqtt.broker import BROKER_OPTIONS, BrokerSettings
from fleet_connector.options import ConfigError, Option, positive_float, positive_int, resolve


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6); port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.removeprefix("[").removesuffix("]")
    try:
        number = int(port)
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    if not 0 <= number <= 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host, number


def default_database(environ: Mapping[str, str]) -> str:
    """A SQLite file in the user's data directory: nothing to install."""
    data_home = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", "~")) / ".local/share")
    path = Path(data_home).expanduser() / "fleet-server" / "fleet.db"
    return f"sqlite://{path}" if path.is_absolute() else f"sqlite:{path}"


DATABASE_OPTION = Option(
    "database",
    "--database",
    "FLEET_SERVER_DATABASE",
    "database URL: sqlite:///path/to/fleet.db or postgresql://user@host:port/db "
    "(default: a SQLite file under $XDG_DATA_HOME/fleet-server)",
)

SERVE_OPTIONS = [
    Option(
        "listen",
        "--listen",
        "FLEET_SERVER_LISTEN",
        "HOST:PORT of the API",
        "127.0.0.1:8080",
        host_port,
    ),
    Option(
        "metrics_listen",
        "--metrics-listen",
        "FLEET_SERVER_METRICS_LISTEN",
        "HOST:PORT for /metrics alone (default: /metrics on the API's listener)",
        None,
        host_port,
    ),
    Option(
        "request_timeout",
        "--request-timeout",
        "FLEET_SERVER_REQUEST_TIMEOUT",
        "seconds to wait for a car's reply before answering 504 NO_REPLY",
        30.0,
        positive_float,
    ),
    Option(
        "max_body",
        "--max-body",
        "FLEET_SERVER_MAX_BODY",
        "largest request body in bytes (larger: 413)",
        4 * 1024 * 1024,
        positive_int,
    ),
    Option(
        "flush_interval",
        "--flush-interval",
        "FLEET_SERVER_FLUSH_INTERVAL",
        "seconds between writes of what the cars sent (one transaction each)",
        0.15,
        positive_float,
    ),
    Option(
        "heartbeat_interval",
        "--heartbeat-interval",
        "FLEET_SERVER_HEARTBEAT_INTERVAL",
        "seconds between heartbeats; a server silent for 3 of them is taken as gone and the "
        "others read the retained topics again",
        2.0,
        positive_float,
    ),
    Option(
        "poll_interval",
        "--poll-interval",
        "FLEET_SERVER_POLL_INTERVAL",
        "seconds between reads of other instances' changes into memory",
        0.25,
        positive_float,
    ),
]


@dataclass(frozen=True)
class ServerConfig:
    database: str
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    metrics_listen: tuple[str, int] | None = None
    request_timeout: float = 30.0
    max_body: int = 4 * 1024 * 1024
    flush_interval: float = 0.15
    poll_interval: float = 0.25
    heartbeat_interval: float = 2.0
    instance: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    """This process among the servers sharing a database: client id and request ids."""

    @classmethod
    def from_values(cls, values: dict[str, Any], environ: Mapping[str, str]) -> ServerConfig:
        return cls(
            database=database_url(values, environ),
            broker=BrokerSettings.from_values(values),
            listen=values["listen"],
            metrics_listen=values["metrics_listen"],
            request_timeout=values["request_timeout"],
            max_body=values["max_body"],
            flush_interval=values["flush_interval"],
            poll_interval=values["poll_interval"],
            heartbeat_interval=values["heartbeat_interval"],
        )


def database_url(values: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    url = values.get("database") or default_database(environ)
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("the database URL is empty (FLEET_SERVER_DATABASE)")
    return url.strip()


ALL_SERVE_OPTIONS = [DATABASE_OPTION, *SERVE_OPTIONS, *BROKER_OPTIONS]


def serve_config(
    flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> ServerConfig:
    env = os.environ if environ is None else environ
    return ServerConfig.from_values(resolve(ALL_SERVE_OPTIONS, flags, env), env)
