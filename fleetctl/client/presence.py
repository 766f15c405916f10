"""Cars' presence as their connectors publish it, retained, on ``vehicle/<VIN>/status``."""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Topics
from fleetctl.client.car_data import json_object, plain_text
from fleetctl.client.connection import Connection

# The VIN segment of "vehicle/<VIN>/status".
_ANY_CAR = Topics("+")


@dataclass(frozen=True)
class Presence:
    """One car's last presence message; fields the connector did not send are empty."""

    vin: str
    status: str
    ankaios: str = ""
    connector_version: str = ""
    sdk_version: str = ""
    started_at: str = ""
    since: str = ""

    @property
    def ready(self) -> bool:
        """Online with Ankaios connected: requests will be carried out now."""
        return self.status == "online" and self.ankaios == "connected"

    @classmethod
    def parse(cls, vin: str, payload: bytes) -> Presence | None:
        """None for an empty payload (a cleared retained message: the car was removed)."""
        if not payload:
            return None
        data = json_object(payload)
        if data is None:
            return cls(vin=vin, status="invalid")

        def text(key: str) -> str:
            return plain_text(data.get(key))

        return cls(
            vin=vin,
            status=text("status") or "unknown",
            ankaios=text("ankaios"),
            connector_version=text("connector_version"),
            sdk_version=text("sdk_version"),
            started_at=text("started_at"),
            since=text("since"),
        )

    def describe(self) -> str:
        """For a timed-out car's message: why it may not have answered."""
        if self.status == "offline":
            return f"the car is offline since {self.since or 'an unknown time'}"
        if self.status == "online" and self.ankaios != "connected":
            return "the car is online but its connector has no connection to Ankaios"
        return f"the car says it is {self.status}"

    def to_dict(self) -> dict[str, str]:
        return {
            "vin": self.vin,
            "status": self.status,
            "ankaios": self.ankaios,
            "connector_version": self.connector_version,
            "sdk_version": self.sdk_version,
            "started_at": self.started_at,
            "since": self.since,
        }


def vin_of_status_topic(topic: str) -> str | None:
    parts = topic.split("/")
    prefix = _ANY_CAR.base.split("/")[0]
    if len(parts) == 3 and parts[0] == prefix and parts[2] == "status":
        return parts[1]
    return None


def collect(
    settings: BrokerSettings,
    *,
    vins: Sequence[str] = (),
    listen: float,
    timeout: float,
) -> dict[str, Presence]:
    """Presence of the cars on the broker (or of ``vins``), from retained status messages.

    The broker sends retained messages right after the SUBACK; we take the set as complete
    after ``listen`` seconds without a new one (or once every named car is in), and stop
    after ``timeout`` seconds in any case, since live changes could keep it from going quiet.
    """
    arrived: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
    connection = Connection(
        settings,
        lambda topic, payload, retained: arrived.put((topic, payload)),
    )
    filters = [Topics(vin).status for vin in vins] if vins else [_ANY_CAR.status]
    found: dict[str, Presence] = {}
    connection.open(timeout)
    try:
        connection.subscribe(filters, timeout)
        deadline = time.monotonic() + timeout
        while not (vins and set(vins) <= set(found)):
            wait = min(listen, deadline - time.monotonic())
            if wait <= 0:
                break
            try:
                topic, payload = arrived.get(timeout=wait)
            except queue.Empty:
                break
            vin = vin_of_status_topic(topic)
            if vin is None:
                continue
            presence = Presence.parse(vin, payload)
            if presence is None:
                found.pop(vin, None)
            else:
                found[vin] = presence
    finally:
        connection.close()
    return found
