"""Prometheus metrics, in a registry of the service's own (never the global default one).

Counts of cars and workloads are computed from the in-memory inventory at scrape time, so
they agree across servers without any bookkeeping; requests and ingest lag are this
server's own.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fleet_server.db import DatabaseError

RolloutCounts = tuple[dict[str, int], dict[str, dict[str, int]]]
"""Rollouts by state; the cars of active rollouts by rollout and state."""

if TYPE_CHECKING:
    from fleet_server.service import Service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLLOUT_STATES = ("running", "paused", "waiting", "done", "done-with-failures", "aborted")
OFFLINE_STATE = "unknown"
"""How an offline car's workloads are counted: their last known state is not current."""


class _InventoryCollector(Collector):
    def __init__(self, service: Service, metrics: Metrics) -> None:
        self._service = service
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        online = 0
        states: Tally[str] = Tally()
        cars = self._service.inventory.cars
        for car in list(cars.values()):
            if car.online:
                online += 1
                states.update(w.state or OFFLINE_STATE for w in car.workloads)
            else:
                states[OFFLINE_STATE] += len(car.workloads)
        family = GaugeMetricFamily("fleet_server_cars", "Cars by presence", labels=["presence"])
        family.add_metric(["online"], online)
        family.add_metric(["offline"], len(cars) - online)
        yield family
        family = GaugeMetricFamily(
            "fleet_server_workloads",
            "Workloads by state (an offline car's count as unknown)",
            labels=["state"],
        )
        for state, count in sorted(states.items()):
            family.add_metric([state], count)
        yield family
        family = GaugeMetricFamily("fleet_server_rollouts", "Rollouts by state", labels=["state"])
        try:
            # Read at scrape time (on a worker thread): every instance shows the same.
            rollouts, cars_by_rollout = self._metrics.rollouts()
        except DatabaseError:
            rollouts, cars_by_rollout = {}, {}
        for state in sorted({*ROLLOUT_STATES, *rollouts}):
            family.add_metric([state], rollouts.get(state, 0))
        yield family
        family = GaugeMetricFamily(
            "fleet_server_rollout_cars",
            "Cars of active rollouts by rollout and state (waiting cars are pending)",
            labels=["rollout", "state"],
        )
        for rollout, by_state in sorted(cars_by_rollout.items()):
            for state, count in sorted(by_state.items()):
                family.add_metric([rollout, state], count)
        yield family
        ingest = self._service.ingest
        family = GaugeMetricFamily(
            "fleet_server_ingest_pending", "Messages received, not yet written"
        )
        family.add_metric([], ingest.pending())
        yield family


class Metrics:
    def __init__(
        self, service: Service, rollouts: Callable[[], RolloutCounts] = lambda: ({}, {})
    ) -> None:
        self.rollouts = rollouts
        """Rollouts by state, and active rollouts' cars by rollout and state, read at every
        scrape (fleet_server/rollouts/store.py state_counts)."""
        self.registry = CollectorRegistry()
        self.registry.register(_InventoryCollector(service, self))
        self.requests = Counter(
            "fleet_server_requests",
            "Requests sent to cars, by operation and outcome (ok, the car's error code, "
            "NO_REPLY, QUEUED)",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.ingest_lag = Histogram(
            "fleet_server_ingest_lag_seconds",
            "Seconds from a car's message arriving to its commit to the database",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.resyncs = Counter(
            "fleet_server_resyncs",
            "Reads of the retained topics after another server went silent",
            registry=self.registry,
        )
        self.rollout_transitions = Counter(
            "fleet_server_rollout_transitions",
            "State changes of rollouts and their cars made by this instance, by new state",
            ["state"],
            registry=self.registry,
        )
        self.ingested = Counter(
            "fleet_server_ingest_messages", "Car messages written", registry=self.registry
        )

    def rollout_transition(self, state: str) -> None:
        self.rollout_transitions.labels(state).inc()

    def observe_lag(self, lags: list[float]) -> None:
        self.ingested.inc(len(lags))
        observe = self.ingest_lag.observe
        for lag in lags:
            observe(lag)

    def render(self) -> bytes:
        return generate_latest(self.registry)
