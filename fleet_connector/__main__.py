"""``fleet-connector``: run the connector until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from fleet_connector import config as configuration
from fleet_connector.connector import Connector
from fleet_connector.options import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = configuration.load(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as e:
        print(f"fleet-connector: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    connector = Connector(config)
    connector.start()
    stop.wait()
    connector.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
