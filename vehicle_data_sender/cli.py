"""Turns the command line and the environment into a `Config`.

A flag wins over its environment variable, which wins over the default. The broker options
(address, port, protocol, TLS, credentials) are the ones every program of the project takes.
Every problem, argparse's own included, becomes a `ConfigError` with a one-line message.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from fleet_connector import flags, options
from fleet_connector.mqtt.broker import BROKER_OPTIONS, BrokerSettings
from vehicle_data_sender.config import (
    DEFAULT_INTERVAL,
    Config,
    ConfigError,
    check_topic,
    parse_interval,
)

PROG = "vehicle-data-sender"

OPTIONS = [
    *BROKER_OPTIONS,
    options.Option(
        "topic",
        "--topic",
        "TOPIC",
        "topic to publish the speed to, e.g. vehicle/1/sensors/speed (required; no wildcards)",
    ),
    options.Option(
        "interval",
        "--interval",
        "INTERVAL",
        "seconds between two values, > 0, fractions allowed",
        str(DEFAULT_INTERVAL),
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = flags.build_parser(
        PROG,
        "Publish a simulated vehicle speed (a triangle wave 1, 2, ..., 100, 99, ..., 0, "
        "1, ...) as a plain ASCII integer to an MQTT topic every INTERVAL seconds "
        "(QoS 0, not retained). Starts even when the broker is down and keeps reconnecting.",
        OPTIONS,
    )
    parser.epilog = (
        "Each option can also be set by the environment variable named in brackets "
        "([env NAME]); a flag overrides its variable. Exit status: 0 after SIGTERM/SIGINT, "
        "2 for bad configuration, 1 on an unexpected failure."
    )
    return parser


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """The validated configuration from flags, then environment, then defaults."""
    try:
        values = flags.parse(build_parser(), OPTIONS, argv, environ)
        broker = BrokerSettings.from_values(values)
    except options.ConfigError as e:
        raise ConfigError(str(e)) from None
    topic = values["topic"]
    source = "--topic" if "--topic" in argv else "TOPIC"
    if not topic:
        raise ConfigError("no topic given: set TOPIC or pass --topic")
    check_topic(topic, source)
    interval_source = "--interval" if "--interval" in argv else "INTERVAL"
    interval = parse_interval(values["interval"], interval_source)
    return Config(topic=topic, broker=broker, interval=interval)
