"""paho's MQTT 5 properties with shared tables (fleet_connector/mqtt/fast_properties.py)
behave as paho's own: same bytes on the wire, same attributes read, same refusals."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from fleet_connector.mqtt import fast_properties

SETTINGS: list[tuple[int, list[tuple[str, Any]]]] = [
    (
        PacketTypes.PUBLISH,
        [
            ("CorrelationData", b"\x00\x01corr"),
            ("ResponseTopic", "vehicle/V1/state/resp/x"),
            ("MessageExpiryInterval", 30),
            ("UserProperty", ("traceparent", "00-abc-def-01")),
            ("UserProperty", [("tracestate", "k=v"), ("follow", "running")]),
            ("PayloadFormatIndicator", 1),
        ],
    ),
    (PacketTypes.PUBACK, [("ReasonString", "no subscribers"), ("UserProperty", ("a", "b"))]),
    (PacketTypes.CONNECT, [("SessionExpiryInterval", 3600), ("ReceiveMaximum", 20)]),
    (PacketTypes.CONNACK, [("AssignedClientIdentifier", "c1"), ("TopicAliasMaximum", 10)]),
    (PacketTypes.SUBSCRIBE, [("SubscriptionIdentifier", 7)]),
    (PacketTypes.WILLMESSAGE, [("WillDelayInterval", 5)]),
    (PacketTypes.DISCONNECT, []),
]


def original(packet_type: int) -> Any:
    made = object.__new__(Properties)
    fast_properties.ORIGINAL_INIT(made, packet_type)
    return made


def unpacked(made: Any, buffer: bytes, *, fast: bool) -> Any:
    if not fast:
        object.__setattr__(made, "clear", fast_properties.ORIGINAL_CLEAR.__get__(made))
    made.unpack(buffer)
    return made


@pytest.mark.parametrize(("packet_type", "settings"), SETTINGS)
def test_properties_pack_unpack_and_print_as_pahos_own(
    packet_type: int, settings: list[tuple[str, Any]]
) -> None:
    assert fast_properties.install()
    fast, slow = Properties(packet_type), original(packet_type)
    assert fast.isEmpty() and slow.isEmpty()
    for name, value in settings:
        setattr(fast, name, value)
        setattr(slow, name, value)
    assert fast.pack() == slow.pack()
    assert str(fast) == str(slow)
    assert fast.json() == slow.json()
    assert fast.isEmpty() == slow.isEmpty() == (not settings)
    read_fast = unpacked(Properties(packet_type), fast.pack(), fast=True)
    read_slow = unpacked(original(packet_type), slow.pack(), fast=False)
    assert read_fast.json() == read_slow.json() == slow.json()
    # An object read twice holds only what the second read brought (unpack clears first).
    again = unpacked(read_fast, Properties(packet_type).pack(), fast=True)
    assert again.isEmpty()
    # Instances share the tables but not the values set on them.
    assert Properties(packet_type).isEmpty()


def test_refusals_are_pahos() -> None:
    assert fast_properties.install()
    for made in (Properties(PacketTypes.PUBACK), original(PacketTypes.PUBACK)):
        with pytest.raises(MQTTException, match="does not apply"):
            made.CorrelationData = b"x"
        with pytest.raises(MQTTException, match="must be one of"):
            made.NoSuchProperty = 1
    for made in (Properties(PacketTypes.CONNECT), original(PacketTypes.CONNECT)):
        with pytest.raises(MQTTException, match="1-65535"):
            made.ReceiveMaximum = 0


def test_install_is_once_and_keeps_the_tables_shared() -> None:
    assert fast_properties.install()
    assert fast_properties.install()
    first, second = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBACK)
    assert first.names is second.names and first.properties is second.properties
