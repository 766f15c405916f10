"""The dashboard's one MQTT connection, and the pages that listen to what it brings.

paho delivers on its own thread; every message is handed to the event loop, which owns the
model. Changes are gathered for a short moment and sent to every page as one batch, so a
rollout over a thousand cars costs the browser a few dozen events per second, not thousands.

What a page costs the dashboard is bounded, whether it reads or not: at most ``MAX_PAGES``
pages at once; a batch is encoded once and shared by every page's queue; a page that cannot
keep up (its queue full) is marked for a resync instead of being handed a backlog or a copy
of the model: the server then streams it the model car by car (see
:mod:`fleetctl.dashboard.server`), so no page ever holds an encoded copy of the whole fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Topics
from fleetctl.client.connection import BrokerError, Connection
from fleetctl.dashboard import logs
from fleetctl.dashboard.model import Car, Change, FleetModel, Topic, parse_topic

log = logging.getLogger(__name__)

# How long changes are gathered before they go to the pages.
BATCH_SECONDS = 0.05
# Batches, and their bytes, a page may have waiting before it is sent the whole model
# instead. The batches are shared: all pages' queues together hold at most this much.
PAGE_QUEUE = 100
PAGE_BYTES = 2 * 2**20
# Event streams (pages) open at once; one more is refused. A dashboard is for a few
# operators' tabs; every page open costs a connection, a queue and a share of the CPU.
MAX_PAGES = 100
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


@dataclass(frozen=True)
class Resync:
    """A page's next item: the whole model, as it is when the page comes to it.

    What the model held when the page was marked is taken by reference only (the cars, in
    their order then; a copy of the recent outcomes, which are few), so that every later
    outcome reaches the page once, as a change.
    """

    cars: list[Car]
    outcomes: list[dict[str, str]]


PageItem = bytes | Resync


class Page:
    """One page's event stream: encoded batches (shared by all pages) or a resync."""

    def __init__(self) -> None:
        self._items: asyncio.Queue[PageItem] = asyncio.Queue(PAGE_QUEUE)
        self._bytes = 0

    async def next(self) -> PageItem:
        item = await self._items.get()
        if isinstance(item, bytes):
            self._bytes -= len(item)
        return item

    def offer(self, batch: bytes) -> bool:
        """Queues the batch; False when the page is too far behind to take it."""
        if self._bytes + len(batch) > PAGE_BYTES or self._items.full():
            return False
        self._items.put_nowait(batch)
        self._bytes += len(batch)
        return True

    def resync(self, item: Resync) -> None:
        """Whatever is waiting is dropped for the whole model."""
        while not self._items.empty():
            self._items.get_nowait()
        self._bytes = 0
        self._items.put_nowait(item)


class TooManyPages(Exception):
    """MAX_PAGES pages are open already."""


def encode(item: object) -> bytes:
    """One server-sent event (JSON has no raw newlines, so one data line)."""
    return b"data: " + json.dumps(item, separators=(",", ":")).encode() + b"\n\n"


class Feed:
    """Subscribes once for the whole fleet and fans changes out to the pages."""

    def __init__(
        self, settings: BrokerSettings, vins: Iterable[str] = (), client_id: str | None = None
    ) -> None:
        self.model = FleetModel(vins)
        self._settings = settings
        self._client_id = client_id or f"fleetctl-dashboard-{uuid.uuid4().hex[:12]}"
        self._pages: set[Page] = set()
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
        changes, self._pending = self._pending, []
        if not self._pages:
            return
        # Encoded once: every page's queue holds the same bytes.
        batch = encode({"t": "changes", "changes": changes})
        for page in self._pages:
            if not page.offer(batch):
                # Behind by PAGE_QUEUE batches or PAGE_BYTES: what it still has to apply
                # is worth less than the model as it is now.
                self._resync(page)

    # -- pages ----------------------------------------------------------------------------

    @property
    def broker_up(self) -> bool:
        return self._broker_up

    @property
    def pages(self) -> int:
        return len(self._pages)

    def listen(self) -> Page:
        """A new page; the whole model is its first item. Raises TooManyPages."""
        if len(self._pages) >= MAX_PAGES:
            raise TooManyPages(f"{MAX_PAGES} pages are open already")
        page = Page()
        self._resync(page)
        self._pages.add(page)
        return page

    def _resync(self, page: Page) -> None:
        page.resync(Resync(list(self.model.cars.values()), list(self.model.outcomes)))

    def leave(self, page: Page) -> None:
        self._pages.discard(page)
