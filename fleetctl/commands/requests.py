"""What apply, delete, plan, state, rollback and history share: one request to every car
named, sent in waves, and the results printed (see :mod:`fleetctl.client.waves`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleet_connector.mqtt.topics import Operation
from fleetctl import output
from fleetctl.client import signing, waves
from fleetctl.client.engine import Engine
from fleetctl.commands.command import FAILED, OK, Invocation
from fleetctl.output import plans
from fleetctl.output.progress import Progress


def send(
    invocation: Invocation,
    operation: Operation,
    described: Mapping[str, Any],
    *,
    wait_running: bool = False,
    wait_timeout: float = waves.Plan.wait_timeout,
    settle: float = waves.Plan.settle,
) -> int:
    """Sends, prints the results (``described`` is added to them) and returns the exit code."""
    args = invocation.args
    # apply --dry-run and delete --dry-run are plans, and shown as plans.
    command = "plan" if operation.planned is not None else args.command
    signer = None
    # state and history have no --sign-key.
    if getattr(args, "sign_key", None):
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
    result.extra = {
        "run_id": engine.run_id,
        "mqtt_protocol": engine.connection.protocol,
        **described,
    }
    print(output.render_run(result, args.output), flush=True)
    return OK if result.ok else FAILED
