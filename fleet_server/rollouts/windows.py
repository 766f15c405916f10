"""Maintenance windows: a cron expression in a time zone opens a window of a duration.

``{"cron": "0 2 * * *", "timeZone": "Europe/Berlin", "duration": 7200}`` is open from 02:00
to 04:00 Berlin time every day. No request leaves outside it; a car in flight finishes.
Cron is evaluated by croniter (maintained by pallets-eco, releases in 2026) in the zone's
local time, so a window follows daylight saving time as an operator reading the clock on
the wall expects; writing a cron parser of our own would have to get that right again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 31 * 86400


def duration(value: Any, where: str) -> float:
    """Seconds, from a number or a text such as ``90m``, ``2h``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{where} is seconds or a text such as 90m or 2h")
        seconds = float(match[1]) * _UNITS[match[2]]
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"{where} must be more than 0 and at most 31 days")
    return seconds


@dataclass(frozen=True)
class Window:
    cron: str
    zone: str
    length: float

    @classmethod
    def parse(cls, value: Any) -> Window:
        if not isinstance(value, dict) or set(value) - {"cron", "timeZone", "duration"}:
            raise ValueError('window is {"cron": ..., "timeZone": ..., "duration": ...}')
        cron = value.get("cron")
        if not isinstance(cron, str) or len(cron) > 200 or not croniter.is_valid(cron):
            raise ValueError(f"window.cron is not a cron expression: {cron!r}")
        zone = value.get("timeZone", "UTC")
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"window.timeZone is not a time zone: {zone!r}") from None
        if "duration" not in value:
            raise ValueError("window.duration is missing")
        return cls(cron, zone, duration(value["duration"], "window.duration"))

    def opened(self, now: float) -> float | None:
        """When the window that is open at ``now`` opened; None when it is closed."""
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        try:
            # A little after now, so a window opening exactly now counts as open.
            start = croniter(self.cron, local + timedelta(microseconds=1)).get_prev(datetime)
        except CroniterError:
            return None
        begun = float(start.timestamp())
        return begun if now < begun + self.length else None

    def is_open(self, now: float) -> bool:
        return self.opened(now) is not None

    def next_open(self, now: float) -> float:
        local = datetime.fromtimestamp(now, ZoneInfo(self.zone))
        return float(croniter(self.cron, local).get_next(datetime).timestamp())

    def describe(self, now: float) -> str:
        when = datetime.fromtimestamp(self.next_open(now), UTC).isoformat(timespec="seconds")
        return f"outside the window {self.cron!r} ({self.zone}); next opens {when}"
