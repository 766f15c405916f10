"""``fleetctl dashboard``: the fleet in a browser, live (see docs/fleetctl.md).

The server side lives in :mod:`fleetctl.dashboard.server`; it is imported only when the
dashboard runs, so the other commands do not pay for the web server's import. The command's
flags are in :mod:`fleetctl.commands.dashboard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sys
from collections.abc import Sequence

from fleet_connector.mqtt.broker import BrokerSettings


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(
    settings: BrokerSettings, vins: Sequence[str], host: str, port: int, connect_timeout: float
) -> int:
    """Serves until SIGINT or SIGTERM (exit 0); raises BrokerError when the broker cannot be
    used; 1 when the address cannot be served on."""
    # Imported here: the web server's import is paid only by the dashboard, and it is an
    # extra (aiohttp) that the car's images and the other commands do without.
    try:
        from fleetctl.dashboard.feed import Feed  # noqa: PLC0415
        from fleetctl.dashboard.server import serve  # noqa: PLC0415
    except ImportError as e:
        print(
            f"fleetctl: the dashboard needs its extra ({e.name or e}): "
            "pip install 'ankaios-fleet-connector[dashboard]'",
            file=sys.stderr,
        )
        return 1

    if not is_loopback(host):
        print(
            f"fleetctl: warning: the dashboard listens on {host}: anyone who can reach it "
            "sees the fleet and can read workload logs; it has no login",
            file=sys.stderr,
        )

    def ready(url: str) -> None:
        print(f"fleetctl: dashboard on {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, NotImplementedError):  # not the main thread
                loop.add_signal_handler(signum, stop.set)
        await serve(
            Feed(settings, vins),
            host,
            port,
            connect_timeout=connect_timeout,
            on_ready=ready,
            stop=stop,
        )

    try:
        asyncio.run(main())
    except OSError as e:
        print(f"fleetctl: cannot serve on {host} port {port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0
