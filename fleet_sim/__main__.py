"""``fleet-sim``: runs the simulated fleet until SIGTERM or SIGINT.

Prints one JSON line per event on stdout: ``ready`` (every car's presence and live states
acknowledged by the broker, with the time it took and the process's memory), ``stats``
(every ``--stats-interval`` seconds), ``connection_lost`` and ``stopped``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from fleet_sim.fleet import Fleet, raise_file_limit
from fleet_sim.options import Options, parse


async def run(options: Options) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(options, loop, sys.stdout)
    await fleet.run(stop)


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # Per connection: its socket; a few dozen more for the interpreter and the loop.
    connections = -(-options.count // options.cars_per_connection)
    raise_file_limit(connections + 64)
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
