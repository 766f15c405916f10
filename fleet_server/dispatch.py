"""Requests to cars, for the API and for anything else in the server (rollouts, #22).

The server that sends a request is the only one that does (once): to
``vehicle/<VIN>/<operation>/req/<request-id>[/<follow level>]`` with QoS 1 and a request id
unique to this server, after subscribing to ``.../resp/<request-id>`` (on MQTT 5 also named
as the response topic, with the id as correlation data). A car the inventory shows offline
gets the request all the same (the broker keeps it in the car's session) and nothing is
awaited. Every request is audited before it is sent, and its outcome after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleet_connector.errors import RequestError
from fleet_connector.mqtt.topics import FOLLOW_LEVEL, Operation, Topics
from fleet_connector.requests.signatures import ENVELOPE_MAGIC, parse_envelope
from fleet_server import audit
from fleet_server.broker_link import LinkError, new_request_id
from fleet_server.inventory.cache import Car

if TYPE_CHECKING:
    from fleet_server.service import Service

OK = "ok"
NO_REPLY = "NO_REPLY"
QUEUED = "QUEUED"
BAD_REPLY = "BAD_REPLY"
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


@dataclass(frozen=True)
class Sent:
    """What became of one request."""

    request_id: str
    outcome: str
    """``ok``, the car's error code, BAD_REPLY (not JSON), NO_REPLY, or QUEUED (car offline)."""
    reply: bytes | None = None
    """The car's reply as it came (None: queued, or no reply)."""
    data: Any = None
    """The reply parsed (None unless it is JSON)."""


def follow_level(settle: float | None = None, deadline: float | None = None) -> str:
    """The connector's ``follow[;settle=S][;deadline=D]`` topic level."""
    level = FOLLOW_LEVEL
    if settle is not None:
        level += f";settle={settle:g}"
    if deadline is not None:
        level += f";deadline={deadline:g}"
    return level


def signing_key(payload: bytes) -> str | None:
    """The key id of a signed request (an envelope, as ``fleetctl sign`` writes it), for the
    audit trail. The car checks the signature; a malformed envelope is passed on for the car
    to refuse, and recorded without a key."""
    if not payload.startswith(ENVELOPE_MAGIC):
        return None
    try:
        fields, _ = parse_envelope(payload)
    except RequestError:
        return None
    return fields.get("key", "")[:128] or None


def parse_reply(payload: bytes) -> tuple[str, Any]:
    """The outcome and the parsed reply."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return BAD_REPLY, None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
        return (code if isinstance(code, str) and _CODE.fullmatch(code) else BAD_REPLY), data
    return OK, data


class Dispatcher:
    def __init__(self, service: Service) -> None:
        self._service = service

    async def send(
        self,
        car: Car,
        operation: Operation,
        payload: bytes,
        *,
        actor: str,
        follow: str | None = None,
        timeout: float | None = None,
    ) -> Sent:
        """Sends one request and awaits the car's reply (not for an offline car).

        ``follow``: a :func:`follow_level` (apply and delete): the reply comes as usual, the
        outcome later on the same topic, which the ingest takes into ``last_outcome``.
        Raises LinkError when the broker is not reachable.
        """
        svc = self._service
        if not svc.link.connected:
            raise LinkError("fleet-server is not connected to the broker")
        rid = new_request_id(svc.config.instance)
        topics = Topics(car.vin)
        request_topic = topics.request(operation, rid)
        if follow is not None:
            request_topic += f"/{follow}"
        reply_topic = topics.response(operation, rid)
        action = f"car.{operation.value.replace('/', '.')}"
        detail: dict[str, Any] = {
            "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
        }
        if follow is not None:
            detail["follow"] = follow
        key = signing_key(payload)
        counted = svc.metrics.requests
        if not car.online:
            detail["queued"] = True
            await self.record(
                actor=actor, action=action, vin=car.vin, rid=rid, detail=detail, key_id=key
            )
            svc.link.publish(request_topic, payload)
            counted.labels(operation.value, QUEUED).inc()
            return Sent(rid, QUEUED)
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        svc.link.route(reply_topic, _once(reply))
        try:
            await svc.link.subscribe([reply_topic])
            await self.record(
                actor=actor, action=action, vin=car.vin, rid=rid, detail=detail, key_id=key
            )
            svc.link.publish(
                request_topic, payload, response_topic=reply_topic, correlation=rid.encode()
            )
            try:
                answer = await asyncio.wait_for(reply, timeout or svc.config.request_timeout)
            except TimeoutError:
                sent = Sent(rid, NO_REPLY)
            else:
                outcome, data = parse_reply(answer)
                sent = Sent(rid, outcome, answer, data)
        finally:
            svc.link.unroute(reply_topic)
            svc.spawn(self._unsubscribe(reply_topic))
        counted.labels(operation.value, sent.outcome).inc()
        await self.record(
            actor=actor,
            action=f"{action}.reply",
            vin=car.vin,
            rid=rid,
            detail={"outcome": sent.outcome},
        )
        return sent

    async def record(
        self,
        *,
        actor: str,
        action: str,
        vin: str,
        rid: str,
        detail: dict[str, Any],
        key_id: str | None = None,
    ) -> None:
        """An audit entry for a request to one car (also for a logs stream)."""
        db = self._service.db

        def write() -> None:
            with db.transaction() as tx:
                audit.append(
                    tx,
                    actor=actor,
                    action=action,
                    vins=[vin],
                    request_ids=[rid],
                    key_id=key_id,
                    detail=detail,
                )

        await asyncio.to_thread(write)

    async def _unsubscribe(self, topic: str) -> None:
        with contextlib.suppress(LinkError):
            await self._service.link.unsubscribe([topic])

    def unsubscribe_later(self, topic: str) -> None:
        self._service.spawn(self._unsubscribe(topic))


def _once(future: asyncio.Future[bytes]) -> Callable[[bytes], None]:
    def deliver(payload: bytes) -> None:
        if not future.done():
            future.set_result(payload)

    return deliver
