"""fleet-sim as a user runs it: its command in a process of its own, on a broker of the test's.

The real connector for the shape comparison runs the same way (its command, with an
emulated Ankaios whose workloads are local processes), so these tests see both only on
the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from testkit import Broker
from testkit.sim import Sim


@pytest.fixture
def start_sim(broker: Broker) -> Iterator[Callable[..., Sim]]:
    """Starts fleet-sims (on ``on=`` a broker of the test's own, else the session's) and
    waits until each says ready; each has a VIN prefix of its own."""
    started: list[Sim] = []

    def start(
        *args: str, on: Broker | None = None, ready: float = 30.0, prefix: str | None = None
    ) -> Sim:
        prefix = prefix or f"S{uuid.uuid4().hex[:6].upper()}"
        sim = Sim(on or broker, prefix, list(args))
        started.append(sim)
        sim.expect("ready", ready)
        return sim

    yield start
    for sim in started:
        sim.kill()
