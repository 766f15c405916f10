"""A rollout file (YAML): what to send, to which cars, in which order, and when to stop.

::

    manifest: vehicle-data-sender.yaml   # relative to this file
    operation: apply                     # or delete
    cars: {vins: "CAR001-CAR500", files: [more-cars.txt]}
    canary: {count: 2}                   # or {percent: 1} or {vins: "CAR007,CAR042"}
    batchSize: 10%                       # or a count
    wait: running                        # a car is done when its workloads run
    soakTime: 30                         # seconds what a car started must keep running
    progressDeadline: 120                # seconds a wave may take before its cars fail
    abort:
      minCars: 10                        # no threshold before this many cars finished
      rejected: 2                        # counts ...
      failed: 10%                        # ... or percentages of the cars finished
      timeout: 10%
      noReply: 20%
    rate: {perMinute: 60, rampUp: {start: 5, factor: 2}}

Every key but ``manifest`` and ``cars`` is optional.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.options import ConfigError
from fleetctl.client import fleet

FAILURE_KINDS = ("rejected", "failed", "timeout", "noReply")
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*")


@dataclass(frozen=True)
class Amount:
    """A count of cars, or a percentage of some number of cars."""

    value: float
    percent: bool

    def of(self, total: int) -> int:
        """The number of cars this amounts to out of ``total`` (at least one for a percent)."""
        if not self.percent:
            return int(self.value)
        return max(1, math.ceil(total * self.value / 100))

    def describe(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)}"


@dataclass(frozen=True)
class RampUp:
    start: float
    """Cars per minute in the first minute."""
    factor: float
    """The rate is multiplied by this every minute, up to ``perMinute``."""


@dataclass(frozen=True)
class Rate:
    per_minute: float
    ramp_up: RampUp | None = None

    def allowed(self, elapsed: float) -> float:
        """Cars that may have been sent ``elapsed`` seconds after the first one."""
        if self.ramp_up is None:
            return 1 + self.per_minute * elapsed / 60
        sent = 1.0
        rate = self.ramp_up.start
        minute = 0.0
        while elapsed > minute:
            step = min(60.0, elapsed - minute)
            sent += min(rate, self.per_minute) * step / 60
            rate *= self.ramp_up.factor
            minute += 60
        return sent


@dataclass(frozen=True)
class Spec:
    """A rollout file, read and checked."""

    source: str
    manifest_path: str
    payload: bytes
    operation: str
    vins: list[str]
    canary: list[str]
    batch_size: Amount | None = None
    wait_running: bool = False
    soak_time: float = 0.0
    progress_deadline: float = 60.0
    min_cars: int = 0
    thresholds: dict[str, Amount] = field(default_factory=dict)
    rate: Rate | None = None

    def waves(self) -> list[list[str]]:
        """The canary group first (if any), then the other cars in batches."""
        rest = [vin for vin in self.vins if vin not in set(self.canary)]
        size = self.batch_size.of(len(self.vins)) if self.batch_size else len(rest) or 1
        waves = [self.canary] if self.canary else []
        waves.extend(rest[i : i + size] for i in range(0, len(rest), size))
        return waves


def _invalid(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}")


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, message: str) -> ConfigError:
        return _invalid(self.source, message)

    def mapping(self, value: Any, where: str, known: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{where} must be a mapping")
        unknown = sorted(set(value) - known)
        if unknown:
            raise self.fail(f"{where} has an unknown key {unknown[0]!r}; known: {sorted(known)}")
        return value

    def number(self, value: Any, where: str, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.fail(f"{where} must be a number of at least {minimum:g}")
        return float(value)

    def amount(self, value: Any, where: str) -> Amount:
        match = _AMOUNT.fullmatch(str(value)) if not isinstance(value, bool) else None
        if match is None:
            raise self.fail(f"{where} must be a count such as 10 or a percentage such as 10%")
        number = float(match[1])
        percent = match[2] == "%"
        if (percent and not 0 < number <= 100) or (not percent and number != int(number)):
            raise self.fail(f"{where}: a count is a whole number, a percentage from 0 to 100")
        return Amount(number, percent)

    def cars(self, value: Any, where: str, base: Path) -> list[str]:
        if isinstance(value, str | int):
            value = {"vins": value}
        if isinstance(value, list):
            value = {"vins": ",".join(str(v) for v in value)}
        spec = self.mapping(value, where, {"vins", "files"})
        specs = spec.get("vins", [])
        specs = [str(specs)] if isinstance(specs, str | int) else [str(s) for s in specs]
        files = [str(base / f) for f in spec.get("files", [])]
        try:
            return fleet.select(specs=specs, files=files)
        except ConfigError as e:
            raise self.fail(f"{where}: {e}") from None


def load(path: Path) -> Spec:
    """The rollout file at ``path``; raises ConfigError saying what is wrong."""
    source = str(path)
    reader = _Reader(source)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise _invalid(source, f"cannot read it: {e.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise _invalid(source, f"not valid YAML: {' '.join(str(e).split())}") from None
    known = {
        "name",
        "manifest",
        "operation",
        "cars",
        "canary",
        "batchSize",
        "wait",
        "soakTime",
        "progressDeadline",
        "abort",
        "rate",
    }
    doc = reader.mapping(document, "the rollout", known)
    for key in ("manifest", "cars"):
        if key not in doc:
            raise reader.fail(f"{key} is missing")
    base = path.parent
    manifest_path = base / str(doc["manifest"])
    try:
        payload = manifest_path.read_bytes()
        parse_manifest(payload)
    except OSError as e:
        raise reader.fail(f"cannot read manifest {manifest_path}: {e.strerror}") from None
    except RequestError as e:
        raise reader.fail(f"manifest {manifest_path}: {e.message}") from None
    operation = doc.get("operation", "apply")
    if operation not in ("apply", "delete"):
        raise reader.fail("operation must be apply or delete")
    vins = reader.cars(doc["cars"], "cars", base)
    canary: list[str] = []
    if "canary" in doc:
        group = reader.mapping(doc["canary"], "canary", {"vins", "files", "count", "percent"})
        if "count" in group or "percent" in group:
            if len(group) != 1:
                raise reader.fail("canary is either vins/files, count or percent")
            key = "count" if "count" in group else "percent"
            suffix = "%" if key == "percent" else ""
            size = reader.amount(f"{group[key]}{suffix}", f"canary.{key}").of(len(vins))
            canary = vins[:size]
        else:
            canary = reader.cars(group, "canary", base)
            strangers = [vin for vin in canary if vin not in set(vins)]
            if strangers:
                raise reader.fail(f"canary car {strangers[0]} is not among the cars")
    wait = doc.get("wait")
    if wait not in (None, "running"):
        raise reader.fail("wait must be running (or left out)")
    if operation == "delete" and wait is not None:
        raise reader.fail("wait: running applies to apply rollouts only")
    thresholds: dict[str, Amount] = {}
    min_cars = 0
    if "abort" in doc:
        abort = reader.mapping(doc["abort"], "abort", {"minCars", *FAILURE_KINDS})
        min_cars = int(reader.number(abort.get("minCars", 0), "abort.minCars"))
        for kind in FAILURE_KINDS:
            if kind in abort:
                thresholds[kind] = reader.amount(abort[kind], f"abort.{kind}")
    rate = None
    if "rate" in doc:
        spec = reader.mapping(doc["rate"], "rate", {"perMinute", "rampUp"})
        if "perMinute" not in spec:
            raise reader.fail("rate needs perMinute")
        ramp = None
        if "rampUp" in spec:
            ramp_spec = reader.mapping(spec["rampUp"], "rate.rampUp", {"start", "factor"})
            ramp = RampUp(
                start=reader.number(ramp_spec.get("start", 1), "rate.rampUp.start", 0.001),
                factor=reader.number(ramp_spec.get("factor", 2), "rate.rampUp.factor", 1.0),
            )
        rate = Rate(reader.number(spec["perMinute"], "rate.perMinute", 0.001), ramp)
    soak = reader.number(doc.get("soakTime", 0), "soakTime")
    if soak and wait is None:
        raise reader.fail(
            "soakTime needs wait: running (it is how long what ran must keep running)"
        )
    batch = reader.amount(doc["batchSize"], "batchSize") if "batchSize" in doc else None
    if batch is not None and batch.of(len(vins)) < 1:
        raise reader.fail("batchSize must be at least one car")
    return Spec(
        source=source,
        manifest_path=str(manifest_path),
        payload=payload,
        operation=str(operation),
        vins=vins,
        canary=canary,
        batch_size=batch,
        wait_running=wait == "running",
        soak_time=soak,
        progress_deadline=reader.number(doc.get("progressDeadline", 60), "progressDeadline", 0.1),
        min_cars=min_cars,
        thresholds=thresholds,
        rate=rate,
    )
