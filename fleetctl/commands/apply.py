"""``fleetctl apply``, ``delete`` and ``plan``: a manifest, sent to every car named."""

from __future__ import annotations

import argparse
from pathlib import Path

from fleet_connector.mqtt.topics import Operation
from fleetctl.commands import options, requests
from fleetctl.commands.command import Command, Invocation, define
from fleetctl.commands.options import Subcommands


def _settle_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 600:
        raise ValueError("out of range")
    return value


def _deadline_seconds(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 3600:
        raise ValueError("out of range")
    return value


def register(subcommands: Subcommands) -> None:
    apply = subcommands.add_parser(
        "apply",
        help="apply a manifest to cars",
        description="Apply an Ankaios manifest to every car named.",
    )
    options.add_request_options(apply)
    _add_file(apply)
    apply.add_argument(
        "--wait",
        choices=["running"],
        help="then follow the apply to its outcome: exit 0 only when every workload it "
        "added has been running for the settle time",
    )
    apply.add_argument(
        "--settle",
        type=options.checked(_settle_seconds, "a number of seconds from 0 to 600"),
        default=2.0,
        metavar="SECONDS",
        help="with --wait: seconds a workload must run without failing (default: 2)",
    )
    apply.add_argument(
        "--wait-timeout",
        type=options.checked(_deadline_seconds, "a number of seconds from 0.1 to 3600"),
        default=120.0,
        metavar="SECONDS",
        help="seconds to wait for running, per wave (default: 120)",
    )
    _add_dry_run_and_signing(apply, "apply")
    # Kept for scripts written when --wait polled; the outcome is pushed now.
    apply.add_argument("--poll-interval", type=options.seconds, help=argparse.SUPPRESS)
    define(apply, Command(_apply, prepare=_manifest, needs_cars=True))

    delete = subcommands.add_parser(
        "delete",
        help="delete a manifest's workloads and configs from cars",
        description="Delete the workloads and configs a manifest names from every car named.",
    )
    options.add_request_options(delete)
    _add_file(delete)
    _add_dry_run_and_signing(delete, "delete")
    define(delete, Command(_delete, prepare=_manifest, needs_cars=True))

    plan = subcommands.add_parser(
        "plan",
        help="show what applying (or deleting) a manifest would do in each car",
        description="Ask every car named what applying the manifest (with --delete: "
        "deleting it) would change there now, without changing anything. Exits 1 when a "
        "car's policy or Ankaios would refuse it.",
    )
    options.add_request_options(plan)
    _add_file(plan)
    plan.add_argument("--delete", action="store_true", help="plan a delete instead of an apply")
    options.add_signing(plan)
    define(plan, Command(_plan, prepare=_manifest, needs_cars=True))


def _add_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the manifest (YAML), checked before sending")


def _add_dry_run_and_signing(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"only show what the {command} would do in each car (as fleetctl plan)",
    )
    options.add_signing(parser)


def _manifest(args: argparse.Namespace, vins: list[str]) -> bytes:
    return options.load_manifest(Path(args.file))


def _apply(invocation: Invocation) -> int:
    args = invocation.args
    if args.dry_run:
        return requests.send(invocation, Operation.PLAN, {"file": args.file})
    return requests.send(
        invocation,
        Operation.APPLY,
        {"file": args.file},
        wait_running=args.wait == "running",
        wait_timeout=args.wait_timeout,
        settle=args.settle,
    )


def _delete(invocation: Invocation) -> int:
    args = invocation.args
    operation = Operation.PLAN_DELETE if args.dry_run else Operation.DELETE
    return requests.send(invocation, operation, {"file": args.file})


def _plan(invocation: Invocation) -> int:
    args = invocation.args
    operation = Operation.PLAN_DELETE if args.delete else Operation.PLAN
    return requests.send(invocation, operation, {"file": args.file})
