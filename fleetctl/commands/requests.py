"""What apply, delete, plan, state, rollback and history share: one request to every car
named, sent in waves, and the results printed (see :mod:`fleetctl.client.waves`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleet_connector.mqtt.topics import Operation
from fleetctl import output
from fleetctl.client import server_runs, signing, waves
from fleetctl.client.engine import Engine
from fleetctl.client.results import RunResult
from fleetctl.commands import options
from fleetctl.commands.command import FAILED, OK, USAGE, Invocation
from fleetctl.output import plans
from fleetctl.output.progress import Progress


def dispatch(
    invocation: Invocation,
    operation: Operation,
    described: Mapping[str, Any],
    **waiting: Any,
) -> int:
    """Through the context's fleet-server if it names one, else straight over the broker."""
    if invocation.server is not None:
        return send_through_server(invocation, operation, described)
    return send(invocation, operation, described, **waiting)


def send_through_server(
    invocation: Invocation, operation: Operation, described: Mapping[str, Any]
) -> int:
    """The same request through the context's fleet-server: sent once per car by the
    server, audited there, answered with each car's reply."""
    args = invocation.args
    server = invocation.server
    assert server is not None
    unsupported = [
        flag
        for flag, given in (
            ("--wait", getattr(args, "wait", None)),
            ("--expiry", getattr(args, "expiry", None) is not None),
        )
        if given
    ]
    if operation is Operation.PLAN_DELETE:
        unsupported.append("a plan of a delete")
    if unsupported:
        print(
            f"fleetctl: error: {', '.join(unsupported)} is not available through fleet-server; "
            "use a context without a server (the broker)",
            file=sys.stderr,
        )
        return USAGE
    vins = server_runs.choose(server, invocation.vins, invocation.selector)
    if not vins:
        print(f"fleetctl: no car matches {invocation.selector!r}", file=sys.stderr)
        return FAILED
    command = "plan" if operation.planned is not None else args.command
    payload = invocation.payload
    payload_for: Callable[[str], bytes] = lambda vin: payload  # noqa: E731
    if getattr(args, "sign_key", None):
        signer = signing.Signer(Path(args.sign_key), operation, args.sign_valid_for)
        payload_for = signer.for_car(payload)
    manifest = operation.value.startswith("manifest/") and operation is not Operation.ROLLBACK
    batch = server_runs.Batch(
        operation=operation.value,
        payload_for=payload_for,
        content_type="application/yaml" if manifest else "application/json",
        batch_size=args.batch_size,
        max_failures=args.max_failures,
    )
    result = server_runs.run(server, command, vins, batch)
    if command == "plan":
        plans.judge(result)
    result.extra = {"server": server.url, **described}
    print(output.render_run(result, args.output), flush=True)
    return OK if result.ok else FAILED


def send(
    invocation: Invocation,
    operation: Operation,
    described: Mapping[str, Any],
    *,
    wait_running: bool = False,
    wait_timeout: float = waves.Plan.wait_timeout,
    settle: float = waves.Plan.settle,
    command: str | None = None,
    judge: Callable[[RunResult], None] | None = None,
) -> int:
    """Sends, prints the results (``described`` is added to them) and returns the exit code."""
    args = invocation.args
    # apply --dry-run and delete --dry-run are plans, and shown as plans.
    if command is None:
        command = "plan" if operation.planned is not None else args.command
    signer = None
    # state and history have no --sign-key.
    if getattr(args, "sign_key", None):
        options.warn_about_validity(args.sign_valid_for)
        signer = signing.Signer(Path(args.sign_key), operation, args.sign_valid_for)
    plan = waves.Plan(
        operation=operation,
        payload=invocation.payload,
        timeout=args.timeout,
        batch_size=args.batch_size,
        max_failures=args.max_failures,
        wait_running=wait_running,
        wait_timeout=wait_timeout,
        settle=settle,
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
        result = waves.run(engine, command, invocation.vins, plan, progress)
    finally:
        progress.close()
        engine.close()
    if command == "plan":
        plans.judge(result)
    if judge is not None:
        judge(result)
    result.extra = {
        "run_id": engine.run_id,
        "mqtt_protocol": engine.connection.protocol,
        **described,
    }
    print(output.render_run(result, args.output), flush=True)
    return OK if result.ok else FAILED
