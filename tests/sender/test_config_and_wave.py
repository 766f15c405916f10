"""The sender's pure parts, in process: the speed wave and the configuration rules."""

from __future__ import annotations

import pytest

from fleet_connector.mqtt.broker import BrokerSettings
from vehicle_data_sender.cli import load_config
from vehicle_data_sender.config import Config, ConfigError
from vehicle_data_sender.wave import TriangleWave


def test_wave_is_the_reference_triangle() -> None:
    wave = TriangleWave()
    values = [wave.advance() for _ in range(402)]
    expected_cycle = [*range(1, 101), *range(99, -1, -1)]  # 1..100, 99..0
    assert values == expected_cycle * 2 + [1, 2]


def test_peek_does_not_advance() -> None:
    wave = TriangleWave()
    assert wave.peek() == wave.peek() == 1
    assert wave.advance() == 1
    assert wave.peek() == 2


def test_defaults_match_the_tutorial() -> None:
    config = load_config([], {"TOPIC": "vehicle/1/sensors/speed"})
    assert config == Config(
        topic="vehicle/1/sensors/speed",
        broker=BrokerSettings(host="localhost", port=1883),
        interval=1.0,
    )


def test_flag_beats_environment_beats_default() -> None:
    env = {"TOPIC": "a", "INTERVAL": "10", "MQTT_BROKER_PORT": "1884"}
    config = load_config(["--interval", "0.25", "--broker-addr", "broker.example"], env)
    assert (config.topic, config.interval, config.broker.port, config.broker.host) == (
        "a",
        0.25,
        1884,
        "broker.example",
    )


@pytest.mark.parametrize("text", ["1", "10", "0.5", "2.5e-1", " 3 "])
def test_interval_accepts_decimal_seconds(text: str) -> None:
    assert load_config([], {"TOPIC": "t", "INTERVAL": text}).interval == float(text)


@pytest.mark.parametrize(
    ("env", "blamed"),
    [
        ({"INTERVAL": "0"}, "INTERVAL"),
        ({"INTERVAL": "-1"}, "INTERVAL"),
        ({"INTERVAL": "abc"}, "INTERVAL"),
        ({"INTERVAL": "1e9"}, "INTERVAL"),
        ({"MQTT_BROKER_PORT": "abc"}, "MQTT_BROKER_PORT"),
        ({"MQTT_BROKER_PORT": "70000"}, "MQTT_BROKER_PORT"),
        ({"MQTT_BROKER_PORT": "-1"}, "MQTT_BROKER_PORT"),
        ({"MQTT_BROKER_ADDR": "a b"}, "MQTT_BROKER_ADDR"),
        ({"TOPIC": "x/#"}, "TOPIC"),
        ({"TOPIC": "x\0y"}, "TOPIC"),
    ],
)
def test_bad_values_name_their_source(env: dict[str, str], blamed: str) -> None:
    with pytest.raises(ConfigError, match=blamed):
        load_config([], {"TOPIC": "t", **env})


def test_config_validates_on_construction() -> None:
    with pytest.raises(ConfigError):
        Config(topic="t", interval=0)
    with pytest.raises(ConfigError):
        Config(topic="", interval=1)
    with pytest.raises(ConfigError):
        Config(topic="t", reconnect_min_delay=5, reconnect_max_delay=2)


def test_describe_has_every_setting_on_one_line() -> None:
    text = Config(topic="vehicle/1/sensors/speed", interval=0.5).describe()
    assert "\n" not in text
    for part in ("broker=mqtt://localhost:1883", "topic=vehicle/1/sensors/speed", "interval=0.5s"):
        assert part in text
