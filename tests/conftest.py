"""Fixtures shared by every test: a real mosquitto on a free loopback port and an MQTT probe.

Each test session starts its own brokers; nothing here ever touches port 1883 or a broker
it did not start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from testkit import Broker, MqttProbe
from testkit.proxy import Mqtt311OnlyProxy

# `make test-quick` (pytest -m unit): modules that start no broker, car, browser or process,
# so that together they run in seconds. A module that starts one stays out.
UNIT_MODULES = frozenset(
    {
        "connector/test_live_model.py",
        "connector/test_manifest.py",
        "connector/test_store.py",
        "connector/test_versions.py",
        "dashboard/test_model.py",
        "emulator/test_authorizer.py",
        "emulator/test_state.py",
        "emulator/test_templating.py",
        "emulator/test_tree.py",
        "fleetctl/test_units.py",
        "fleetctl/test_usage.py",
        "sender/test_config_and_wave.py",
        "test_docs.py",
        "test_readme.py",
    }
)
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(TESTS).as_posix() in UNIT_MODULES:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One mosquitto for the whole session; tests keep apart by VIN."""
    b = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Factory for brokers of a test's own (to kill, restart or configure)."""
    made: list[Broker] = []

    def make(
        extra_config: str = "", port: int | None = None, config_text: str | None = None
    ) -> Broker:
        b = Broker(
            tmp_path / f"broker{len(made)}", extra_config=extra_config, config_text=config_text
        )
        if port is not None:
            b.port = port
        made.append(b)
        return b.start()

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def probe(broker: Broker) -> Iterator[MqttProbe]:
    p = MqttProbe(broker)
    yield p
    p.close()


@pytest.fixture
def vin() -> str:
    """A VIN of the test's own, so tests sharing the session broker never see each other."""
    return f"TEST{uuid.uuid4().hex[:10].upper()}"


@pytest.fixture
def proxy_311(broker: Broker) -> Iterator[Mqtt311OnlyProxy]:
    """The session's broker as a broker that refuses MQTT 5 (as NATS does)."""
    proxy = Mqtt311OnlyProxy(broker)
    yield proxy
    proxy.close()
