"""``fleetctl rollout start|status|resume|abort|retry-failed|list``."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.options import ConfigError
from fleetctl import output
from fleetctl.client import Engine
from fleetctl.progress import Progress
from fleetctl.rollouts import spec as rollout_spec
from fleetctl.rollouts.live import LiveView
from fleetctl.rollouts.records import (
    DONE,
    INTERRUPTED,
    RUNNING,
    Records,
    Rollout,
    default_path,
    owned_by_a_live_process,
)
from fleetctl.rollouts.runner import Runner

OK, FAILED, USAGE = 0, 1, 2
ACTIONS = ("start", "status", "resume", "abort", "retry-failed", "list")


def add_parser(commands: Any, broker: argparse.ArgumentParser) -> None:
    rollout = commands.add_parser(
        "rollout",
        parents=[broker],
        help="run a rollout described in a file; resumable",
        description="Run a rollout file (canary, waves, soak time, abort thresholds, rate "
        "limit), recording every car's progress in a SQLite database, so that it can be "
        "resumed after fleetctl was stopped, aborted, or retried for the cars that failed.",
    )
    rollout.add_argument("action", choices=ACTIONS, help="what to do")
    rollout.add_argument(
        "target",
        nargs="?",
        metavar="FILE|ID",
        help="the rollout file (start) or the rollout id (status, resume, abort, retry-failed)",
    )
    rollout.add_argument(
        "--db",
        metavar="FILE",
        help=f"the rollout database (default: ${{FLEETCTL_DB}}, else {default_path()})",
    )
    rollout.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        default="table",
        help="table for people (default), json or yaml for scripts",
    )


def check(args: argparse.Namespace) -> None:
    """Usage errors, found before anything is sent."""
    if args.action == "list":
        if args.target is not None:
            raise ConfigError("rollout list takes no argument")
        return
    if args.target is None:
        what = "FILE" if args.action == "start" else "ID"
        raise ConfigError(f"rollout {args.action} needs {what}")
    if args.action == "start":
        args.spec = rollout_spec.load(Path(args.target))


def run(args: argparse.Namespace, settings: BrokerSettings, connect_timeout: float) -> int:
    records = Records(Path(args.db) if args.db else default_path())
    try:
        if args.action == "list":
            print(_render_list(records, args.output), flush=True)
            return OK
        if args.action == "start":
            rollout_id = records.create(args.spec)
            print(f"fleetctl: rollout {rollout_id} started", file=sys.stderr, flush=True)
            return _carry_out(records, rollout_id, settings, args.output, connect_timeout)
        rollout = records.get(args.target)
        if rollout is None:
            print(f"fleetctl: error: there is no rollout {args.target}", file=sys.stderr)
            return USAGE
        if args.action == "status":
            print(_render(records, rollout, args.output), flush=True)
            return OK if rollout.status == DONE else FAILED
        if args.action == "abort":
            records.set_status(rollout.id, "aborted", "aborted by the operator")
            print(_render(records, records.get(rollout.id) or rollout, args.output), flush=True)
            return OK
        if args.action == "retry-failed":
            count = records.retry_failed(rollout.id)
            print(f"fleetctl: {count} failed car(s) to send again", file=sys.stderr, flush=True)
        return _carry_out(records, rollout.id, settings, args.output, connect_timeout)
    finally:
        records.close()


def _carry_out(
    records: Records, rollout_id: str, settings: BrokerSettings, fmt: str, connect_timeout: float
) -> int:
    refused = records.claim(rollout_id)
    if refused is not None:
        print(f"fleetctl: error: {refused}", file=sys.stderr)
        return FAILED
    rollout = records.get(rollout_id)
    assert rollout is not None
    cars = records.cars(rollout_id)
    engine = Engine(settings)
    view = (
        LiveView.for_stream(sys.stderr, cars, bool(rollout.spec.canary)) if fmt == "table" else None
    )
    progress = Progress(len(cars), sys.stderr, enabled=False)
    engine.open(connect_timeout)
    try:
        runner = Runner(
            records,
            engine,
            rollout_id,
            rollout.spec,
            progress=progress,
            on_car=view.update if view is not None else None,
            on_phase=view.phase if view is not None else None,
        )
        outcome = runner.run()
    finally:
        if view is not None:
            view.close()
        engine.close()
    final = records.get(rollout_id) or rollout
    print(_render(records, final, fmt), flush=True)
    return OK if outcome.status == DONE else FAILED


def summary(records: Records, rollout: Rollout) -> dict[str, Any]:
    cars = records.cars(rollout.id)
    states = Counter(car.state for car in cars)
    kinds = Counter(car.kind for car in cars if car.kind)
    waves: dict[int, Counter[str]] = {}
    for car in cars:
        waves.setdefault(car.wave, Counter())[car.state] += 1
    canary = bool(rollout.spec.canary)
    return {
        "id": rollout.id,
        "file": rollout.source,
        "operation": rollout.operation,
        "status": _shown_status(rollout),
        "reason": rollout.reason,
        "totals": {
            "cars": len(cars),
            **{s: states.get(s, 0) for s in ("ok", "failed", "offline", "sent", "pending")},
        },
        "failures": {kind: kinds.get(kind, 0) for kind in rollout_spec.FAILURE_KINDS},
        "waves": [
            {
                "wave": "canary" if canary and number == 0 else number + (0 if canary else 1),
                **dict(sorted(counts.items())),
            }
            for number, counts in sorted(waves.items())
        ],
        "cars": [
            {
                "vin": car.vin,
                "wave": car.wave,
                "state": car.state,
                "attempt": car.attempt,
                "request_id": car.request_id,
                "error": None
                if car.code is None
                else {"code": car.code, "kind": car.kind, "message": car.message},
            }
            for car in cars
        ],
    }


def _shown_status(rollout: Rollout) -> str:
    """``interrupted`` for a rollout recorded as running whose process is gone."""
    if rollout.status == RUNNING and not owned_by_a_live_process(rollout.owner_pid):
        return INTERRUPTED
    return rollout.status


def _render(records: Records, rollout: Rollout, fmt: str) -> str:
    data = summary(records, rollout)
    if fmt != "table":
        return output.dump(data, fmt)
    rows: list[list[str]] = [["VIN", "WAVE", "STATE", "DETAIL"]]
    canary = bool(rollout.spec.canary)
    for car in data["cars"]:
        wave = "canary" if canary and car["wave"] == 0 else str(car["wave"] + (0 if canary else 1))
        error = car["error"]
        detail = "" if error is None else f"{error['code']}: {error['message']}"
        rows.append([car["vin"], wave, car["state"], detail])
    totals = data["totals"]
    line = f"rollout {rollout.id}: {data['status']}" + (
        f" ({rollout.reason})" if rollout.reason else ""
    )
    counts = ", ".join(f"{n} {state}" for state, n in totals.items() if n and state != "cars")
    return output.table(rows) + f"\n{line}\n{totals['cars']} car(s): {counts}"


def _render_list(records: Records, fmt: str) -> str:
    rollouts = [r for r in (records.get(i) for i in records.ids()) if r is not None]
    data = [
        {k: v for k, v in summary(records, r).items() if k not in ("cars", "waves")}
        for r in rollouts
    ]
    if fmt != "table":
        return output.dump({"rollouts": data}, fmt)
    if not data:
        return "no rollouts"
    rows = [["ID", "STATUS", "CARS", "OK", "FAILED", "OFFLINE", "FILE"]]
    for item in data:
        totals = item["totals"]
        rows.append(
            [
                item["id"],
                item["status"],
                str(totals["cars"]),
                str(totals["ok"]),
                str(totals["failed"]),
                str(totals["offline"]),
                item["file"],
            ]
        )
    return output.table(rows)
