"""Many cars in one process: an in-process Emulator and a Connector per car.

``python -m bench.fleet_host --first 1 --count 50 --port P [--protocol 3.1.1] --workdir D``
starts cars with VINs ``first .. first+count-1``, prints ``ready <seconds>`` once every car's
control interface is connected and its subscriptions confirmed, and runs until SIGTERM.
One process per core instead of two processes per car: a car here costs its threads and
objects (~1 MiB), not a Python interpreter (~30 MiB each for connector and emulator).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ankaios_emulator import Emulator
from fleet_connector.config import Config
from fleet_connector.connector import Connector
from fleet_connector.mqtt.broker import BrokerSettings


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench.fleet_host")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--protocol", default="5")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    started = time.monotonic()
    settings = BrokerSettings(host="127.0.0.1", port=args.port, protocol=args.protocol)
    emulators: list[Emulator] = []
    connectors: list[Connector] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    try:
        deadline = started + args.ready_timeout
        for vin in range(args.first, args.first + args.count):
            if time.monotonic() > deadline or stop.is_set():
                raise RuntimeError(f"only {len(connectors)} cars started in time")
            emulator = Emulator(
                control_interface=args.workdir / f"ci-{vin}", pace_frames=False
            ).start()
            emulators.append(emulator)
            connector = Connector(
                Config(
                    vin=str(vin),
                    broker=settings,
                    control_interface=emulator.control_interface,
                    log_level="WARNING",
                )
            )
            connector.start()
            connectors.append(connector)
        for connector in connectors:
            remaining = max(0.1, deadline - time.monotonic())
            if not connector.control_interface.wait_connected(remaining):
                raise RuntimeError(f"car {connector.config.vin}: control interface not connected")
            if not connector.mqtt.wait_subscribed(max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"car {connector.config.vin}: not subscribed")
        print(f"ready {time.monotonic() - started:.3f}", flush=True)
        stop.wait()
    except BaseException:
        for emulator in emulators:
            emulator.stop()
        raise
    # Stopping car by car takes about a second each (goodbye, thread joins); the benchmark
    # is done with them, the FIFOs live in its temporary directory, and the broker goes too.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
