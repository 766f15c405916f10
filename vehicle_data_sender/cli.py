"""Turns the command line and the environment into a `Config`.

A flag wins over its environment variable, which wins over the default. Every problem,
argparse's own included, becomes a `ConfigError` with a one-line message.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from vehicle_data_sender.config import (
    DEFAULT_BROKER_ADDR,
    DEFAULT_BROKER_PORT,
    DEFAULT_INTERVAL,
    Config,
    ConfigError,
    check_host,
    check_topic,
    parse_interval,
    parse_port,
)

PROG = "vehicle-data-sender"


@dataclass(frozen=True, slots=True)
class _Option:
    dest: str
    flag: str
    env: str
    metavar: str
    help: str


_OPTIONS = (
    _Option(
        "broker_addr",
        "--broker-addr",
        "MQTT_BROKER_ADDR",
        "HOST",
        f"MQTT broker host name or IP address (default: {DEFAULT_BROKER_ADDR})",
    ),
    _Option(
        "broker_port",
        "--broker-port",
        "MQTT_BROKER_PORT",
        "PORT",
        f"MQTT broker TCP port, 1-65535 (default: {DEFAULT_BROKER_PORT})",
    ),
    _Option(
        "topic",
        "--topic",
        "TOPIC",
        "TOPIC",
        "topic to publish the speed to, e.g. vehicle/1/sensors/speed (required; no wildcards)",
    ),
    _Option(
        "interval",
        "--interval",
        "INTERVAL",
        "SECONDS",
        f"seconds between two values, > 0, fractions allowed (default: {DEFAULT_INTERVAL:g})",
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as a ConfigError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Publish a simulated vehicle speed (a triangle wave 1, 2, ..., 100, 99, ..., 0, "
            "1, ...) as a plain ASCII integer to an MQTT topic every INTERVAL seconds "
            "(QoS 0, not retained). Starts even when the broker is down and keeps reconnecting."
        ),
        epilog=(
            "Each option can also be set by the environment variable named in brackets "
            "([env NAME]); "
            "a flag overrides its variable. Exit status: 0 after SIGTERM/SIGINT, "
            "2 for bad configuration, 1 on an unexpected failure."
        ),
    )
    for opt in _OPTIONS:
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            metavar=opt.metavar,
            default=None,
            help=f"{opt.help} [env {opt.env}]",
        )
    return parser


def load_config(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """The validated configuration from flags, then environment, then defaults."""
    args = build_parser().parse_args(list(argv))

    def pick(opt: _Option) -> tuple[str | None, str]:
        """The raw value and the name to blame in an error message."""
        flag_value: str | None = getattr(args, opt.dest)
        if flag_value is not None:
            return flag_value, opt.flag
        return environ.get(opt.env), opt.env

    by_dest = {opt.dest: opt for opt in _OPTIONS}

    topic, topic_src = pick(by_dest["topic"])
    if topic is None or topic == "":
        raise ConfigError("no topic given: set TOPIC or pass --topic")
    check_topic(topic, topic_src)

    addr, addr_src = pick(by_dest["broker_addr"])
    broker_addr = DEFAULT_BROKER_ADDR if addr is None else check_host(addr, addr_src)

    port, port_src = pick(by_dest["broker_port"])
    broker_port = DEFAULT_BROKER_PORT if port is None else parse_port(port, port_src)

    interval_text, interval_src = pick(by_dest["interval"])
    interval = (
        DEFAULT_INTERVAL if interval_text is None else parse_interval(interval_text, interval_src)
    )

    return Config(topic=topic, broker_addr=broker_addr, broker_port=broker_port, interval=interval)
