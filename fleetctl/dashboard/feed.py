"""The dashboard's one MQTT connection, and the pages that listen to what it brings.

paho delivers on its own thread; every message is handed to the event loop, which owns the
model. Changes are gathered for a short moment and sent to every page as one batch, so a
rollout over a thousand cars costs the browser a few dozen events per second, not thousands.
A page that cannot keep up (its queue full) gets the whole model again instead of a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Topics
from fleetctl.client.connection import BrokerError, Connection
from fleetctl.dashboard import logs
from fleetctl.dashboard.model import Change, FleetModel, Topic, parse_topic

log = logging.getLogger(__name__)

# How long changes are gathered before they go to the pages.
BATCH_SECONDS = 0.05
# Batches a page may have waiting before it is sent the whole model instead.
PAGE_QUEUE = 200
# How often the broker connection is looked at, so pages can say their view may be stale.
LINK_CHECK_SECONDS = 0.5


def fleet_filters() -> list[str]:
    """What the dashboard subscribes to: presence, workloads, agents, replies, log batches."""
    any_car = Topics("+")
    return [
        any_car.status,
        any_car.workloads_filter,
        any_car.agents_filter,
        # Apply and delete replies, plain and with a request id (and whatever follows them).
        f"{any_car.base}/manifest/+/resp/#",
        logs.reply_filter(any_car),
    ]


class Feed:
    """Subscribes once for the whole fleet and fans changes out to the pages."""

    def __init__(
        self, settings: BrokerSettings, vins: Iterable[str] = (), client_id: str | None = None
    ) -> None:
        self.model = FleetModel(vins)
        self._settings = settings
        self._client_id = client_id or f"fleetctl-dashboard-{uuid.uuid4().hex[:12]}"
        self._pages: set[asyncio.Queue[Change]] = set()
        self._pending: list[Change] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Connection | None = None
        self._broker_up = False
        self._link_check: asyncio.Task[None] | None = None
        self.logs = logs.Sessions(self._publish)

    async def start(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        connection = Connection(self._settings, self._from_paho, client_id=self._client_id)
        await self._loop.run_in_executor(None, connection.open, timeout)
        self._connection = connection
        refused = await self._loop.run_in_executor(
            None, connection.subscribe, fleet_filters(), timeout
        )
        if refused:
            connection.close()
            raise BrokerError(f"the broker refused subscriptions {', '.join(refused)}")
        self._broker_up = True
        self._link_check = asyncio.create_task(self._watch_link())

    async def _watch_link(self) -> None:
        while self._connection is not None:
            await asyncio.sleep(LINK_CHECK_SECONDS)
            connection = self._connection
            up = connection is not None and connection.connected
            if up != self._broker_up:
                self._broker_up = up
                log.warning("broker connection %s", "back" if up else "lost")
                self._queue([{"t": "broker", "connected": up}])

    def stop(self) -> None:
        if self._link_check is not None:
            self._link_check.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            self.logs.cancel_all()
            connection.close()

    @property
    def protocol(self) -> str:
        return self._connection.protocol if self._connection else self._settings.protocol

    def _publish(self, topic: str, payload: bytes) -> None:
        if self._connection is None:
            raise BrokerError("not connected to the broker")
        self._connection.publish(topic, payload)

    # -- messages (paho's thread, then the loop) ----------------------------------------

    def _from_paho(self, topic: str, payload: bytes, retained: bool) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.arrived, topic, payload)

    def arrived(self, topic: str, payload: bytes) -> None:
        parsed = parse_topic(topic, self.model.prefix)
        if parsed is None:
            return
        if parsed.kind == "logs":
            self.logs.arrived(parsed.vin, parsed.request_id, payload)
            return
        self._changed(parsed, payload)

    def _changed(self, topic: Topic, payload: bytes) -> None:
        self._queue(self.model.update(topic, payload))

    def _queue(self, changes: list[Change]) -> None:
        if not changes:
            return
        self._pending.extend(changes)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_later(BATCH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._pending = {"t": "changes", "changes": self._pending}, []
        for page in self._pages:
            try:
                page.put_nowait(batch)
            except asyncio.QueueFull:
                # Behind by PAGE_QUEUE batches: what it still has to apply is worth less
                # than the model as it is now.
                while not page.empty():
                    page.get_nowait()
                page.put_nowait(self.snapshot())

    # -- pages ----------------------------------------------------------------------------

    def snapshot(self) -> Change:
        return {**self.model.snapshot(), "broker": self._broker_up}

    def listen(self) -> asyncio.Queue[Change]:
        """A new page's queue; the whole model is its first item."""
        page: asyncio.Queue[Change] = asyncio.Queue(PAGE_QUEUE)
        page.put_nowait(self.snapshot())
        self._pages.add(page)
        return page

    def leave(self, page: asyncio.Queue[Change]) -> None:
        self._pages.discard(page)
