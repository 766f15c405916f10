"""What fleetctl's commands do through fleet-server (a context with a server).

The cars are the ones named (--vin, --vins, --vins-file), the ones a label selector
(-l/--selector) matches in the server's inventory, or both: named and matching. Requests go
to each car through the API, which sends them once and answers with the car's own reply;
the results are the same :class:`RunResult` the broker path makes, so every output format
and exit code stays as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

from fleetctl.client.live import WorkloadRow
from fleetctl.client.logs import LogsQuery, _show
from fleetctl.client.results import NO_REPLY, CarResult, RunResult, Status
from fleetctl.client.server import FleetServer, Reply, ServerError
from fleetctl.client.waves import waves

# Requests in flight at once: the server waits for each car's reply, fleetctl waits for the
# server; more threads than this only queue up in the server.
CONCURRENCY = 32
QUEUED = "QUEUED"


def choose(server: FleetServer, vins: Sequence[str], selector: str | None) -> list[str]:
    """The cars to work on: named, matching the selector, or named and matching."""
    if not selector:
        return list(vins)
    matching = [str(car["vin"]) for car in server.cars(selector)]
    if not vins:
        return matching
    chosen = set(matching)
    return [vin for vin in vins if vin in chosen]


@dataclass(frozen=True)
class Batch:
    """One request for many cars, as the API takes it."""

    operation: str
    """The API's path after the car, e.g. manifest/apply, state, history."""
    payload_for: Callable[[str], bytes]
    content_type: str
    batch_size: int | None = None
    max_failures: int | None = None


def result_of(vin: str, reply: Reply, seconds: float) -> CarResult:
    error = reply.error
    if reply.status == 202:
        return CarResult(
            vin,
            Status.TIMEOUT,
            code=QUEUED,
            message="the car is offline; the broker keeps the request for it",
            request_id=reply.request_id,
            seconds=seconds,
        )
    if error is None:
        return CarResult(vin, Status.OK, reply.data, request_id=reply.request_id, seconds=seconds)
    code, message = error
    status = Status.TIMEOUT if code == NO_REPLY else Status.FAILED
    return CarResult(
        vin, status, code=code, message=message, request_id=reply.request_id, seconds=seconds
    )


def run(server: FleetServer, command: str, vins: Sequence[str], batch: Batch) -> RunResult:
    """Sends to every car, a wave at a time; stops after the wave of the K-th failure."""

    def one(vin: str) -> CarResult:
        started = time.monotonic()
        try:
            reply = server.send(vin, batch.operation, batch.payload_for(vin), batch.content_type)
        except ServerError as e:
            if e.status in (401, 403):
                raise  # the token, not the car: no point in going on
            return CarResult(vin, Status.FAILED, code=e.code or "UNREACHABLE", message=str(e))
        return result_of(vin, reply, time.monotonic() - started)

    results: dict[str, CarResult] = {}
    planned = waves(list(vins), batch.batch_size)
    stopped = None
    failures = 0
    with ThreadPoolExecutor(max_workers=max(1, min(CONCURRENCY, len(vins)))) as pool:
        for number, wave in enumerate(planned, 1):
            for result in pool.map(one, wave):
                results[result.vin] = result
                failures += not result.ok
            if batch.max_failures is not None and failures >= batch.max_failures:
                stopped = number
                break
    cars = [results.get(vin) or CarResult(vin, Status.NOT_ATTEMPTED) for vin in vins]
    return RunResult(command, cars, waves=len(planned), stopped_after_wave=stopped)


def workload_rows(cars: Sequence[dict[str, Any]]) -> list[WorkloadRow]:
    """``get workloads`` from the inventory: an offline car's workloads are last known."""
    rows = []
    for car in cars:
        for w in car.get("workloads") or []:
            known = w.get("last_known") or {}
            if known:
                last = "/".join(s for s in (known.get("state"), known.get("substate")) if s)
                info = f"last known: {last}"
                rows.append(
                    WorkloadRow(car["vin"], w["name"], "unknown", "", w.get("agent", ""), info=info)
                )
                continue
            rows.append(
                WorkloadRow(
                    car["vin"],
                    w["name"],
                    w.get("state") or "unknown",
                    w.get("substate") or "",
                    w.get("agent") or "",
                    w.get("instance_id") or "",
                    w.get("info") or "",
                    w.get("since") or "",
                )
            )
    return rows


def logs(server: FleetServer, query: LogsQuery, out: TextIO, err: TextIO) -> int:
    """Prints a car's log lines as the server streams them; the exit code of fleetctl logs."""
    prefix = len(query.workloads) > 1
    for message in server.logs(query.vin, _body(query)):
        ended = _show(message, query, prefix, out, err)
        if ended is not None:
            return ended
    print(f"fleetctl: the log stream of {query.vin} ended without its end", file=err)
    return 1


def _body(query: LogsQuery) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(query.payload())  # what the car gets, as it gets it
    return body
