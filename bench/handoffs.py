"""Where a request's time goes inside a connector process, stage by stage, thread by thread.

``python -m bench.handoffs OUT.json MODULE``: runs ``python -m MODULE`` (our connector or the
baseline) with timestamps taken at the points a request passes, and on exit (SIGTERM)
writes the median time between consecutive points to ``OUT.json``. cProfile says which
functions cost CPU; this says how long a request waits between threads, which cProfile
cannot see. Meant for one request at a time (the latency benchmark's load).

The points, in order (entry or exit of a function, patched at start-up); the baseline
passes only those marked *:

- ``on_message`` *: paho calls the message callback (network thread)
- ``queued``: ``Connector._enqueue`` returns
- ``worker``: ``Handler.handle_reads`` starts (worker thread)
- ``written`` *: the request frame is in the FIFO (SDK: ``_write_to_pipe`` returns)
- ``answer_read`` *: a frame from the FIFO is dispatched (SDK: ``_handle_response``)
- ``dispatched`` *: the waiting request is woken (SDK: the response is in its queue)
- ``resumed`` *: the request sees its answer (SDK: ``get_state`` returns)
- ``publish`` *: paho ``publish`` is called for the reply
- ``sent`` *: paho writes to the socket (network thread)
"""

from __future__ import annotations

import itertools
import json
import runpy
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ORDER = [
    "on_message",
    "queued",
    "worker",
    "written",
    "answer_read",
    "dispatched",
    "resumed",
    "publish",
    "sent",
]

_events: list[tuple[str, float, str]] = []


def _mark(label: str) -> None:
    _events.append((label, time.perf_counter(), threading.current_thread().name))


def _patch(owner: Any, name: str, entry: str | None = None, exit_: str | None = None) -> None:
    original: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if entry:
            _mark(entry)
        try:
            return original(*args, **kwargs)
        finally:
            if exit_:
                _mark(exit_)

    setattr(owner, name, wrapper)


def install(module: str) -> None:
    import paho.mqtt.client as mqtt

    _patch(mqtt.Client, "_handle_on_message", entry="on_message")
    _patch(mqtt.Client, "publish", entry="publish")
    _patch(mqtt.Client, "_sock_send", entry="sent")
    if module == "fleet_connector":
        from fleet_connector import connector
        from fleet_connector.ankaios import control_interface
        from fleet_connector.requests import handler

        _patch(connector.Connector, "_enqueue", exit_="queued")
        _patch(handler.Handler, "handle_reads", entry="worker")
        _patch(handler.Handler, "handle", entry="worker")
        _patch(control_interface.ControlInterface, "_write_raw", exit_="written")
        _patch(control_interface.ControlInterface, "_dispatch", entry="answer_read")
        _patch(control_interface.ControlInterface, "_dispatch", exit_="dispatched")
        _patch(control_interface.ControlInterface, "requests", exit_="resumed")
    else:
        from ankaios_sdk import Ankaios
        from ankaios_sdk._components import control_interface as sdk_ci

        _patch(sdk_ci.ControlInterface, "_write_to_pipe", exit_="written")
        _patch(sdk_ci.ControlInterface, "_handle_response", entry="answer_read")
        _patch(sdk_ci.ControlInterface, "_handle_response", exit_="dispatched")
        for name in ("get_state", "apply_manifest"):
            _patch(Ankaios, name, exit_="resumed")


def summarise(events: list[tuple[str, float, str]]) -> dict[str, Any]:
    """Median gap between consecutive points, over requests that passed every point."""
    requests: list[dict[str, tuple[float, str]]] = []
    current: dict[str, tuple[float, str]] | None = None
    for label, at, thread in events:
        if label == "on_message":
            current = {}
            requests.append(current)
        if current is not None and label not in current:
            current[label] = (at, thread)
    present = [p for p in ORDER if requests and all(p in r for r in requests[-50:])]
    complete = [r for r in requests if all(p in r for p in present)]
    gaps: dict[str, float] = {}
    threads: dict[str, str] = {}
    for before, after in itertools.pairwise(present):
        values = [r[after][0] - r[before][0] for r in complete]
        if values:
            gaps[f"{before} -> {after}"] = round(statistics.median(values) * 1000, 4)
            threads[f"{before} -> {after}"] = (
                complete[-1][before][1] + " -> " + complete[-1][after][1]
            )
    totals = [r[present[-1]][0] - r[present[0]][0] for r in complete] if complete else []
    return {
        "requests": len(complete),
        "points": present,
        "median_ms": gaps,
        "threads": threads,
        "on_message_to_sent_median_ms": round(statistics.median(totals) * 1000, 4)
        if totals
        else None,
    }


def run(workdir: Path, samples: int) -> dict[str, Any]:
    """Our connector and the baseline under this module, state requests interleaved."""
    import uuid

    from bench.client import Client
    from bench.common import (
        PROFILES,
        Mosquitto,
        connector_env,
        python_module,
        spawn,
        start_emulator,
        stop_all,
    )
    from bench.latency import (
        STATE_PAYLOAD,
        Target,
        _plain,
        _with_id,
        interleaved,
        wait_answering,
        wait_online,
    )
    from fleet_connector.mqtt.topics import Operation, Topics

    broker = Mosquitto(workdir / "mosquitto").start()
    procs = []
    client: Client | None = None
    try:
        client = Client(broker.port)
        run_id = uuid.uuid4().hex[:6]
        outs = {
            "ours": PROFILES / "handoffs-connector.json",
            "baseline": PROFILES / "handoffs-baseline.json",
        }
        targets: list[Target] = []
        for name, module in (("ours", "fleet_connector"), ("baseline", "bench.tutorial_connector")):
            emulator, ci = start_emulator(workdir, f"emulator-{name}")
            procs.append(emulator)
            vin = f"{name}{run_id}"
            topics = Topics(vin)
            client.subscribe(f"{topics.base}/+/resp/+", f"{topics.base}/+/resp")
            proc = spawn(
                f"handoffs-{name}",
                python_module("bench.handoffs", str(outs[name]), module),
                workdir,
                connector_env(vin, broker.port, ci),
            )
            procs.append(proc)
            if name == "ours":
                wait_online(client, topics)
                targets.append(Target(name, _with_id(topics, Operation.STATE, run_id)))
            else:
                wait_answering(client, topics)
                targets.append(Target(name, _plain(topics, Operation.STATE)))
        measured = interleaved(client, targets, [STATE_PAYLOAD], samples, max(10, samples // 20))
        for proc in procs:
            proc.stop(timeout=15)
        result: dict[str, Any] = {}
        for name, out in outs.items():
            result[name] = json.loads(out.read_text())
            result[name]["client_round_trip_p50_ms"] = round(measured[name].p50_ms, 4)
        return result
    finally:
        stop_all(client, procs, broker)


def main() -> None:
    if sys.argv[1] == "--run":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench-handoffs-") as tmp:
            print(json.dumps(run(Path(tmp), int(sys.argv[2])), indent=1))
        return
    out = Path(sys.argv[1])
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    install(module)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summarise(list(_events)), indent=1))


if __name__ == "__main__":
    main()
