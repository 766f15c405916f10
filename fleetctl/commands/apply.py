"""``fleetctl apply``, ``delete`` and ``plan``: a manifest, sent to every car named."""

from __future__ import annotations

import argparse

from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleetctl.commands import manifests, options, requests
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
    define(
        apply,
        Command(
            _apply, prepare=_manifest, needs_cars=True, through_server=_apply, changes_cars=True
        ),
    )

    delete = subcommands.add_parser(
        "delete",
        help="delete a manifest's workloads and configs from cars",
        description="Delete the workloads and configs a manifest names from every car named.",
    )
    options.add_request_options(delete)
    delete.add_argument(
        "target",
        nargs="*",
        metavar="FILE | workload NAME... | config NAME...",
        help="the manifest (YAML; - reads stdin, a directory all its *.yaml), or the names of "
        "workloads or configs to delete without one",
    )
    _add_filename(delete)
    _add_dry_run_and_signing(delete, "delete")
    define(
        delete,
        Command(
            _delete,
            prepare=_delete_payload,
            needs_cars=True,
            through_server=_delete,
            changes_cars=True,
        ),
    )

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
    define(plan, Command(_plan, prepare=_manifest, needs_cars=True, through_server=_plan))


def _add_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="the manifest (YAML; - reads stdin, a directory all its *.yaml and *.yml as one), "
        "checked before sending",
    )
    _add_filename(parser)


def _add_filename(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--filename", metavar="FILE", help="the manifest, as kubectl spells it (-f -: stdin)"
    )


def _source(args: argparse.Namespace, given: str | None) -> str:
    """FILE or -f FILE, exactly one of them."""
    if given is not None and args.filename is not None:
        raise ConfigError("name the manifest once: FILE or -f FILE")
    source = given if given is not None else args.filename
    if source is None:
        raise ConfigError("the following arguments are required: FILE (or -f FILE)")
    args.file = source  # what the results show as "file"
    return str(source)


def _add_dry_run_and_signing(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"only show what the {command} would do in each car (as fleetctl plan)",
    )
    options.add_signing(parser)


def _manifest(args: argparse.Namespace, vins: list[str]) -> bytes:
    return manifests.load(_source(args, args.file))


def _delete_payload(args: argparse.Namespace, vins: list[str]) -> bytes:
    """A manifest, or `workload NAME...` / `config NAME...`: a manifest naming only them."""
    target = list(args.target)
    if len(target) > 1 and target[0] in manifests.KINDS:
        if args.filename is not None:
            raise ConfigError("name the manifest or the names to delete, not both")
        args.file = None
        args.deleted = {manifests.KINDS[target[0]]: target[1:]}
        return manifests.names(target[0], target[1:])
    if len(target) > 1:
        raise ConfigError(
            f"delete takes one FILE, or workload NAME... or config NAME...; got {' '.join(target)}"
        )
    return manifests.load(_source(args, target[0] if target else None))


def _apply(invocation: Invocation) -> int:
    args = invocation.args
    if args.dry_run:
        return requests.dispatch(invocation, Operation.PLAN, {"file": args.file})
    return requests.dispatch(
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
    named = getattr(args, "deleted", None)
    return requests.dispatch(invocation, operation, {"file": args.file} if named is None else named)


def _plan(invocation: Invocation) -> int:
    args = invocation.args
    operation = Operation.PLAN_DELETE if args.delete else Operation.PLAN
    return requests.dispatch(invocation, operation, {"file": args.file})
