"""The dashboard's live model, made from the inventory instead of the broker.

The page is fleetctl's (fleetctl/dashboard/static) and speaks its protocol: the whole fleet
once, then batches of changes. Here a car changes when the inventory's poll brings a new
version of it (any server's ingest, through the database), and the page gets the car
whole. Recent outcomes come from the audit trail (requests answered through any server) and
from the cars' followed outcomes: both are in the database, so a restarted server shows
what happened before it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fleet_server.api.views import iso
from fleet_server.db import Database, DatabaseError
from fleet_server.inventory.cache import Car, Inventory
from fleet_server.service import Service
from fleetctl.dashboard.model import FOLLOWED_OK, PRESENCE_FIELDS, text

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.05
PAGE_QUEUE = 200
OUTCOMES_KEPT = 100
AUDIT_POLL_SECONDS = 0.5
LINK_CHECK_SECONDS = 0.5
# Actions whose entries are a car's answer to a request sent through the API
# (api/requests.py audits "<action>.reply" with the outcome).
_REPLY_SQL = (
    "SELECT seq, at, actor, action, vins, request_ids, detail FROM audit_log "
    "WHERE seq > ? AND action LIKE 'car.%.reply' ORDER BY seq DESC LIMIT ?"
)

Change = dict[str, Any]


def _document(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def car_view(car: Car) -> Change:
    """One car as the page's model has it: presence, workloads and agents as short text.

    An offline car's workloads go to the page as they were last reported: the page (shared
    with ``fleetctl dashboard``) shows them as "last known" with the time the car went
    offline, never as running, and counts them apart.
    """
    reported = _document(car.presence)
    presence = {name: text(reported.get(name)) for name in PRESENCE_FIELDS}
    presence["status"] = "online" if car.online else "offline"
    presence["connector_version"] = text(car.connector_version or reported.get("connector_version"))
    presence["since"] = iso(car.online_since) or presence["since"]
    workloads = {}
    for w in car.workloads:
        view = {
            "agent": w.agent,
            "instance_id": w.instance_id,
            "state": w.state,
            "substate": w.substate,
            "info": text(w.info),
            "since": w.since,
        }
        workloads[w.name] = view
    agents = {
        a.name: {
            "connected": "true" if a.connected and car.online else "false",
            "cpu_usage": "" if a.cpu_usage is None else text(a.cpu_usage),
            "free_memory": "" if a.free_memory is None else text(a.free_memory),
            "since": a.since,
        }
        for a in car.agents
    }
    return {
        "vin": car.vin,
        "presence": presence,
        "workloads": workloads,
        "agents": agents,
        "labels": dict(car.labels),
        "last_seen": iso(car.last_seen) or "",
    }


def followed_outcome(car: Car) -> Change | None:
    """The car's last followed outcome, as an item of the outcomes list."""
    data = _document(car.last_outcome)
    if not data:
        return None
    overall = text(data.get("outcome"))
    workloads = data.get("workloads")
    parts = (
        [f"{text(n)} {text(o)}" for n, o in list(workloads.items())[:20]]
        if isinstance(workloads, dict)
        else []
    )
    return {
        "seq": f"f-{car.vin}-{text(data.get('request_id'))}",
        "at": text(data.get("at")),
        "vin": car.vin,
        "operation": text(data.get("operation")),
        "request_id": text(data.get("request_id")),
        "ok": "yes" if overall in FOLLOWED_OK else "no",
        "summary": text(f"followed: {overall}" + (f"; {', '.join(parts)}" if parts else "")),
    }


def reply_outcome(row: tuple[Any, ...]) -> Change:
    """An audited reply (api/requests.py) as an item of the outcomes list."""
    seq, at, actor, action, vins, request_ids, detail = row
    vin_list = json.loads(vins) or [""]
    ids = json.loads(request_ids) or [""]
    outcome = text(_document(detail).get("outcome"))
    operation = action.removeprefix("car.").removesuffix(".reply").replace("manifest.", "")
    return {
        "seq": f"a-{seq}",
        "at": at,
        "vin": text(vin_list[0]),
        "operation": text(operation),
        "request_id": text(ids[0]),
        "ok": "yes" if outcome == "ok" else "no",
        "summary": text(f"{outcome} (sent by {actor})"),
        "actor": text(actor),
    }


def _read_replies(db: Database, after: int, limit: int) -> list[tuple[Any, ...]]:
    with db.transaction(write=False) as tx:
        return tx.execute(_REPLY_SQL, (after, limit)).fetchall()


class Feed:
    """Fans the inventory's changes out to the pages, in batches."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.inventory: Inventory = service.inventory
        self._pages: set[asyncio.Queue[Change]] = set()
        self._pending: dict[str, Car] = {}
        self._outcomes: list[Change] = []
        self._followed: dict[str, str] = {}
        """The followed outcome each car had when last looked at (its list key)."""
        self._flush_scheduled = False
        self._audit_seq = 0
        self._broker_up = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        rows = await asyncio.to_thread(_read_replies, self.service.db, 0, OUTCOMES_KEPT)
        self._audit_seq = max((int(r[0]) for r in rows), default=0)
        self._outcomes = [reply_outcome(r) for r in rows]
        self._broker_up = self.service.link.connected
        for car in self.inventory.cars.values():
            self._note_followed(car)
        self.inventory.listeners.append(self._changed)
        self._tasks = [asyncio.create_task(self._poll_audit()), asyncio.create_task(self._link())]

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.inventory.listeners.remove(self._changed)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- changes ---------------------------------------------------------------------------

    def _note_followed(self, car: Car) -> Change | None:
        """The car's followed outcome if it is new since the last look."""
        outcome = followed_outcome(car)
        if outcome is None or self._followed.get(car.vin) == outcome["seq"]:
            return None
        self._followed[car.vin] = outcome["seq"]
        return outcome

    def _changed(self, cars: list[Car]) -> None:
        for car in cars:
            self._pending[car.vin] = car
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(BATCH_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        changes: list[Change] = []
        for car in self._pending.values():
            outcome = self._note_followed(car)
            if self._pages:
                changes.append({"t": "whole", "car": car_view(car)})
                if outcome is not None:
                    changes.append({"t": "outcome", "outcome": outcome})
        self._pending.clear()
        self._send(changes)

    def _send(self, changes: list[Change]) -> None:
        if not changes:
            return
        batch = {"t": "changes", "changes": changes}
        for page in self._pages:
            try:
                page.put_nowait(batch)
            except asyncio.QueueFull:
                # Far behind: the fleet as it is now is worth more than the backlog.
                while not page.empty():
                    page.get_nowait()
                page.put_nowait(self.snapshot())

    async def _poll_audit(self) -> None:
        while True:
            await asyncio.sleep(AUDIT_POLL_SECONDS)
            try:
                rows = await asyncio.to_thread(
                    _read_replies, self.service.db, self._audit_seq, OUTCOMES_KEPT
                )
            except DatabaseError as e:
                log.warning("reading the audit trail for the dashboard failed: %s", e)
                continue
            if not rows:
                continue
            self._audit_seq = max(int(r[0]) for r in rows)
            new = [reply_outcome(r) for r in rows]
            self._outcomes = (new + self._outcomes)[:OUTCOMES_KEPT]
            self._send([{"t": "outcome", "outcome": o} for o in reversed(new)])

    async def _link(self) -> None:
        while True:
            await asyncio.sleep(LINK_CHECK_SECONDS)
            up = self.service.link.connected
            if up != self._broker_up:
                self._broker_up = up
                self._send([{"t": "broker", "connected": up}])

    # -- pages -----------------------------------------------------------------------------

    def snapshot(self) -> Change:
        cars = list(self.inventory.cars.values())
        followed = [o for o in map(followed_outcome, cars) if o is not None]
        outcomes = sorted((*self._outcomes, *followed), key=lambda o: str(o["at"]), reverse=True)[
            :OUTCOMES_KEPT
        ]
        return {
            "t": "snapshot",
            "cars": [car_view(car) for car in cars],
            "outcomes": outcomes,
            "broker": self._broker_up,
        }

    def listen(self, session: Change) -> asyncio.Queue[Change]:
        """A new page's queue: the whole model (with who is looking) first."""
        page: asyncio.Queue[Change] = asyncio.Queue(PAGE_QUEUE)
        page.put_nowait({**self.snapshot(), "session": session})
        self._pages.add(page)
        return page

    def leave(self, page: asyncio.Queue[Change]) -> None:
        self._pages.discard(page)

    def close_pages(self) -> None:
        """Ends every page's event stream (the server is stopping)."""
        for page in self._pages:
            while not page.empty():
                page.get_nowait()
            page.put_nowait({"t": "close"})
