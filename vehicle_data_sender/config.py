"""The sender's configuration: one immutable, validated value, and parsers for its text forms.

Nothing here reads the environment or the command line (that is `cli`); this module only
says what a valid configuration is, so a `Config` that exists is a `Config` that works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_BROKER_ADDR = "localhost"
DEFAULT_BROKER_PORT = 1883
DEFAULT_INTERVAL = 1.0
# Longer than any sensible sampling period, and far below threading.TIMEOUT_MAX.
MAX_INTERVAL = 86_400.0
# MQTT encodes a topic as a length-prefixed UTF-8 string.
MAX_TOPIC_BYTES = 65_535


class ConfigError(ValueError):
    """The configuration is unusable; the message is one line meant for the user."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the sender needs to run. Construction validates every field."""

    topic: str
    broker_addr: str = DEFAULT_BROKER_ADDR
    broker_port: int = DEFAULT_BROKER_PORT
    interval: float = DEFAULT_INTERVAL
    keepalive: int = 60
    reconnect_min_delay: int = 1
    reconnect_max_delay: int = 30
    # Transport security and credentials belong here when they are added, e.g.
    #   tls: TlsOptions | None = None
    #   username: str | None = None
    #   password: str | None = field(default=None, repr=False)
    # describe() must keep leaving secrets out.

    def __post_init__(self) -> None:
        check_topic(self.topic, "topic")
        check_host(self.broker_addr, "broker address")
        check_port(self.broker_port, "broker port")
        check_interval(self.interval, "interval")
        if self.keepalive < 1:
            raise ConfigError(f"keepalive must be at least 1 second, got {self.keepalive}")
        if not 1 <= self.reconnect_min_delay <= self.reconnect_max_delay:
            raise ConfigError(
                "reconnect delays must satisfy 1 <= min <= max, got "
                f"min={self.reconnect_min_delay} max={self.reconnect_max_delay}"
            )

    def describe(self) -> str:
        """One line for the log: every setting that matters, never a secret."""
        return (
            f"broker={self.broker_addr}:{self.broker_port} topic={self.topic} "
            f"interval={self.interval:g}s qos=0 retain=false keepalive={self.keepalive}s "
            f"reconnect_backoff={self.reconnect_min_delay}..{self.reconnect_max_delay}s"
        )


def check_topic(topic: str, name: str) -> str:
    """A topic one may publish to: non-empty, no wildcards, no NUL, short enough."""
    if not topic:
        raise ConfigError(f"{name} must not be empty")
    if "+" in topic or "#" in topic:
        raise ConfigError(f"{name} {topic!r} contains an MQTT wildcard (+ or #)")
    if "\0" in topic:
        raise ConfigError(f"{name} must not contain NUL characters")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise ConfigError(f"{name} is longer than {MAX_TOPIC_BYTES} bytes")
    return topic


def check_host(host: str, name: str) -> str:
    if not host:
        raise ConfigError(f"{name} must not be empty")
    if any(c.isspace() for c in host):
        raise ConfigError(f"{name} {host!r} contains white space")
    return host


def check_port(port: int, name: str) -> int:
    if not 1 <= port <= 65_535:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def check_interval(interval: float, name: str) -> float:
    if not math.isfinite(interval) or interval <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {interval!r}")
    if interval > MAX_INTERVAL:
        raise ConfigError(f"{name} must be at most {MAX_INTERVAL:g} seconds, got {interval:g}")
    return interval


def parse_port(text: str, name: str) -> int:
    """A TCP port written as decimal digits ("1883")."""
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()):
        raise ConfigError(f"{name} must be a port number between 1 and 65535, got {text!r}")
    return check_port(int(stripped), name)


def parse_interval(text: str, name: str) -> float:
    """Seconds as a decimal number; fractions allowed ("1", "0.25", "2.5e-1")."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {text!r}")
    return check_interval(value, name)
