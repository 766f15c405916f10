"""The sender's configuration: one immutable, validated value, and parsers for its text forms.

Nothing here reads the environment or the command line (that is `cli`); this module only
says what a valid configuration is, so a `Config` that exists is a `Config` that works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fleet_connector.mqtt.broker import BrokerSettings

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
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    interval: float = DEFAULT_INTERVAL
    reconnect_min_delay: int = 1
    reconnect_max_delay: int = 30

    def __post_init__(self) -> None:
        check_topic(self.topic, "topic")
        check_interval(self.interval, "interval")
        if not 1 <= self.reconnect_min_delay <= self.reconnect_max_delay:
            raise ConfigError(
                "reconnect delays must satisfy 1 <= min <= max, got "
                f"min={self.reconnect_min_delay} max={self.reconnect_max_delay}"
            )

    def describe(self) -> str:
        """One line for the log: every setting that matters, never a secret."""
        return (
            f"broker={self.broker.describe()} topic={self.topic} "
            f"interval={self.interval:g}s qos=0 retain=false keepalive={self.broker.keepalive}s "
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


def check_interval(interval: float, name: str) -> float:
    if not math.isfinite(interval) or interval <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {interval!r}")
    if interval > MAX_INTERVAL:
        raise ConfigError(f"{name} must be at most {MAX_INTERVAL:g} seconds, got {interval:g}")
    return interval


def parse_interval(text: str, name: str) -> float:
    """Seconds as a decimal number; fractions allowed ("1", "0.25", "2.5e-1")."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {text!r}")
    return check_interval(value, name)
