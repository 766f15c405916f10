"""Vehicle-state gates: a condition on one of the car's own topics, held for a time.

``{"topic": "sensors/speed", "equals": 0, "for": 60}``: the car is contacted only once
``vehicle/<VIN>/sensors/speed`` (the vehicle data sender's topic, plain text) has said ``0``
for 60 s without a message saying otherwise. ``"max": 5`` instead of ``equals`` accepts any
number up to 5. The service subscribes to the topic of the cars whose turn it is (never the
whole fleet's), so a value must arrive after that: until one has, the car waits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet_connector.mqtt.topics import FORBIDDEN_TOPIC_CHARS

MAX_TOPIC = 200
MAX_HOLD = 86400.0


@dataclass(frozen=True)
class Gate:
    topic: str
    """Below ``vehicle/<VIN>/``."""
    equals: str | None
    maximum: float | None
    hold: float

    @classmethod
    def parse(cls, value: Any) -> Gate:
        if not isinstance(value, dict) or set(value) - {"topic", "equals", "max", "for"}:
            raise ValueError('gate is {"topic": "sensors/speed", "equals": 0, "for": 60}')
        topic = value.get("topic")
        if (
            not isinstance(topic, str)
            or not topic
            or len(topic) > MAX_TOPIC
            or FORBIDDEN_TOPIC_CHARS.difference("/").intersection(topic)
            or topic.startswith("/")
            or "" in topic.split("/")
        ):
            raise ValueError("gate.topic is a topic below vehicle/<VIN>/, e.g. sensors/speed")
        if ("equals" in value) == ("max" in value):
            raise ValueError("gate has either equals or max")
        equals = None
        maximum = None
        if "equals" in value:
            raw = value["equals"]
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise ValueError("gate.equals is a number or a text")
            equals = _text(raw)
        else:
            raw = value["max"]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ValueError("gate.max is a number")
            maximum = float(raw)
        hold = value.get("for", 0)
        if isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 <= hold <= MAX_HOLD:
            raise ValueError("gate.for is seconds, from 0 to 86400")
        return cls(topic, equals, maximum, float(hold))

    def car_topic(self, vin: str) -> str:
        return f"vehicle/{vin}/{self.topic}"

    def holds(self, payload: bytes) -> bool:
        try:
            text = payload.decode().strip()
        except UnicodeDecodeError:
            return False
        if self.equals is not None:
            if text == self.equals:
                return True
            try:
                return float(text) == float(self.equals)
            except ValueError:
                return False
        try:
            number = float(text)
        except ValueError:
            return False
        return math.isfinite(number) and self.maximum is not None and number <= self.maximum

    def describe(self) -> str:
        condition = f"== {self.equals}" if self.equals is not None else f"<= {self.maximum:g}"
        return f"{self.topic} {condition} for {self.hold:g}s"


def _text(value: str | int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class GateWatch:
    """Since when each watched car's condition holds (None: it does not, or nothing came)."""

    def __init__(self, gate: Gate, clock: Callable[[], float] = time.monotonic) -> None:
        self.gate = gate
        self._clock = clock
        self._since: dict[str, float | None] = {}
        self._seen: set[str] = set()

    def watching(self, vin: str) -> bool:
        return vin in self._since

    def watch(self, vin: str) -> None:
        self._since.setdefault(vin, None)

    def forget(self, vin: str) -> None:
        self._since.pop(vin, None)
        self._seen.discard(vin)

    def vins(self) -> list[str]:
        return list(self._since)

    def value(self, vin: str, payload: bytes) -> None:
        if vin not in self._since:
            return
        self._seen.add(vin)
        if not self.gate.holds(payload):
            self._since[vin] = None
        elif self._since[vin] is None:
            self._since[vin] = self._clock()

    def open(self, vin: str) -> bool:
        since = self._since.get(vin)
        return since is not None and self._clock() - since >= self.gate.hold

    def why(self, vin: str) -> str:
        if vin not in self._seen:
            return f"gate: no value on {self.gate.topic} yet"
        since = self._since.get(vin)
        if since is None:
            return f"gate: {self.gate.describe()} does not hold"
        return f"gate: {self.gate.describe()}, held {self._clock() - since:.0f}s"
