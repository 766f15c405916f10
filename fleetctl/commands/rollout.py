"""``fleetctl rollout start|status|resume|abort|retry-failed|list``: rollouts described in
files, recorded in a database (see :mod:`fleetctl.rollouts`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.options import ConfigError
from fleetctl.client.engine import Engine
from fleetctl.commands import options
from fleetctl.commands.command import (
    CONNECT_TIMEOUT,
    FAILED,
    OK,
    USAGE,
    Command,
    Invocation,
    define,
)
from fleetctl.commands.options import Subcommands
from fleetctl.output.progress import Progress
from fleetctl.rollouts import report
from fleetctl.rollouts import spec as rollout_spec
from fleetctl.rollouts.live import LiveView
from fleetctl.rollouts.records import DONE, Records, default_path
from fleetctl.rollouts.runner import Runner

ACTIONS = ("start", "status", "resume", "abort", "retry-failed", "list")


def register(subcommands: Subcommands) -> None:
    rollout = subcommands.add_parser(
        "rollout",
        help="run a rollout described in a file; resumable",
        description="Run a rollout file (canary, waves, soak time, abort thresholds, rate "
        "limit), recording every car's progress in a SQLite database, so that it can be "
        "resumed after fleetctl was stopped, aborted, or retried for the cars that failed.",
    )
    options.add_broker(rollout)
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
    options.add_output(rollout, "table for people (default), json or yaml for scripts")
    define(rollout, Command(_run, prepare=_check))


def _check(args: argparse.Namespace, vins: list[str]) -> bytes:
    """Usage errors, found before anything is sent; the file is read into ``args.spec``."""
    if args.action == "list":
        if args.target is not None:
            raise ConfigError("rollout list takes no argument")
        return b""
    if args.target is None:
        what = "FILE" if args.action == "start" else "ID"
        raise ConfigError(f"rollout {args.action} needs {what}")
    if args.action == "start":
        args.spec = rollout_spec.load(Path(args.target))
    return b""


def _run(invocation: Invocation) -> int:
    args, settings = invocation.args, invocation.settings
    records = Records(Path(args.db) if args.db else default_path())
    try:
        if args.action == "list":
            print(report.render_list(records, args.output), flush=True)
            return OK
        if args.action == "start":
            rollout_id = records.create(args.spec)
            print(f"fleetctl: rollout {rollout_id} started", file=sys.stderr, flush=True)
            return _carry_out(records, rollout_id, settings, args.output)
        rollout = records.get(args.target)
        if rollout is None:
            print(f"fleetctl: error: there is no rollout {args.target}", file=sys.stderr)
            return USAGE
        if args.action == "status":
            print(report.render(records, rollout, args.output), flush=True)
            return OK if rollout.status == DONE else FAILED
        if args.action == "abort":
            records.set_status(rollout.id, "aborted", "aborted by the operator")
            print(
                report.render(records, records.get(rollout.id) or rollout, args.output), flush=True
            )
            return OK
        if args.action == "retry-failed":
            count = records.retry_failed(rollout.id)
            print(f"fleetctl: {count} failed car(s) to send again", file=sys.stderr, flush=True)
        return _carry_out(records, rollout.id, settings, args.output)
    finally:
        records.close()


def _carry_out(records: Records, rollout_id: str, settings: BrokerSettings, fmt: str) -> int:
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
    engine.open(CONNECT_TIMEOUT)
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
    print(report.render(records, final, fmt), flush=True)
    return OK if outcome.status == DONE else FAILED
