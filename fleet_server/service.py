"""The running fleet-server: database, broker link, ingest, inventory, API, metrics.

Background tasks on one event loop: the ingest flush (write-behind), the inventory poll
(other servers' changes), and after every broker (re)connect the read of retained topics.
Blocking database work runs on worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiohttp import web

from fleet_server.broker_link import BrokerLink, LinkError
from fleet_server.config import ServerConfig
from fleet_server.db import Database, DatabaseError, connect, migrate
from fleet_server.dispatch import Dispatcher
from fleet_server.inventory.cache import Inventory, read_changes
from fleet_server.inventory.ingest import Ingest
from fleet_server.metrics import Metrics
from fleet_server.peers import Peers
from fleet_server.rollouts.scheduler import Scheduler
from fleet_server.rollouts.store import state_counts

log = logging.getLogger(__name__)

SHARE_GROUP = "fleet-server"
# The cars' topics the inventory is made of (fleet_connector/mqtt/topics.py).
INVENTORY_FILTERS = (
    "vehicle/+/status",
    "vehicle/+/workloads/+",
    "vehicle/+/agents/+",
    "vehicle/+/drift",
)
# Followed outcomes are not retained: live only.
OUTCOME_FILTERS = ("vehicle/+/manifest/apply/resp/+", "vehicle/+/manifest/delete/resp/+")
SYNC_TIMEOUT = 120.0


class Service:
    def __init__(self, config: ServerConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.inventory = Inventory()
        self.metrics = Metrics(self, rollouts=lambda: state_counts(db))
        self.rollouts = Scheduler(self)
        self.ingest = Ingest(db, counts=self.inventory.counts, on_lag=self.metrics.observe_lag)
        self.link = BrokerLink(config.broker, f"fleet-server-{config.instance}")
        self.link.on_message = self.ingest.receive
        self.link.on_connected = self._connected
        self.peers = Peers(db, config.instance, config.heartbeat_interval)
        self.dispatcher = Dispatcher(self)
        """Requests to cars, for the API and anything else in the server."""
        self.synced = False
        """Whether the retained topics were read since the last (re)connect."""
        self._reading = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._sync_marker: asyncio.Future[None] | None = None
        self._sync: asyncio.Task[None] | None = None
        self._rollout_task: asyncio.Task[None] | None = None
        self._sync_token = b""
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` in the background, referenced until done (the loop keeps weak ones)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def sync_topic(self) -> str:
        return f"fleet-server/{self.config.instance}/sync"

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="poll"),
            asyncio.create_task(self._flush_loop(), name="flush"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
        ]
        await self.poll()  # the whole inventory, before the first API request
        self.link.route(self.sync_topic, self._marker_arrived)
        await self.link.start()
        self._rollout_task = asyncio.create_task(self.rollouts.run(), name="rollouts")

    async def stop(self) -> None:
        # Rollouts first, while the broker and the database are there: leases are given up.
        if self._rollout_task is not None:
            self._rollout_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rollout_task
        with contextlib.suppress(DatabaseError):
            await self.rollouts.stop()
        self.link.stop()
        if self._sync is not None:
            self._tasks.append(self._sync)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(DatabaseError):
            await asyncio.to_thread(self.ingest.flush)
            await asyncio.to_thread(self.peers.leave)

    # -- reading the retained topics, then live through the shared subscription -----------

    async def _connected(self) -> None:
        """A (re)connect: a read still running for an earlier connection is abandoned (its
        marker may have been lost with that connection) and starts over."""
        if self._sync is not None and not self._sync.done():
            self._sync.cancel()
        self._sync = asyncio.create_task(self._synchronise(), name="synchronise")

    async def _synchronise(self) -> None:
        """After each connect: live subscription first, then the retained topics once.

        Shared subscriptions get no retained messages, so those are read through a plain
        subscription made after the shared one: nothing published in between is missed.
        """
        self.synced = False
        try:
            shared = [f"$share/{SHARE_GROUP}/{f}" for f in (*INVENTORY_FILTERS, *OUTCOME_FILTERS)]
            # The retained topics are read once, below; not a second time through these.
            refused = await self.link.subscribe(shared, retained=False)
            if refused:
                log.error("the broker refused the shared subscriptions %s", refused)
            await self.read_retained()
            self.synced = True
        except (LinkError, TimeoutError) as e:
            log.warning("reading the retained topics failed (%s); again at the next connect", e)

    async def read_retained(self) -> None:
        """Reads every retained inventory topic once, and writes what it found.

        A plain subscription, ended once a marker published after its SUBACK has come back:
        the broker delivers a subscription's retained messages before anything published
        later. Live messages arriving twice meanwhile (shared and plain) are harmless.

        One filter at a time (every car's presence, then every car's workloads, ...): the
        broker hands a subscription's retained messages over at once, and drops what does
        not fit its queue for one client (mosquitto: ``max_queued_messages``), the marker
        too. So the fleet's largest kind of topic must fit, not all of them together.
        """
        async with self._reading:
            self.ingest.sync_started = time.time()
            await self.link.subscribe([self.sync_topic])
            for topic_filter in INVENTORY_FILTERS:
                await self._read_one(topic_filter)
            await self.flush()
            log.info("read the retained topics; %d cars known", len(self.inventory.cars))

    async def _read_one(self, topic_filter: str) -> None:
        await self.link.subscribe([topic_filter])
        loop = asyncio.get_running_loop()
        self._sync_marker = loop.create_future()
        # A marker of its own each time: a late one of an earlier read never ends this one.
        self._sync_token = uuid.uuid4().hex.encode()
        self.link.publish(self.sync_topic, self._sync_token)
        try:
            await asyncio.wait_for(self._sync_marker, SYNC_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(
                f"the retained messages of {topic_filter} did not end within "
                f"{SYNC_TIMEOUT:.0f}s; the broker may have dropped some (mosquitto: raise "
                "max_queued_messages above the number of cars)"
            ) from None
        finally:
            await self.link.unsubscribe([topic_filter])

    def _marker_arrived(self, payload: bytes) -> None:
        marker = self._sync_marker
        if marker is not None and not marker.done() and payload == self._sync_token:
            marker.set_result(None)

    # -- write-behind and change poll ------------------------------------------------------

    async def flush(self) -> None:
        """Writes what is pending now and reads it back into memory."""
        if await asyncio.to_thread(self.ingest.flush):
            await self.poll()
            self.ingest.settled()

    async def poll(self) -> None:
        changes = await asyncio.to_thread(read_changes, self.db, self.inventory.seq)
        self.inventory.apply(changes)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            try:
                await self.flush()
            except DatabaseError as e:
                log.warning("writing the inventory failed, kept for the next try: %s", e)

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                silent = await asyncio.to_thread(self.peers.beat)
            except DatabaseError as e:
                log.warning("writing the heartbeat failed: %s", e)
                silent = []
            if silent and self.synced:
                # What they had received but not written is still retained on the broker.
                log.warning("server(s) %s went silent; reading the retained topics again", silent)
                self.metrics.resyncs.inc()
                try:
                    await self.read_retained()
                except (LinkError, TimeoutError) as e:
                    log.warning("reading the retained topics again failed: %s", e)
            await asyncio.sleep(self.config.heartbeat_interval)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                await self.poll()
            except DatabaseError as e:
                log.warning("reading changes failed: %s", e)


async def serve(
    config: ServerConfig,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    extra: Sequence[Callable[[web.Application], None]] = (),
) -> None:
    """Serves until ``stop``; ``extra`` mounts more routes (make_app's), e.g. in tests."""
    from fleet_server.api.app import make_app, make_metrics_app  # noqa: PLC0415 - api imports us
    from fleet_server.web.pages import mount as dashboard  # noqa: PLC0415 - web imports us

    db = await asyncio.to_thread(connect, config.database)
    try:
        await asyncio.to_thread(migrate, db)
        service = Service(config, db)
        await service.start()
        runners = []
        try:
            app = make_app(
                service, metrics=config.metrics_listen is None, extra=[dashboard, *extra]
            )
            runners.append(await _listen(app, config.listen))
            if config.metrics_listen is not None:
                runners.append(await _listen(make_metrics_app(service), config.metrics_listen))
            for runner in runners:
                for address in runner.addresses:
                    log.info("listening on %s", address)
                    print(f"fleet-server listening on http://{_address(address)}", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()
            await service.stop()
    finally:
        db.close()


def _address(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


async def _listen(app: web.Application, where: tuple[str, int]) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, where[0], where[1])
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise LinkError(f"cannot listen on {where[0]}:{where[1]}: {reason}") from None
    return runner


def run_service(config: ServerConfig) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    try:
        asyncio.run(main())
    except (LinkError, DatabaseError) as e:
        print(f"fleet-server: error: {e}", file=sys.stderr)
        return 1
    return 0
