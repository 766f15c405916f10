"""A rollout as the service takes it: today's rollout file (fleetctl/rollouts/spec.py) as JSON.

Differences from the file: the manifest is inline YAML text, cars may be chosen by a label
selector (``{"selector": "region=eu"}``; everything only with ``{"selector": "", "all":
true}``) with ``until`` closing it to late joiners, VIN files are not read (the service has no
operator's files), and there are keys the service alone can honour: ``onFailure``,
``window``, ``gate``, ``budget`` and ``pauseAfter``. Amounts, rates and thresholds are read
by fleetctl's own reader, so both accept the same values.

The document as posted is kept (the database's ``spec`` column) and parsed again on load;
parsing is deterministic, except that ``canary.count``/``percent`` and the waves depend on the
cars matched when the rollout was created, which are stored with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.options import ConfigError
from fleet_server.rollouts.budget import Budget
from fleet_server.rollouts.gates import Gate
from fleet_server.rollouts.windows import Window
from fleet_server.selectors import Selector, SelectorError
from fleet_server.selectors import parse as parse_selector
from fleetctl.client import fleet
from fleetctl.rollouts.spec import FAILURE_KINDS, Amount, RampUp, Rate, _Reader

MAX_NAME = 200
CANARY = "canary"


class SpecError(ConfigError):
    """What is wrong with a posted rollout; one line for the API's 400 answer."""


@dataclass(frozen=True)
class Cars:
    vins: list[str] = field(default_factory=list)
    selector: Selector | None = None
    selector_text: str = ""
    until: float | None = None
    """No late joiner after this time (Unix seconds); None: until the rollout ends."""


@dataclass(frozen=True)
class Canary:
    vins: list[str] = field(default_factory=list)
    size: Amount | None = None


@dataclass(frozen=True)
class RolloutSpec:
    document: dict[str, Any]
    """The JSON as posted (kept, and offered again for "same spec, remaining cars")."""
    name: str
    manifest: str
    operation: str
    cars: Cars
    canary: Canary
    batch_size: Amount | None = None
    soak_time: float = 0.0
    progress_deadline: float = 60.0
    min_cars: int = 0
    thresholds: dict[str, Amount] = field(default_factory=dict)
    rate: Rate | None = None
    on_failure: str = "stop"
    window: Window | None = None
    gate: Gate | None = None
    budget: Budget | None = None
    pause_after: frozenset[int] = frozenset()
    """Stages after which an operator's approve is needed (0 is the canary, if any)."""
    workloads: tuple[str, ...] = ()
    """The manifest's workload names (what the live states are checked for)."""

    @property
    def success(self) -> str:
        """The followed outcome that promotes a car."""
        return "running" if self.operation == "apply" else "removed"

    def waves(self, vins: list[str]) -> list[list[str]]:
        """The canary group first (stage 0, possibly empty), then the others in batches."""
        canary = self.canary.vins or (
            vins[: self.canary.size.of(len(vins))] if self.canary.size else []
        )
        canary = [v for v in canary if v in set(vins)]
        rest = [v for v in vins if v not in set(canary)]
        size = self.batch_size.of(len(vins)) if self.batch_size else len(rest) or 1
        waves: list[list[str]] = [canary]
        waves.extend(rest[i : i + size] for i in range(0, len(rest), size))
        return waves


KNOWN = {
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
    "onFailure",
    "window",
    "gate",
    "budget",
    "pauseAfter",
}


class _Json(_Reader):
    def fail(self, message: str) -> ConfigError:
        return SpecError(message)


def parse(document: Any) -> RolloutSpec:
    """The posted rollout, checked; raises SpecError saying what is wrong."""
    reader = _Json("rollout")
    doc = reader.mapping(document, "the rollout", KNOWN)
    for key in ("manifest", "cars"):
        if key not in doc:
            raise reader.fail(f"{key} is missing")
    name = doc.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise reader.fail(f"name must be text of at most {MAX_NAME} characters")
    manifest = doc["manifest"]
    if not isinstance(manifest, str) or not manifest.strip():
        raise reader.fail("manifest must be the manifest's YAML text")
    try:
        workloads = tuple(sorted(parse_manifest(manifest.encode()).workloads))
    except RequestError as e:
        raise reader.fail(f"manifest: {e.message}") from None
    operation = doc.get("operation", "apply")
    if operation not in ("apply", "delete"):
        raise reader.fail("operation must be apply or delete")
    cars = _cars(reader, doc["cars"])
    canary = _canary(reader, doc.get("canary"), cars)
    wait = doc.get("wait")
    if wait not in (None, "running"):
        raise reader.fail("wait must be running (or left out: the service always follows)")
    thresholds: dict[str, Amount] = {}
    min_cars = 0
    if "abort" in doc:
        abort = reader.mapping(doc["abort"], "abort", {"minCars", *FAILURE_KINDS})
        min_cars = int(reader.number(abort.get("minCars", 0), "abort.minCars"))
        for kind in FAILURE_KINDS:
            if kind in abort:
                thresholds[kind] = reader.amount(abort[kind], f"abort.{kind}")
    on_failure = doc.get("onFailure", "stop")
    if on_failure not in ("rollback", "stop"):
        raise reader.fail("onFailure must be rollback or stop")
    batch = reader.amount(doc["batchSize"], "batchSize") if "batchSize" in doc else None
    if batch is not None and not batch.percent and batch.value < 1:
        raise reader.fail("batchSize must be at least one car")
    try:
        window = Window.parse(doc["window"]) if "window" in doc else None
        gate = Gate.parse(doc["gate"]) if "gate" in doc else None
        budget = Budget.parse(doc["budget"]) if "budget" in doc else None
    except ValueError as e:
        raise reader.fail(str(e)) from None
    return RolloutSpec(
        document=doc,
        name=name,
        manifest=manifest,
        operation=str(operation),
        cars=cars,
        canary=canary,
        batch_size=batch,
        soak_time=reader.number(doc.get("soakTime", 0), "soakTime"),
        progress_deadline=reader.number(doc.get("progressDeadline", 60), "progressDeadline", 0.1),
        min_cars=min_cars,
        thresholds=thresholds,
        rate=_rate(reader, doc["rate"]) if "rate" in doc else None,
        on_failure=str(on_failure),
        window=window,
        gate=gate,
        budget=budget,
        pause_after=_pause_after(reader, doc.get("pauseAfter", [])),
        workloads=workloads,
    )


def _cars(reader: _Json, value: Any) -> Cars:
    if isinstance(value, str | list):
        value = {"vins": value}
    spec = reader.mapping(value, "cars", {"vins", "selector", "all", "until"})
    if ("vins" in spec) == ("selector" in spec):
        raise reader.fail("cars has either vins or a selector")
    until = None
    if "until" in spec:
        until = _time(reader, spec["until"], "cars.until")
    if "vins" in spec:
        specs = spec["vins"]
        specs = [specs] if isinstance(specs, str) else specs
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise reader.fail("cars.vins is a list of VINs or a text such as CAR001-CAR020")
        try:
            vins = fleet.select(specs=specs)
        except ConfigError as e:
            raise reader.fail(f"cars.vins: {e}") from None
        return Cars(vins=vins, until=until)
    text = spec["selector"]
    if not isinstance(text, str):
        raise reader.fail("cars.selector is a label selector such as region=eu")
    everything = spec.get("all", False)
    if not isinstance(everything, bool):
        raise reader.fail("cars.all is true or false")
    try:
        selector = parse_selector(text)
    except SelectorError as e:
        raise reader.fail(f"cars.selector: {e}") from None
    if selector.empty and not everything:
        # A forgotten selector must not mean the whole fleet.
        raise reader.fail(
            'cars.selector is empty, which matches every car: say so with "all": true'
        )
    if everything and not selector.empty:
        raise reader.fail('cars.all is for the empty selector only ("selector": "")')
    return Cars(selector=selector, selector_text=text, until=until)


def _canary(reader: _Json, value: Any, cars: Cars) -> Canary:
    if value is None:
        return Canary()
    group = reader.mapping(value, "canary", {"vins", "count", "percent"})
    if len(group) != 1:
        raise reader.fail("canary is one of vins, count or percent")
    if "vins" in group:
        specs = group["vins"]
        specs = [specs] if isinstance(specs, str) else specs
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            raise reader.fail("canary.vins is a list of VINs")
        try:
            vins = fleet.select(specs=specs)
        except ConfigError as e:
            raise reader.fail(f"canary.vins: {e}") from None
        if cars.selector is None:
            strangers = [v for v in vins if v not in set(cars.vins)]
            if strangers:
                raise reader.fail(f"canary car {strangers[0]} is not among the cars")
        return Canary(vins=vins)
    key = "count" if "count" in group else "percent"
    suffix = "%" if key == "percent" else ""
    return Canary(size=reader.amount(f"{group[key]}{suffix}", f"canary.{key}"))


def _rate(reader: _Json, value: Any) -> Rate:
    spec = reader.mapping(value, "rate", {"perMinute", "rampUp"})
    if "perMinute" not in spec:
        raise reader.fail("rate needs perMinute")
    ramp = None
    if "rampUp" in spec:
        ramp_spec = reader.mapping(spec["rampUp"], "rate.rampUp", {"start", "factor"})
        ramp = RampUp(
            start=reader.number(ramp_spec.get("start", 1), "rate.rampUp.start", 0.001),
            factor=reader.number(ramp_spec.get("factor", 2), "rate.rampUp.factor", 1.0),
        )
    return Rate(reader.number(spec["perMinute"], "rate.perMinute", 0.001), ramp)


def _pause_after(reader: _Json, value: Any) -> frozenset[int]:
    """``"canary"`` is stage 0; a number N is the N-th wave after it."""
    if not isinstance(value, list):
        raise reader.fail('pauseAfter is a list such as ["canary", 2]')
    stages = set()
    for item in value:
        if item == CANARY:
            stages.add(0)
        elif isinstance(item, int) and not isinstance(item, bool) and 1 <= item <= 100_000:
            stages.add(item)
        else:
            raise reader.fail(f'pauseAfter items are "canary" or a wave number, not {item!r}')
    return frozenset(stages)


def _time(reader: _Json, value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise reader.fail(f"{where} is a time with its offset, e.g. 2026-12-24T18:00:00+01:00")
