"""Test support shared by the suites: brokers, MQTT probes, processes."""

from testkit.broker import Broker, free_port, wait_for_port
from testkit.probe import Message, MqttProbe
from testkit.requester import MANIFESTS, Requester

__all__ = [
    "MANIFESTS",
    "Broker",
    "Message",
    "MqttProbe",
    "Requester",
    "free_port",
    "wait_for_port",
]
