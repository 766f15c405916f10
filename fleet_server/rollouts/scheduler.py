"""Every instance runs a scheduler: it takes the leases of active rollouts nobody holds (or
whose holder's lease expired), renews its own, and steps the rollouts it holds.

Exactly one instance carries a rollout out at a time: the lease (lease.py) says which, and
the engine's writes are fenced by it (store.py). An instance that cannot renew (it lost the
database for longer than the lease) stops its drivers at once; whoever takes the rollout
over asks the cars in flight again with the same request ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from fleet_server.db import DatabaseError
from fleet_server.rollouts import lease, store
from fleet_server.rollouts.engine import Context, Driver
from fleet_server.rollouts.signing import Signer

if TYPE_CHECKING:
    from fleet_server.service import Service

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.owner = service.config.instance
        self.ttl = service.config.lease_time
        self.tick = min(service.config.poll_interval, self.ttl / 5)
        self.drivers: dict[str, Driver] = {}
        self._renewed: dict[str, float] = {}
        config = service.config
        signer = Signer.load(config.sign_key, config.sign_valid_for) if config.sign_key else None
        self._context = Context(service, self.owner, service.metrics.rollout_transition, signer)

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except DatabaseError as e:
                log.warning("rollouts: the database failed: %s", e)
            except Exception:
                log.exception("rollouts: a step failed")
            await asyncio.sleep(self.tick)

    async def step(self) -> None:
        db = self.service.db
        now = time.time()
        if self.service.link.connected and self.service.synced:
            for rollout_id in await asyncio.to_thread(store.active_ids, db):
                if rollout_id in self.drivers:
                    continue
                taken = await asyncio.to_thread(
                    lease.acquire, db, rollout_id, self.owner, now=now, ttl=self.ttl
                )
                if taken is None:
                    continue
                if taken.previous is not None:
                    log.warning("rollout %s taken over from %s", rollout_id, taken.previous)
                self.drivers[rollout_id] = Driver(self._context, rollout_id)
                self._renewed[rollout_id] = now
        for rollout_id, driver in list(self.drivers.items()):
            if time.time() - self._renewed[rollout_id] >= self.ttl / 3:
                if not await asyncio.to_thread(
                    lease.renew, db, rollout_id, self.owner, now=time.time(), ttl=self.ttl
                ):
                    log.warning(
                        "rollout %s: lease lost; another instance carries it on", rollout_id
                    )
                    await self._drop(rollout_id)
                    continue
                self._renewed[rollout_id] = time.time()
            if not await driver.step():
                await self._drop(rollout_id)
                with contextlib.suppress(DatabaseError):
                    await asyncio.to_thread(lease.release, db, rollout_id, self.owner)

    async def _drop(self, rollout_id: str) -> None:
        driver = self.drivers.pop(rollout_id)
        self._renewed.pop(rollout_id, None)
        await driver.stop()

    async def stop(self) -> None:
        """A clean stop: the leases are given up, so another instance carries on at once."""
        for rollout_id in list(self.drivers):
            await self._drop(rollout_id)
            with contextlib.suppress(DatabaseError):
                await asyncio.to_thread(lease.release, self.service.db, rollout_id, self.owner)
