"""Every MQTT topic the connector uses, built in one place.

Layout, with ``<base>`` = ``vehicle/<VIN>``::

    <base>/manifest/apply/req[/<request-id>]   ->  <base>/manifest/apply/resp[/<request-id>]
    <base>/manifest/delete/req[/<request-id>]  ->  <base>/manifest/delete/resp[/<request-id>]
    <base>/manifest/plan/req[/<request-id>]    ->  <base>/manifest/plan/resp[/<request-id>]
    <base>/manifest/plan-delete/req[/<id>]     ->  <base>/manifest/plan-delete/resp[/<id>]
    <base>/state/req[/<request-id>]            ->  <base>/state/resp[/<request-id>]
    <base>/manifest/rollback/req[/<request-id>] ->  <base>/manifest/rollback/resp[/<request-id>]
    <base>/history/req[/<request-id>]          ->  <base>/history/resp[/<request-id>]
    <base>/status                                  retained presence of the connector
    <base>/workloads/<workload name>               retained live state of a workload
    <base>/agents/<agent name>                     retained live state of an agent
    <base>/drift                                   retained report of state Ankaios lost
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Characters MQTT gives a meaning in topic names or filters; a VIN or request id with
# one of them would let a requester address other cars' topics.
FORBIDDEN_TOPIC_CHARS = frozenset("/+#\x00")
# Longer ids are refused (and answered on the plain reply topic): an MQTT topic has at most
# 65,535 bytes, so a request topic near that limit has a reply topic that cannot be sent.
MAX_REQUEST_ID_BYTES = 1024


class Operation(enum.StrEnum):
    """What a request asks for; the value is the topic segment between base and req/resp."""

    APPLY = "manifest/apply"
    DELETE = "manifest/delete"
    PLAN = "manifest/plan"
    """What an apply of the manifest would do; changes nothing."""
    PLAN_DELETE = "manifest/plan-delete"
    """What a delete of the manifest would do; changes nothing."""
    STATE = "state"
    LOGS = "logs"
    """Workloads' log lines, streamed in batches (fleet_connector/observe/logs.py)."""
    ROLLBACK = "manifest/rollback"
    HISTORY = "history"

    @property
    def planned(self) -> Operation | None:
        """The operation a plan request plans; None for any other operation."""
        return {Operation.PLAN: Operation.APPLY, Operation.PLAN_DELETE: Operation.DELETE}.get(self)


@dataclass(frozen=True)
class RequestTopic:
    """A request topic taken apart."""

    operation: Operation
    request_id: str | None
    follow: str | None = None
    """The ``follow[;settle=S][;deadline=D]`` level after the id (apply and delete only)."""


# Operations whose outcome can be followed (see fleet_connector/observe/outcomes.py).
FOLLOWABLE = frozenset({Operation.APPLY, Operation.DELETE})
FOLLOW_LEVEL = "follow"


class Topics:
    """The topics of one vehicle."""

    def __init__(self, vin: str, prefix: str = "vehicle") -> None:
        self.base = f"{prefix}/{vin}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def workloads_filter(self) -> str:
        return f"{self.base}/workloads/+"

    @property
    def agents_filter(self) -> str:
        return f"{self.base}/agents/+"

    def workload(self, name: str) -> str:
        return f"{self.base}/workloads/{name}"

    def agent(self, name: str) -> str:
        return f"{self.base}/agents/{name}"

    def logs_cancel(self, request_id: str | None = None) -> str:
        topic = f"{self.base}/logs/cancel"
        return f"{topic}/{request_id}" if request_id else topic

    def parse_logs_cancel(self, topic: str) -> tuple[bool, str | None]:
        """(whether it is a cancel topic, the stream's request id)."""
        plain = self.logs_cancel()
        if topic == plain:
            return True, None
        if topic.startswith(plain + "/"):
            request_id = topic[len(plain) + 1 :]
            if request_id and not FORBIDDEN_TOPIC_CHARS.intersection(request_id):
                return True, request_id
        return False, None

    def parse_live(self, topic: str) -> tuple[str, str] | None:
        """("workloads" or "agents", name) for a live-state topic of this car, else None."""
        for kind in ("workloads", "agents"):
            prefix = f"{self.base}/{kind}/"
            if topic.startswith(prefix):
                name = topic[len(prefix) :]
                if name and not FORBIDDEN_TOPIC_CHARS.intersection(name):
                    return kind, name
        return None

    @property
    def drift(self) -> str:
        return f"{self.base}/drift"

    def request(self, operation: Operation, request_id: str | None = None) -> str:
        topic = f"{self.base}/{operation.value}/req"
        return f"{topic}/{request_id}" if request_id else topic

    def response(self, operation: Operation, request_id: str | None = None) -> str:
        topic = f"{self.base}/{operation.value}/resp"
        return f"{topic}/{request_id}" if request_id else topic

    def subscriptions(self) -> list[str]:
        """Filters covering plain requests and requests with an id suffix."""
        filters: list[str] = []
        for operation in Operation:
            filters.append(self.request(operation))
            filters.append(self.request(operation, "+"))
            if operation in FOLLOWABLE:
                filters.append(self.request(operation, "+") + "/+")
        return filters

    def parse_request(self, topic: str) -> RequestTopic | None:
        """The operation and id of a request topic; None for any other topic."""
        for operation in Operation:
            plain = self.request(operation)
            if topic == plain:
                return RequestTopic(operation, None)
            if topic.startswith(plain + "/"):
                request_id, _, follow = topic[len(plain) + 1 :].partition("/")
                if not request_id or FORBIDDEN_TOPIC_CHARS.intersection(request_id):
                    continue
                if not follow:
                    return RequestTopic(operation, request_id)
                if operation in FOLLOWABLE and follow.split(";", 1)[0] == FOLLOW_LEVEL:
                    return RequestTopic(operation, request_id, follow)
        return None

    def owns(self, topic: str) -> bool:
        """Whether a topic lies under this vehicle's base (for MQTT 5 response topics)."""
        return topic.startswith(self.base + "/") and not FORBIDDEN_TOPIC_CHARS.difference(
            "/"
        ).intersection(topic)
