"""Sends requests to one car over MQTT and returns the replies, as an operator would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fleet_connector.mqtt.topics import Operation, Topics
from testkit.probe import Message, MqttProbe

MANIFESTS = Path(__file__).parents[2] / "manifests"


class Requester:
    """Sends requests to one car over MQTT and returns the reply it gets."""

    def __init__(self, probe: MqttProbe, vin: str) -> None:
        self.probe = probe
        self.topics = Topics(vin)
        self.probe.subscribe(f"{self.topics.base}/+/resp/#")
        self.probe.subscribe(f"{self.topics.base}/+/+/resp/#")

    def send(
        self, operation: Operation, payload: bytes | str, request_id: str | None = None
    ) -> Message:
        self.probe.publish(self.topics.request(operation, request_id), payload)
        return self.probe.expect(self.topics.response(operation, request_id))

    def wait_online(self, timeout: float = 15.0) -> dict[str, Any]:
        """Waits for the car's retained presence to say online with Ankaios connected.

        The connector publishes presence after subscribing, so a request sent after this
        reaches it even on its very first start.
        """
        self.probe.subscribe(self.topics.status)
        while True:
            status: dict[str, Any] = json.loads(
                self.probe.expect(self.topics.status, timeout).payload
            )
            if status["status"] == "online" and status["ankaios"] == "connected":
                return status

    def wait_status(self, wanted: str, timeout: float = 15.0) -> dict[str, Any]:
        """The next presence message whose status is ``wanted``."""
        while True:
            status: dict[str, Any] = json.loads(
                self.probe.expect(self.topics.status, timeout).payload
            )
            if status["status"] == wanted:
                return status

    def call(
        self, operation: Operation, payload: bytes | str, request_id: str | None = None
    ) -> Any:
        return json.loads(self.send(operation, payload, request_id).payload)

    def apply(self, manifest: str | bytes) -> Any:
        return self.call(Operation.APPLY, manifest)

    def delete(self, manifest: str | bytes) -> Any:
        return self.call(Operation.DELETE, manifest)

    def state(self, masks: list[str]) -> Any:
        return self.call(Operation.STATE, json.dumps(masks))
