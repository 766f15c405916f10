"""Helpers for the live-state tests: manifests, and reading retained workload topics."""

from __future__ import annotations

import json
import uuid
from typing import Any

from testkit import MqttProbe

# controlInterfaceAccess that also lets the connector read every workload's logs.
ALL_LOGS: dict[str, Any] = {
    "allowRules": [
        {"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]},
        {"type": "LogRule", "workloadNames": ["*"]},
    ]
}


def manifest(*names: str, image: str = "sim:1", agent: str = "agent_A") -> str:
    """A v0.1 manifest with one podman workload per name."""
    lines = ["apiVersion: v0.1", "workloads:"]
    for name in names:
        lines += [
            f"  {name}:",
            "    runtime: podman",
            f"    agent: {agent}",
            "    restartPolicy: NEVER",
            "    runtimeConfig: |",
            f"      image: {image}",
        ]
    return "\n".join(lines) + "\n"


def retained(probe: MqttProbe, topic_filter: str) -> dict[str, dict[str, Any]]:
    """Every retained message the broker holds under ``topic_filter``, as JSON by topic.

    A retained marker on a topic of its own, subscribed after the filter, arrives after
    the filter's retained messages: the broker sends them in subscription order.
    """
    base = topic_filter.split("/#", maxsplit=1)[0].rsplit("/", 1)[0]
    marker = f"{base}/test-marker/{uuid.uuid4().hex}"
    probe.client.publish(marker, b"end", qos=1, retain=True).wait_for_publish(5)
    probe.subscribe(topic_filter)
    probe.subscribe(marker)
    found: dict[str, dict[str, Any]] = {}
    while True:
        message = probe.expect(timeout=10)
        if message.topic == marker and message.retain:
            break
        if message.retain and message.payload:
            found[message.topic] = json.loads(message.payload)
    probe.client.publish(marker, b"", qos=1, retain=True).wait_for_publish(5)
    probe.client.unsubscribe(marker)
    return found


def states_until(
    probe: MqttProbe, topic: str, final: str, timeout: float = 15.0
) -> list[dict[str, Any] | None]:
    """Payloads on ``topic`` (None for a cleared topic) up to the first in state ``final``."""
    seen: list[dict[str, Any] | None] = []
    while True:
        message = probe.expect(topic, timeout=timeout)
        payload = json.loads(message.payload) if message.payload else None
        seen.append(payload)
        if (payload is None and final == "") or (payload and payload["state"] == final):
            return seen


def until_all(
    probe: MqttProbe, topics: set[str], final: str, timeout: float = 20.0
) -> dict[str, dict[str, Any] | None]:
    """Reads messages until the latest one on each of ``topics`` is in state ``final``."""
    latest: dict[str, dict[str, Any] | None] = {}

    def done(topic: str) -> bool:
        payload = latest.get(topic, {"state": None})
        return payload is None if final == "" else payload is not None and payload["state"] == final

    while not all(done(t) for t in topics):
        message = probe.expect(timeout=timeout)
        if message.topic in topics:
            latest[message.topic] = json.loads(message.payload) if message.payload else None
    return latest
