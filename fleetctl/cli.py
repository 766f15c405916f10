"""``fleetctl``: command line, subcommands and exit codes.

Exit codes: 0 every car succeeded; 1 a car failed, timed out or was not attempted, or the
broker could not be used; 2 usage error (bad flags, unreadable or invalid file), found
before anything is sent.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

from fleet_connector.ankaios.manifest import parse_manifest
from fleet_connector.errors import RequestError
from fleet_connector.flags import add_options, parse
from fleet_connector.mqtt.broker import BROKER_OPTIONS, BrokerSettings
from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import (
    ConfigError,
    non_negative_int,
    positive_float,
    positive_int,
)
from fleetctl import (
    dashboard,
    fleet,
    keys,
    live,
    logs,
    output,
    plans,
    presence,
    rollout,
    signing,
    validate,
)
from fleetctl.client import Engine
from fleetctl.connection import BrokerError, Connection
from fleetctl.progress import Progress
from fleetctl.rollouts import commands as rollouts

OK, FAILED, USAGE = 0, 1, 2
# Commands that never connect to a broker.
OFFLINE = ("validate", "keys", "sign")
CONNECT_TIMEOUT = 10.0


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so main() decides the exit code and tests can call it."""

    def error(self, message: str) -> Any:
        raise ConfigError(f"{message} (see fleetctl {self._command()}--help)")

    def _command(self) -> str:
        name = self.prog.removeprefix("fleetctl").strip()
        return f"{name} " if name else ""


def _checked(convert: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse type saying what it expects, not "invalid positive_int value"."""

    def checked(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None

    return checked


# MQTT 5's Message Expiry Interval is a four-byte integer.
MAX_EXPIRY = 2**32 - 1


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


def _expiry_seconds(text: str) -> int:
    value = positive_int(text)
    if value > MAX_EXPIRY:
        raise ValueError("too large")
    return value


def build_parser() -> argparse.ArgumentParser:
    seconds = _checked(positive_float, "a number of seconds greater than 0")
    count = _checked(positive_int, "a whole number greater than 0")
    expiry = _checked(_expiry_seconds, f"a whole number of seconds from 1 to {MAX_EXPIRY}")

    broker = _Parser(add_help=False)
    add_options(broker.add_argument_group("broker"), BROKER_OPTIONS)

    cars = _Parser(add_help=False)
    group = cars.add_argument_group("cars")
    group.add_argument(
        "--vin", action="append", default=[], metavar="VIN", help="a car, by VIN (repeatable)"
    )
    group.add_argument(
        "--vins",
        action="append",
        default=[],
        metavar="LIST",
        help="cars as a comma-separated list of VINs and ranges, "
        "e.g. 1-500 or CAR001-CAR020,CAR7 (repeatable)",
    )
    group.add_argument(
        "--vins-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file with one VIN per line, # starts a comment, - reads stdin (repeatable)",
    )

    requests = _Parser(add_help=False)
    group = requests.add_argument_group("requests")
    group.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the replies of a wave, and for the broker (default: 10)",
    )
    group.add_argument(
        "--expiry",
        type=expiry,
        metavar="SECONDS",
        help="requests not delivered to a car within SECONDS are dropped by the broker, and "
        "answered EXPIRED by a connector that had them queued that long (MQTT 5 only; "
        "default: no expiry, an offline car gets them when it is back)",
    )
    group.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        default="table",
        help="table for people (default), json or yaml for scripts",
    )
    group.add_argument(
        "--batch-size",
        type=count,
        metavar="N",
        help="send to N cars at a time, a wave after the previous one "
        "finished (default: all at once)",
    )
    group.add_argument(
        "--max-failures",
        type=count,
        metavar="K",
        help="stop after the wave in which the K-th car failed; later cars are not attempted",
    )

    parser = _Parser(
        prog="fleetctl",
        description="Apply and delete manifests, read states and presence of Ankaios cars "
        "through their fleet connectors over MQTT.",
        epilog="exit codes: 0 every car succeeded, 1 any car failed or timed out (or the "
        "broker could not be used), 2 usage error",
    )
    parser.add_argument("--version", action="version", version=f"fleetctl {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [cars, requests, broker]

    apply = commands.add_parser(
        "apply",
        parents=common,
        help="apply a manifest to cars",
        description="Apply an Ankaios manifest to every car named.",
    )
    apply.add_argument("file", metavar="FILE", help="the manifest (YAML), checked before sending")
    apply.add_argument(
        "--wait",
        choices=["running"],
        help="then follow the apply to its outcome: exit 0 only when every workload it "
        "added has been running for the settle time",
    )
    apply.add_argument(
        "--settle",
        type=_checked(_settle_seconds, "a number of seconds from 0 to 600"),
        default=2.0,
        metavar="SECONDS",
        help="with --wait: seconds a workload must run without failing (default: 2)",
    )
    apply.add_argument(
        "--wait-timeout",
        type=_checked(_deadline_seconds, "a number of seconds from 0.1 to 3600"),
        default=120.0,
        metavar="SECONDS",
        help="seconds to wait for running, per wave (default: 120)",
    )
    _add_plan_and_sign(apply, "apply")
    # Kept for scripts written when --wait polled; the outcome is pushed now.
    apply.add_argument("--poll-interval", type=seconds, help=argparse.SUPPRESS)

    delete = commands.add_parser(
        "delete",
        parents=common,
        help="delete a manifest's workloads and configs from cars",
        description="Delete the workloads and configs a manifest names from every car named.",
    )
    delete.add_argument("file", metavar="FILE", help="the manifest (YAML), checked before sending")
    _add_plan_and_sign(delete, "delete")

    plan = commands.add_parser(
        "plan",
        parents=common,
        help="show what applying (or deleting) a manifest would do in each car",
        description="Ask every car named what applying the manifest (with --delete: "
        "deleting it) would change there now, without changing anything. Exits 1 when a "
        "car's policy or Ankaios would refuse it.",
    )
    plan.add_argument("file", metavar="FILE", help="the manifest (YAML), checked before sending")
    plan.add_argument("--delete", action="store_true", help="plan a delete instead of an apply")
    keys.add_signing(plan)

    checker = commands.add_parser(
        "validate",
        help="check manifests offline",
        description="Check manifests offline as a car checks them: the JSON Schema of "
        "ank apply for v1, unknown keys as warnings. Exits 0 when all are valid, 1 when "
        "one is not (with --strict: also when one has warnings), 2 when one cannot be read.",
    )
    validate.add_arguments(checker)

    keys_parser = commands.add_parser(
        "keys",
        help="make signing keys",
        description="Ed25519 keys for signed requests (see the README, Signed requests).",
    )
    keys.add_keys_arguments(keys_parser)

    sign = commands.add_parser(
        "sign",
        parents=[cars],
        help="write a signed request to stdout, for mosquitto_pub -f",
        description="Sign FILE for the cars named (or --all-cars) and write the envelope to "
        "stdout: mosquitto_pub -t vehicle/1/manifest/apply/req -f signed.txt",
    )
    keys.add_sign_arguments(sign)

    state = commands.add_parser(
        "state",
        parents=common,
        help="read cars' state",
        description="Read the state of every car named; with no MASK the complete state.",
    )
    state.add_argument(
        "masks",
        nargs="*",
        metavar="MASK",
        help="field masks, e.g. workloadStates or desiredState.workloads.NAME",
    )

    status = commands.add_parser(
        "status",
        parents=[cars, broker],
        help="list cars' presence",
        description="List the cars on the broker (or the cars named) with their presence, "
        "from the connectors' retained status messages. With cars named, exits 1 unless "
        "every one is online with Ankaios connected.",
    )
    status.add_argument(
        "--listen",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="stop collecting after this long without a new message (default: 1.0)",
    )
    status.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="stop collecting after this long in any case (default: 10)",
    )
    status.add_argument(
        "-o",
        "--output",
        choices=output.FORMATS,
        default="table",
        help="table (default), json or yaml",
    )

    watch = commands.add_parser(
        "watch",
        parents=[cars, broker],
        help="print replies, presence and sensor values live",
        description="Print every message under vehicle/<VIN>/ as 'topic payload' lines until "
        "Ctrl-C or SIGTERM (exit 0).",
    )
    watch.add_argument("--count", type=count, metavar="N", help="stop after N messages")
    watch.add_argument(
        "--workloads",
        action="store_true",
        help="only the live workload and agent states",
    )
    watch.add_argument(
        "--raw",
        action="store_true",
        help="'topic payload' lines as mosquitto_sub -v prints them, without timestamps",
    )

    get = commands.add_parser(
        "get",
        parents=[cars, broker],
        help="list what the cars' connectors publish, without asking the cars",
        description="get workloads: the live workload states of the cars named (or of every "
        "car on the broker), from the connectors' retained messages.",
    )
    get.add_argument("what", choices=["workloads"], metavar="workloads")
    get.add_argument(
        "--listen",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="stop collecting after this long without a new message (default: 1.0)",
    )
    get.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="stop collecting after this long in any case (default: 10)",
    )
    get.add_argument(
        "-o", "--output", choices=output.FORMATS, default="table", help="table, json or yaml"
    )

    logs_command = commands.add_parser(
        "logs",
        parents=[cars, broker],
        help="print workloads' logs of one car",
        description="Print the logs of workloads of one car (--vin), like ank logs.",
    )
    logs_command.add_argument("workloads", nargs="+", metavar="WORKLOAD")
    logs_command.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)"
    )
    logs_command.add_argument(
        "--follow-for",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="with -f: stop after this long (default: 600, the connector's usual limit)",
    )
    logs_command.add_argument(
        "-n",
        "--tail",
        type=_checked(non_negative_int, "a whole number, 0 or more"),
        metavar="N",
        help="only the last N lines (default: all, up to the connector's limit)",
    )
    logs_command.add_argument(
        "--since", metavar="TIME", help="RFC 3339 time, e.g. 2026-12-02T10:00:00Z"
    )
    logs_command.add_argument("--until", metavar="TIME", help="RFC 3339 time")
    logs_command.add_argument(
        "--timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the broker and for each answer (default: 10)",
    )

    board = commands.add_parser(
        "dashboard",
        parents=[cars, broker],
        help="serve a live web page of the fleet",
        description="Serve a web page with the cars (or the cars named), their workloads, "
        "agents, recent apply/delete outcomes and log tails, updated live. Read-only.",
    )
    dashboard.add_arguments(board, _checked(dashboard.port, "a port from 0 to 65535"))

    rollouts.add_parser(commands, broker)
    rollback = commands.add_parser(
        "rollback",
        parents=common,
        help="undo the last change on cars (needs the connectors' STATE_DIR)",
        description="Undo the newest change of every car named, from its connector's journal; "
        "with --entry or --request-id, that journal entry.",
    )
    target = rollback.add_mutually_exclusive_group()
    target.add_argument("--entry", type=count, metavar="N", help="the journal entry to undo")
    target.add_argument("--request-id", metavar="ID", help="the request to undo, by its id")
    keys.add_signing(rollback)
    history = commands.add_parser(
        "history",
        parents=common,
        help="read cars' journals of changes, newest first",
        description="Read the journal of changes of every car named (needs the connectors' "
        "STATE_DIR).",
    )
    history.add_argument("--limit", type=count, metavar="N", help="the newest N entries only")
    return parser


def _add_plan_and_sign(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"only show what the {command} would do in each car (as fleetctl plan)",
    )
    keys.add_signing(parser)


def _version() -> str:
    try:
        return metadata.version("ankaios-fleet-connector")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Invocation:
    """A command line, parsed and checked."""

    args: argparse.Namespace
    settings: BrokerSettings
    vins: list[str]
    payload: bytes = b""


def parse_command_line(argv: Sequence[str], environ: Mapping[str, str]) -> Invocation:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.command in OFFLINE:
        # No broker: its options (and the environment's) do not apply.
        settings = BrokerSettings()
    else:
        # flags.parse applies flags, environment and defaults to the broker options only;
        # the namespace for everything else comes from the plain parse above.
        settings = BrokerSettings.from_values(parse(parser, BROKER_OPTIONS, argv, environ))
    vins = fleet.select(
        getattr(args, "vin", []), getattr(args, "vins", []), getattr(args, "vins_file", [])
    )
    payload = b""
    if args.command in ("apply", "delete", "plan", "state", "rollback", "history") and not vins:
        raise ConfigError("name the cars with --vin, --vins or --vins-file")
    if args.command == "rollout":
        rollouts.check(args)
    elif args.command in ("apply", "delete", "plan"):
        payload = load_manifest(Path(args.file))
    elif args.command in ("rollback", "history"):
        payload = _journal_selector(args)
    elif args.command == "sign":
        payload = _sign_payload(Path(args.file), args.operation)
    elif args.command == "logs" and len(vins) != 1:
        raise ConfigError("fleetctl logs reads one car: name it with --vin")
    elif args.command == "state":
        if any(not mask.strip() for mask in args.masks):
            raise ConfigError("a field mask must not be empty")
        payload = _json_list(args.masks)
    return Invocation(args, settings, vins, payload)


def _sign_payload(path: Path, operation: str) -> bytes:
    if operation in keys.OPERATIONS:
        return load_manifest(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def _journal_selector(args: argparse.Namespace) -> bytes:
    selector: dict[str, Any] = {}
    for key in ("entry", "request_id", "limit"):
        if getattr(args, key, None) is not None:
            selector[key] = getattr(args, key)
    return json.dumps(selector).encode()


def _json_list(items: Sequence[str]) -> bytes:
    return json.dumps(list(items)).encode()


def load_manifest(path: Path) -> bytes:
    """The file's bytes, sent as they are, once they parse the way the connector parses them."""
    try:
        payload = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read manifest {path}: {e.strerror}") from None
    try:
        parse_manifest(payload)
    except RequestError as e:
        raise ConfigError(f"{path}: {e.message}") from None
    return payload


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        invocation = parse_command_line(argv, os.environ if environ is None else environ)
        offline = _run_offline(invocation)
    except ConfigError as e:
        print(f"fleetctl: error: {e}", file=sys.stderr)
        return USAGE
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else OK
    if offline is not None:
        return offline
    try:
        if invocation.args.command == "status":
            return run_status(invocation)
        if invocation.args.command == "watch":
            return run_watch(invocation)
        if invocation.args.command == "get":
            return run_get(invocation)
        if invocation.args.command == "logs":
            return run_logs(invocation)
        if invocation.args.command == "rollout":
            return rollouts.run(invocation.args, invocation.settings, CONNECT_TIMEOUT)
        if invocation.args.command == "dashboard":
            args = invocation.args
            return dashboard.run(
                invocation.settings, invocation.vins, args.listen, args.port, CONNECT_TIMEOUT
            )
        return run_requests(invocation)
    except BrokerError as e:
        print(f"fleetctl: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(
            "fleetctl: interrupted; requests already sent may still be carried out",
            file=sys.stderr,
        )
        return FAILED


def _run_offline(invocation: Invocation) -> int | None:
    """The exit code of a command that needs no broker; None for the others."""
    args = invocation.args
    if args.command == "validate":
        return validate.run(args)
    if args.command == "keys":
        return keys.run_keys(args)
    if args.command == "sign":
        return keys.run_sign(args, invocation.vins, invocation.payload)
    return None


def _operation(args: argparse.Namespace) -> Operation:
    """What is sent: --dry-run and plan send plan requests."""
    if args.command == "plan":
        return Operation.PLAN_DELETE if args.delete else Operation.PLAN
    if getattr(args, "dry_run", False):
        return Operation.PLAN_DELETE if args.command == "delete" else Operation.PLAN
    return {
        "apply": Operation.APPLY,
        "delete": Operation.DELETE,
        "state": Operation.STATE,
        "rollback": Operation.ROLLBACK,
        "history": Operation.HISTORY,
    }[args.command]


def run_requests(invocation: Invocation) -> int:
    args = invocation.args
    operation = _operation(args)
    command = "plan" if operation.planned is not None else args.command
    signer = None
    if getattr(args, "sign_key", None):
        signer = signing.Signer(Path(args.sign_key), operation, args.sign_valid_for)
    plan = rollout.Plan(
        operation=operation,
        payload=invocation.payload,
        timeout=args.timeout,
        batch_size=args.batch_size,
        max_failures=args.max_failures,
        wait_running=operation is Operation.APPLY and getattr(args, "wait", None) == "running",
        wait_timeout=getattr(args, "wait_timeout", 120.0),
        settle=getattr(args, "settle", 2.0),
        payload_for=None if signer is None else signer.for_car(invocation.payload),
    )
    engine = Engine(invocation.settings, expiry=args.expiry)
    progress = Progress(len(invocation.vins), sys.stderr)
    engine.open(args.timeout)
    if args.expiry is not None and engine.connection.protocol != "5":
        print(
            "fleetctl: warning: MQTT 3.1.1 has no message expiry; --expiry is ignored",
            file=sys.stderr,
        )
    try:
        result = rollout.run(engine, command, invocation.vins, plan, progress)
    finally:
        progress.close()
        engine.close()
    if command == "plan":
        plans.judge(result)
    result.extra = {
        "run_id": engine.run_id,
        "mqtt_protocol": engine.connection.protocol,
        **_described(args),
    }
    print(output.render_run(result, args.output), flush=True)
    return OK if result.ok else FAILED


def _described(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "state":
        return {"masks": args.masks}
    if getattr(args, "file", None) is not None:
        return {"file": args.file}
    return {}


def run_status(invocation: Invocation) -> int:
    args = invocation.args
    found = presence.collect(
        invocation.settings,
        vins=invocation.vins,
        listen=args.listen,
        timeout=args.timeout,
    )
    if invocation.vins:
        cars = [found.get(vin) or presence.Presence(vin, "unknown") for vin in invocation.vins]
    else:
        cars = [found[vin] for vin in sorted(found)]
    print(output.render_presence(cars, args.output), flush=True)
    if invocation.vins and not all(car.ready for car in cars):
        return FAILED
    return OK


# SIGTERM while watching or following logs: stop like Ctrl-C does.
_Stopped = logs.Interrupted


def run_get(invocation: Invocation) -> int:
    args = invocation.args
    rows = live.collect(
        invocation.settings, vins=invocation.vins, listen=args.listen, timeout=args.timeout
    )
    print(live.render(rows, args.output), flush=True)
    return OK


def run_logs(invocation: Invocation) -> int:
    args = invocation.args
    query = logs.LogsQuery(
        vin=invocation.vins[0],
        workloads=list(args.workloads),
        tail=args.tail,
        follow=args.follow_for if args.follow else 0,
        since=args.since,
        until=args.until,
    )
    with _stop_on_sigterm():
        return logs.run(invocation.settings, query, timeout=args.timeout)


def run_watch(invocation: Invocation) -> int:
    arrived: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    connection = Connection(
        invocation.settings,
        lambda topic, payload, retained: arrived.put((topic, payload)),
    )
    args = invocation.args
    filters = live.watch_filters(invocation.vins, states_only=args.workloads)
    limit = args.count
    with _stop_on_sigterm():
        try:
            connection.open(CONNECT_TIMEOUT)
            refused = connection.subscribe(filters, CONNECT_TIMEOUT)
            if refused:
                raise BrokerError(f"the broker refused subscriptions {', '.join(refused)}")
            seen = 0
            while limit is None or seen < limit:
                topic, payload = arrived.get()
                # One message per line, whatever a car put into it.
                line = live.watch_line(topic, payload, raw=args.raw, at=live.now())
                print(output.terminal_safe(line), flush=True)
                seen += 1
        except (KeyboardInterrupt, _Stopped):
            pass
        finally:
            connection.close()
    return OK


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    if threading.current_thread() is not threading.main_thread():
        # Signals reach only the main thread; a watch run from another thread stops by --count.
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
