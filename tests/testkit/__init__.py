"""Test support shared by the suites: brokers, MQTT probes, processes."""

from testkit.broker import Broker, free_port, wait_for_port
from testkit.probe import Message, MqttProbe

__all__ = ["Broker", "Message", "MqttProbe", "free_port", "wait_for_port"]
