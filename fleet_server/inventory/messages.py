"""The cars' own topics, parsed as hostile input.

A car (a defect, or a compromised one) may publish anything on its topics: every field is
bounded, malformed JSON is dropped, and nothing here raises on a payload.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from fleet_connector.mqtt.topics import FORBIDDEN_TOPIC_CHARS
from fleet_server.selectors import LabelError, check_key, check_value

MAX_VIN = 64
MAX_NAME = 256
MAX_FIELD = 128
MAX_INFO = 1024
MAX_PAYLOAD = 64 * 1024
MAX_LABELS = 64
MAX_DOCUMENT = 16 * 1024
"""Drift reports and outcomes kept as JSON are cut off (dropped) above this size."""

PREFIX = "vehicle/"


@dataclass(frozen=True, slots=True)
class Presence:
    online: bool
    connector_version: str | None
    labels: dict[str, str]
    detail: str
    """The rest of the presence message worth showing (ankaios, worker, ...), as JSON."""


@dataclass(frozen=True, slots=True)
class WorkloadState:
    agent: str
    state: str
    substate: str
    info: str
    instance_id: str
    since: str


@dataclass(frozen=True, slots=True)
class AgentState:
    connected: bool
    cpu_usage: float | None
    free_memory: int | None
    since: str


@dataclass(frozen=True, slots=True)
class Message:
    """One understood message: ``kind`` and the VIN, name and parsed value it carries."""

    kind: str
    """status, workload, agent, drift or outcome"""
    vin: str
    name: str = ""
    value: Any = None
    """None for a cleared topic (workload gone, drift cleared)."""


def valid_vin(vin: str) -> bool:
    return 0 < len(vin) <= MAX_VIN and not FORBIDDEN_TOPIC_CHARS.intersection(vin)


def parse(topic: str, payload: bytes) -> Message | None:
    """The message on ``topic``, or None when it is not one of ours or is malformed."""
    if not topic.startswith(PREFIX) or len(payload) > MAX_PAYLOAD:
        return None
    parts = topic[len(PREFIX) :].split("/")
    vin = parts[0]
    if not valid_vin(vin) or len(parts) < 2:
        return None
    rest = parts[1:]
    try:
        if rest == ["status"]:
            presence = _presence(payload)
            return None if presence is None else Message("status", vin, value=presence)
        if len(rest) == 2 and rest[0] in ("workloads", "agents"):
            name = rest[1]
            if not name or len(name) > MAX_NAME:
                return None
            if not payload:
                return Message(rest[0][:-1], vin, name, None)
            value = _workload(payload) if rest[0] == "workloads" else _agent(payload)
            return None if value is None else Message(rest[0][:-1], vin, name, value)
        if rest == ["drift"]:
            if not payload:
                return Message("drift", vin, value=None)
            document = _document(payload)
            return None if document is None else Message("drift", vin, value=document)
        if len(rest) == 4 and rest[0] == "manifest" and rest[2] == "resp":
            return _outcome(vin, rest[1], rest[3], payload)
    except (ValueError, TypeError, RecursionError, UnicodeDecodeError):
        return None
    return None


def _json_object(payload: bytes) -> dict[str, Any] | None:
    data = json.loads(payload)
    return data if isinstance(data, dict) else None


def _text(value: Any, limit: int = MAX_FIELD) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _presence(payload: bytes) -> Presence | None:
    data = _json_object(payload)
    if data is None or data.get("status") not in ("online", "offline"):
        return None
    version = data.get("connector_version")
    detail = {
        key: data[key]
        for key in ("ankaios", "worker", "sdk_version", "started_at", "since")
        if isinstance(data.get(key), str)
    }
    for key in ("worker_restarts", "session_takeovers"):
        if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
            detail[key] = data[key]
    return Presence(
        online=data["status"] == "online",
        connector_version=_text(version, 64) or None,
        labels=reported_labels(data.get("labels")),
        detail=json.dumps({k: _text(v) if isinstance(v, str) else v for k, v in detail.items()}),
    )


def reported_labels(value: Any) -> dict[str, str]:
    """The car's own labels: a mapping, or the connector option's ``k=v,k=v`` text.

    Labels that Kubernetes would refuse are left out, so a car cannot plant a key or value
    that an operator could not have set (markup, selectors' operators).
    """
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, str):
        pairs = [(k, v) for k, _, v in (item.partition("=") for item in value.split(",") if item)]
    else:
        return {}
    labels: dict[str, str] = {}
    for key, val in pairs[: MAX_LABELS * 2]:
        if not (isinstance(key, str) and isinstance(val, str)):
            continue
        try:
            labels[check_key(key)] = check_value(key, val)
        except LabelError:
            continue
        if len(labels) >= MAX_LABELS:
            break
    return labels


def _workload(payload: bytes) -> WorkloadState | None:
    data = _json_object(payload)
    if data is None or not isinstance(data.get("state"), str):
        return None
    return WorkloadState(
        agent=_text(data.get("agent")),
        state=_text(data["state"], 32),
        substate=_text(data.get("substate"), 64),
        info=_text(data.get("info"), MAX_INFO),
        instance_id=_text(data.get("instance_id")),
        since=_text(data.get("since"), 40),
    )


def _agent(payload: bytes) -> AgentState | None:
    data = _json_object(payload)
    if data is None or not isinstance(data.get("connected"), bool):
        return None
    cpu = data.get("cpu_usage")
    memory = data.get("free_memory")
    return AgentState(
        connected=data["connected"],
        cpu_usage=float(cpu)
        if isinstance(cpu, int | float) and not isinstance(cpu, bool) and math.isfinite(cpu)
        else None,
        free_memory=memory
        if isinstance(memory, int) and not isinstance(memory, bool) and 0 <= memory < 2**63
        else None,
        since=_text(data.get("since"), 40),
    )


def _document(payload: bytes) -> str | None:
    """A JSON object kept as compact text, if small enough."""
    data = _json_object(payload)
    if data is None:
        return None
    text = json.dumps(data, separators=(",", ":"))
    return text if len(text) <= MAX_DOCUMENT else None


def _outcome(vin: str, operation: str, request_id: str, payload: bytes) -> Message | None:
    """A followed outcome (not the plain reply before it) on an apply or delete reply topic."""
    if operation not in ("apply", "delete") or not request_id or len(request_id) > 1024:
        return None
    data = _json_object(payload)
    if data is None or not isinstance(data.get("outcome"), str):
        return None
    workloads = data.get("workloads")
    summary = {
        "outcome": _text(data["outcome"], 32),
        "operation": operation,
        "request_id": request_id[:MAX_FIELD],
        "workloads": {
            _text(name, MAX_NAME): _text(entry.get("outcome"), 32)
            for name, entry in list(workloads.items())[:256]
            if isinstance(name, str) and isinstance(entry, dict)
        }
        if isinstance(workloads, dict)
        else {},
    }
    return Message("outcome", vin, value=json.dumps(summary, separators=(",", ":")))
