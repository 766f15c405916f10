"""``fleetctl watch``: every message under the cars' topics, one line each, until stopped."""

from __future__ import annotations

import queue

from fleetctl import output
from fleetctl.client import live
from fleetctl.client.connection import BrokerError, Connection
from fleetctl.commands import options
from fleetctl.commands.command import (
    CONNECT_TIMEOUT,
    OK,
    Command,
    Invocation,
    Stopped,
    define,
    stop_on_sigterm,
)
from fleetctl.commands.options import Subcommands


def register(subcommands: Subcommands) -> None:
    watch = subcommands.add_parser(
        "watch",
        help="print replies, presence and sensor values live",
        description="Print every message under vehicle/<VIN>/ as 'topic payload' lines until "
        "Ctrl-C or SIGTERM (exit 0).",
    )
    options.add_cars(watch)
    options.add_broker(watch)
    watch.add_argument("--count", type=options.count, metavar="N", help="stop after N messages")
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
    define(watch, Command(_run))


def _run(invocation: Invocation) -> int:
    arrived: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    connection = Connection(
        invocation.settings,
        lambda topic, payload, retained: arrived.put((topic, payload)),
    )
    args = invocation.args
    filters = live.watch_filters(invocation.vins, states_only=args.workloads)
    limit = args.count
    with stop_on_sigterm():
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
        except (KeyboardInterrupt, Stopped):
            pass
        finally:
            connection.close()
    return OK
