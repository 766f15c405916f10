"""``fleetctl rollout start|status|pause|resume|abort|approve|retry-failed|list``: rollouts
described in files, recorded in a local database (see :mod:`fleetctl.rollouts`), or, with a
server context, carried out by fleet-server (:mod:`fleetctl.rollouts.service`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleetctl.client import signing
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
from fleetctl.rollouts import report, service
from fleetctl.rollouts import spec as rollout_spec
from fleetctl.rollouts.live import LiveView
from fleetctl.rollouts.records import (
    ABORTED,
    DONE,
    RUNNING,
    Overlap,
    Records,
    Rollout,
    default_path,
    owned_by_a_live_process,
)
from fleetctl.rollouts.runner import Runner

ACTIONS = ("start", "status", "pause", "resume", "abort", "approve", "retry-failed", "list")
SERVER_ONLY = ("pause", "approve")
_SENDING = ("start", "resume", "retry-failed")


def register(subcommands: Subcommands) -> None:
    rollout = subcommands.add_parser(
        "rollout",
        help="run a rollout described in a file; resumable",
        description="Run a rollout file (canary, waves, soak time, abort thresholds, rate "
        "limit), recording every car's progress in a SQLite database, so that it can be "
        "resumed after fleetctl was stopped, aborted, or retried for the cars that failed. "
        "With a server context, fleet-server carries the rollout out (label selectors, late "
        "joiners, windows, gates, rollback, approvals: docs/rollouts.md); fleetctl starts "
        "it, shows it and acts on it.",
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
    options.add_signing(
        rollout,
        key_help="(start, resume, retry-failed) sign each car's request with this key, for "
        "that car, when it is sent; recorded, so resume and retry-failed sign with it too",
        default_valid_for=None,
    )
    define(
        rollout,
        Command(_run, prepare=_check, through_server=_through_server, changes_cars=True),
    )


def _check(args: argparse.Namespace, vins: list[str]) -> bytes:
    """Usage errors, found before anything is sent; the file is read into ``args.spec``."""
    signs = args.sign_key is not None or args.sign_valid_for is not None
    if signs and args.action not in _SENDING:
        raise ConfigError(
            "--sign-key and --sign-valid-for are for rollout start, resume and retry-failed"
        )
    if args.sign_key is not None:
        signing.load_key(Path(args.sign_key))  # an unreadable key: a usage error, nothing sent
    if args.action == "list":
        if args.target is not None:
            raise ConfigError("rollout list takes no argument")
        return b""
    if args.target is None:
        what = "FILE" if args.action == "start" else "ID"
        raise ConfigError(f"rollout {args.action} needs {what}")
    return b""


def _run(invocation: Invocation) -> int:
    args, settings = invocation.args, invocation.settings
    if args.action in SERVER_ONLY:
        print(
            f"fleetctl: error: rollout {args.action} needs a context with a fleet-server "
            "(fleetctl config set-context NAME --server URL --token-file FILE)",
            file=sys.stderr,
        )
        return USAGE
    if args.action == "start":
        try:
            args.spec = rollout_spec.load(Path(args.target))
        except ConfigError as e:
            print(f"fleetctl: error: {e}", file=sys.stderr)
            return USAGE
    records = Records(Path(args.db) if args.db else default_path())
    try:
        if args.action == "list":
            print(report.render_list(records, args.output), flush=True)
            return OK
        if args.action == "start":
            try:
                rollout_id = records.create(args.spec)
            except Overlap as e:
                print(f"fleetctl: error: {e}", file=sys.stderr)
                return FAILED
            _record_signing(records, rollout_id, args)
            print(f"fleetctl: rollout {rollout_id} started", file=sys.stderr, flush=True)
            return _carry_out(records, rollout_id, settings, args.output)
        rollout = records.get(args.target)
        if rollout is None:
            print(f"fleetctl: error: there is no rollout {args.target}", file=sys.stderr)
            return USAGE
        if args.action == "status":
            print(report.render(records, rollout, args.output), flush=True)
            # A rollout still running has not failed; the others say whether it did.
            return OK if rollout.status in (DONE, RUNNING) and _alive(rollout) else FAILED
        if args.action == "abort":
            records.set_status(rollout.id, "aborted", "aborted by the operator")
            print(
                report.render(records, records.get(rollout.id) or rollout, args.output), flush=True
            )
            return OK
        _record_signing(records, rollout.id, args)
        if args.action == "retry-failed":
            if rollout.status == ABORTED:
                # Abort is final: retrying would send to every pending car and call it done.
                print(
                    f"fleetctl: error: rollout {rollout.id} was aborted, which is final; "
                    "start a new rollout for the cars that remain",
                    file=sys.stderr,
                )
                return FAILED
            count = records.retry_failed(rollout.id)
            print(f"fleetctl: {count} failed car(s) to send again", file=sys.stderr, flush=True)
        return _carry_out(records, rollout.id, settings, args.output)
    finally:
        records.close()


def _through_server(invocation: Invocation) -> int:
    args, server = invocation.args, invocation.server
    assert server is not None
    if args.action == "list":
        print(service.render_list(service.listing(server), args.output), flush=True)
        return OK
    if args.action == "start":
        try:
            rollout_id = service.start(server, Path(args.target))
        except ConfigError as e:
            print(f"fleetctl: error: {e}", file=sys.stderr)
            return USAGE
        print(
            f"fleetctl: rollout {rollout_id} started; fleet-server carries it out",
            file=sys.stderr,
            flush=True,
        )
        print(service.render(service.get(server, rollout_id), args.output), flush=True)
        return OK
    if args.action == "retry-failed":
        print(
            "fleetctl: error: a fleet-server rollout is final once done or aborted; "
            f"`fleetctl rollout status {args.target} -o json` shows `remaining`, the same "
            "rollout for the cars that did not succeed, to start as a new one",
            file=sys.stderr,
        )
        return USAGE
    if args.action == "status":
        rollout = service.get(server, args.target)
        print(service.render(rollout, args.output), flush=True)
        # As for local rollouts: one still going on has not failed.
        return OK if rollout.get("state") in service.NOT_FAILED else FAILED
    rollout = service.act(server, args.target, args.action)
    print(service.render(rollout, args.output), flush=True)
    return OK


def _alive(rollout: Rollout) -> bool:
    """Not ``interrupted``: a running rollout's fleetctl is still there (done ones are)."""
    return rollout.status != RUNNING or owned_by_a_live_process(rollout.owner_pid)


def _record_signing(records: Records, rollout_id: str, args: argparse.Namespace) -> None:
    """--sign-key and --sign-valid-for, kept with the rollout (resume may change them)."""
    if args.sign_key is None and args.sign_valid_for is None:
        return
    recorded = records.signing(rollout_id)
    key = Path(args.sign_key) if args.sign_key else (recorded[0] if recorded else None)
    if key is None:
        return
    valid_for = args.sign_valid_for or (recorded[1] if recorded else signing.DEFAULT_VALID_FOR)
    options.warn_about_validity(valid_for)
    records.set_signing(rollout_id, key, valid_for)


def _signer(records: Records, rollout: Rollout) -> signing.Signer | None:
    recorded = records.signing(rollout.id)
    if recorded is None:
        return None
    operation = Operation.APPLY if rollout.operation == "apply" else Operation.DELETE
    return signing.Signer(recorded[0], operation, recorded[1])


def _carry_out(records: Records, rollout_id: str, settings: BrokerSettings, fmt: str) -> int:
    rollout = records.get(rollout_id)
    assert rollout is not None
    try:
        # Before the claim: a key that is gone leaves the rollout as it was.
        signer = _signer(records, rollout)
    except ConfigError as e:
        print(f"fleetctl: error: {e}", file=sys.stderr)
        return USAGE
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
            signer=signer,
        )
        outcome = runner.run()
    finally:
        if view is not None:
            view.close()
        engine.close()
    final = records.get(rollout_id) or rollout
    print(report.render(records, final, fmt), flush=True)
    return OK if outcome.status == DONE else FAILED
