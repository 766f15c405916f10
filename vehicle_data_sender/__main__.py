"""Entry point: configuration, logging, signals and exit status around a `Sender`.

Exit status: 0 after SIGTERM or SIGINT, 2 for bad configuration (one line on stderr),
1 if the publisher stopped on its own (an unexpected error, logged with its traceback).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from vehicle_data_sender.cli import PROG, load_config
from vehicle_data_sender.config import ConfigError
from vehicle_data_sender.sender import Sender

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# How often the main thread looks at the publisher while it waits for a signal.
_WATCH_PERIOD = 0.5

logger = logging.getLogger("vehicle_data_sender")


def _wait_for_stop_signal(sender: Sender) -> signal.Signals | None:
    """Blocks until SIGTERM/SIGINT arrives (returns it) or the publisher ends (None).

    The signals are blocked in every thread and taken synchronously here, so no handler
    runs at an arbitrary point of another operation (a handler setting an Event can
    deadlock if it interrupts the same Event's wait).
    """
    while sender.is_running():
        if hasattr(signal, "sigtimedwait"):
            info = signal.sigtimedwait(_STOP_SIGNALS, _WATCH_PERIOD)
            if info is not None:
                return signal.Signals(info.si_signo)
        else:  # pragma: no cover - platforms without sigtimedwait (macOS)
            return signal.Signals(signal.sigwait(_STOP_SIGNALS))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        message = " ".join(str(exc).split())  # exactly one line, whatever the input held
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_CONFIG

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s " + PROG + ": %(message)s",
    )
    # Blocked before any thread starts, so every thread inherits the mask and only
    # _wait_for_stop_signal ever takes these signals.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)

    sender = Sender(config)
    logger.info("starting: %s", config.describe())
    sender.start()
    try:
        received = _wait_for_stop_signal(sender)
    finally:
        stopped_cleanly = sender.stop()
    if received is None:
        logger.error("publisher stopped unexpectedly: %r", sender.failure)
        return EXIT_FAILURE
    logger.info(
        "stopped on %s after %d values%s",
        received.name,
        sender.published,
        "" if stopped_cleanly else " (network thread still busy; abandoned)",
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
