"""A quiet car stays quiet: the Hellos that survive a server restart are not warnings.

The connector says Hello before a request that follows a second of silence (a server
restart gives it a new control-interface instance without telling it, see
docs/connector.md). On a car where nothing happens, that is every agent-load read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from ankaios_emulator import Emulator
from fleet_connector import Connector

HELLO_AGAIN = "received yet another Hello"


class Hellos(logging.Handler):
    """Counts the emulator's "yet another Hello" records, by level."""

    def __init__(self, wanted: int) -> None:
        super().__init__(logging.DEBUG)
        self.levels: list[int] = []
        self.wanted = wanted
        self.enough = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if HELLO_AGAIN in record.getMessage():
            self.levels.append(record.levelno)
            if len(self.levels) >= self.wanted:
                self.enough.set()


@pytest.fixture
def hellos() -> Iterator[Hellos]:
    handler = Hellos(wanted=2)
    logger = logging.getLogger("ankaios_emulator")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_idle_hellos_are_sent_and_logged_at_debug(
    emulator: Emulator, start_connector: Callable[..., Connector], hellos: Hellos
) -> None:
    # Agent loads every 1.2 s: each read follows more than a second of silence.
    start_connector(emulator.control_interface, agent_interval=1.2)
    assert hellos.enough.wait(15), "the connector stopped saying Hello after a silence"
    assert set(hellos.levels) == {logging.DEBUG}
