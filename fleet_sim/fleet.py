"""The simulated fleet: cars, their connections, timers, churn and statistics.

Requests of one car are carried out one at a time, in the order they arrive, as the
connector does; each waits its latency on a timer (``call_later``), so an idle car holds
no task and no timer. Fates (no reply, rejected, crash) and latencies are drawn from the
seed, the VIN and the car's request counter, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import resource
import time
from collections import Counter, deque
from importlib import metadata
from typing import Any, TextIO

from fleet_sim import follow as fw
from fleet_sim import manifest as mf
from fleet_sim.car import Answer, Car, Instance
from fleet_sim.connection import Connection
from fleet_sim.draw import unit
from fleet_sim.labels import Labeller
from fleet_sim.options import Options
from fleet_sim.protocol import (
    APPLY,
    BUSY,
    EXPIRED,
    FOLLOWABLE,
    INVALID_REQUEST,
    LOGS,
    WRITES,
    Request,
    SimError,
    response_topic,
    seconds_stamp,
)

log = logging.getLogger(__name__)

LOG_MAX_STREAMS = 4
SDK_VERSION = "1.0.1"
NO_REPLY, REJECT, CRASH, NORMAL = "no_reply", "reject", "crash", "normal"
HOUSEKEEPING = 1.0

Key = tuple[str, str, bytes, bytes]


def _version() -> str:
    try:
        return metadata.version("ankaios-fleet-connector") + "+sim"
    except metadata.PackageNotFoundError:
        return "0+sim"


class Fleet:
    """All simulated cars of this process."""

    def __init__(self, options: Options, loop: asyncio.AbstractEventLoop, out: TextIO) -> None:
        self.options = options
        self.loop = loop
        self.out = out
        self.stats: Counter[str] = Counter()
        self.started_at = time.time()
        self._started = seconds_stamp(self.started_at)
        self._version = _version()
        self._rss_before_kib = _rss_kib()
        labeller = Labeller(options.labels)
        startup = {name: mf.startup(name, options.agent) for name in options.workloads}
        ids = {name: mf.instance_id(d) for name, d in startup.items()}
        now = time.time()
        self.cars = [
            Car(
                index=i,
                vin=options.vin(i),
                labels=labeller(options.vin(i)),
                startup=startup,
                startup_ids=ids,
                agent=options.agent,
                now=now,
            )
            for i in range(options.count)
        ]
        per = options.cars_per_connection
        self.connections = [
            Connection(
                options,
                loop,
                self.cars[i : i + per],
                take=self._take,
                presence=self.presence,
                online=self._came_online,
                lost=self._lost,
            )
            for i in range(0, len(self.cars), per)
        ]
        self._connection_of = [c for c in self.connections for _ in c.order]
        self._in_flight: set[tuple[str, Key]] = set()
        self._online = 0
        self._announced = 0
        """Cars that have been online at least once (ready when all have)."""
        self._ready_at: float | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    # -- presence -----------------------------------------------------------------------

    def presence(self, car: Car, status: str) -> str:
        return json.dumps(
            {
                "status": status,
                "vin": car.vin,
                "connector_version": self._version,
                "sdk_version": SDK_VERSION,
                "ankaios": "connected",
                "started_at": self._started,
                "since": seconds_stamp(car.since),
                "worker": "running",
                "worker_restarts": 0,
                "session_takeovers": 0,
                "last_session_takeover": None,
                # A simulated car keeps its journal in memory: as a connector whose
                # STATE_DIR works (docs/connector.md, Presence).
                "state_dir": {"state": "ok"},
                "labels": car.labels,
            }
        )

    def _came_online(self, connection: Connection, cars: list[Car]) -> None:
        """A ramp step: presence and retained live states of these cars (already subscribed)."""
        now = time.time()
        if connection.single and connection.hold_until:
            connection.hold_until = 0.0  # back from churn
            self.stats["churn_online"] += 1
        for car in cars:
            base = f"vehicle/{car.vin}"
            if not car.online:
                car.online = True
                car.since = now
                self._online += 1
                if not car.announced:
                    car.announced = True
                    self._announced += 1
            connection.publish(f"{base}/status", self.presence(car, "online"), retain=True)
            for instance in car.instances.values():
                connection.publish(
                    f"{base}/workloads/{instance.name}", json.dumps(instance.live()), retain=True
                )
            connection.publish(
                f"{base}/agents/{car.agent}", json.dumps(car.agent_live(now)), retain=True
            )
            self._next(car)
        if self._ready_at is None and self._announced == len(self.cars):
            self.loop.create_task(self._say_ready())

    async def _say_ready(self) -> None:
        """Says ``ready`` once the broker has every car's presence and live states."""
        for connection in self.connections:
            await connection.drain(60.0)
        if self._ready_at is not None:
            return
        self._ready_at = time.time()
        self._emit(
            "ready",
            cars=len(self.cars),
            connections=len(self.connections),
            seconds=round(self._ready_at - self.started_at, 3),
            rss_kib=_rss_kib(),
            rss_kib_before_cars=self._rss_before_kib,
        )
        self._ready.set()

    def _lost(self, connection: Connection) -> None:
        self.stats["connections_lost"] += 1
        if connection.single:
            return  # the Will says the car is offline; churn brings it back
        # A shared connection has no Will per car: its cars stay "online" on the broker
        # until it is back (then presence goes out again), so say so loudly.
        log.warning(
            "connection %s lost: presence of its %d cars (%s..%s) is stale until it is back",
            connection.client_id,
            len(connection.order),
            connection.order[0].vin,
            connection.order[-1].vin,
        )
        self._emit("connection_lost", client_id=connection.client_id, cars=len(connection.order))

    # -- requests -----------------------------------------------------------------------

    def _take(self, connection: Connection, car: Car, request: Request) -> None:
        self.stats["requests"] += 1
        if request.cancel:
            self._cancel(connection, car, request)
            return
        if request.problem is None and request.operation in FOLLOWABLE:
            try:
                fw.spec_of(request)
            except SimError as e:
                request.problem = e
        if request.problem is not None:
            self._reply(connection, request, request.problem.to_json(), request.problem.code)
            return
        key = _key(request)
        if key is not None:
            cached = car.cached(key, time.time())
            if cached is not None:
                self.stats["duplicates"] += 1
                self._reply(connection, request, cached, None)
                return
            if (car.vin, key) in self._in_flight:
                self.stats["duplicates"] += 1
                return  # the first delivery is still being carried out
        if car.queue is None:
            car.queue = deque()
        full = len(car.queue) >= self.options.car_queue
        # Only a request that has to wait takes a place in the connection's queue.
        waits = car.busy or not car.online or bool(car.queue)
        if full or (waits and connection.waiting >= self.options.connection_queue):
            if car.online:
                error = (
                    car.busy_error(self.options.car_queue)
                    if full
                    else SimError(
                        BUSY,
                        f"the queue is full ({self.options.connection_queue} requests waiting "
                        "on this connection); try again later",
                    ).to_json()
                )
                self._reply(connection, request, error, BUSY)
            else:
                self.stats["dropped_offline"] += 1
            return
        if key is not None:
            self._in_flight.add((car.vin, key))
        car.queue.append(request)
        connection.waiting += 1
        if not car.busy:
            self._next(car)

    def _next(self, car: Car) -> None:
        if car.busy or not car.online or not car.queue:
            if not car.queue:
                car.queue = None
            return
        request = car.queue.popleft()
        self._connection_of[car.index].waiting -= 1
        car.busy = True
        n = car.requests
        car.requests += 1
        seed, vin = self.options.seed, car.vin
        u = unit(seed, vin, n, "fate")
        o = self.options
        fate = NORMAL
        if u < o.no_reply_ratio:
            fate = NO_REPLY
        elif request.operation in WRITES and u < o.no_reply_ratio + o.reject_ratio:
            fate = REJECT
        elif request.operation == APPLY and u < o.no_reply_ratio + o.reject_ratio + o.crash_ratio:
            fate = CRASH
        delay = o.latency.sample(unit(seed, vin, n, "latency"))
        self.loop.call_later(delay, self._finish, car, request, fate)

    def _finish(self, car: Car, request: Request, fate: str) -> None:
        car.busy = False
        if not car.online:  # went offline meanwhile: carried out when it is back
            if car.queue is None:
                car.queue = deque()
            car.queue.appendleft(request)
            self._connection_of[car.index].waiting += 1
            car.requests -= 1
            return
        connection = self._connection_of[car.index]
        key = _key(request)
        if key is not None:
            self._in_flight.discard((car.vin, key))
        try:
            if fate == NO_REPLY:
                self.stats["no_reply"] += 1
                return
            if request.expires is not None and time.time() > request.expires:
                error = SimError(EXPIRED, "the request expired before it could be carried out")
                self._reply(connection, request, error.to_json(), error.code)
                return
            if request.operation == LOGS:
                self._logs(connection, car, request)
                return
            now = time.time()
            answer = car.handle(
                request,
                now,
                reject=fate == REJECT,
                crash=fate == CRASH,
                journal_entries=self.options.journal_entries if self.options.journal else None,
            )
            if fate == REJECT and answer.code is not None:
                self.stats["rejected"] += 1
            if fate == CRASH and answer.added:
                self.stats["crashing"] += 1
            for message in answer.messages:
                self._reply(connection, request, message, answer.code)
            if key is not None:
                car.remember(key, answer.messages[0], now)
            self._changed(connection, car, answer, now)
            if answer.code is None and request.operation in FOLLOWABLE:
                spec = fw.spec_of(request)
                if spec is not None:
                    self._follow(connection, car, fw.start(request, spec, answer, now))
        finally:
            self._next(car)

    def _reply(
        self, connection: Connection, request: Request, payload: str, code: str | None
    ) -> None:
        self.stats["replies"] += 1
        if code is not None:
            self.stats[f"error_{code}"] += 1
        connection.answer(request, payload)

    # -- instances ----------------------------------------------------------------------

    def _live(self, connection: Connection, car: Car, instance: Instance) -> None:
        connection.publish(
            f"vehicle/{car.vin}/workloads/{instance.name}",
            json.dumps(instance.live()),
            retain=True,
        )

    def _changed(self, connection: Connection, car: Car, answer: Answer, now: float) -> None:
        replaced = {i.name for i in answer.added}
        for instance in answer.removed:
            if instance.name not in replaced:  # a replaced workload's topic shows the new one
                self._live(connection, car, instance)
            self.loop.call_later(self.options.stop_time, self._gone, car, instance)
        for instance in answer.added:
            self._live(connection, car, instance)
            if instance.state == "pending":
                self.loop.call_later(self.options.start_time, self._started_instance, car, instance)
        if answer.added or answer.removed:
            self._evaluate(car)

    def _current(self, car: Car, instance: Instance) -> bool:
        return car.instances.get(instance.name) is instance

    def _started_instance(self, car: Car, instance: Instance) -> None:
        if not self._current(car, instance) or instance.state != "pending":
            return
        instance.state, instance.substate, instance.since = "running", "Ok", time.time()
        self._publish_live(car, instance)
        if instance.crashes:
            self.loop.call_later(self.options.crash_after, self._crashed, car, instance)

    def _crashed(self, car: Car, instance: Instance) -> None:
        if not self._current(car, instance) or instance.state != "running":
            return
        instance.state, instance.substate = "failed", "ExecFailed"
        instance.info, instance.since = "Exit code: '1'", time.time()
        self.stats["crashed"] += 1
        self._publish_live(car, instance)

    def _gone(self, car: Car, instance: Instance) -> None:
        if not car.gone(instance):
            return
        if car.online and instance.name not in car.instances:
            self._connection_of[car.index].publish(
                f"vehicle/{car.vin}/workloads/{instance.name}", b"", retain=True
            )
        self._evaluate(car)

    def _publish_live(self, car: Car, instance: Instance) -> None:
        if car.online:
            self._live(self._connection_of[car.index], car, instance)
        self._evaluate(car)

    # -- follows ------------------------------------------------------------------------

    def _follow(self, connection: Connection, car: Car, follow: fw.Follow) -> None:
        if car.follows is None:
            car.follows = []
        car.follows.append(follow)
        self._evaluate(car)

    def _evaluate(self, car: Car) -> None:
        if not car.follows:
            return
        now = time.time()
        still: list[Any] = []
        for follow in car.follows:
            if follow.timer is not None:
                follow.timer.cancel()
                follow.timer = None
            wake = fw.evaluate(car, follow, now)
            if wake is None:
                self._send_outcome(car, follow, fw.outcome(follow))
                continue
            follow.timer = self.loop.call_later(max(0.0, wake - now), self._evaluate, car)
            still.append(follow)
        car.follows = still or None

    def _send_outcome(self, car: Car, follow: fw.Follow, outcome: dict[str, Any]) -> None:
        if follow.entry is not None:
            follow.entry.followed = outcome["outcome"]
        self.stats[f"outcome_{outcome['outcome']}"] += 1
        self._connection_of[car.index].answer(follow.request, json.dumps(outcome))

    # -- logs ---------------------------------------------------------------------------

    def _logs(self, connection: Connection, car: Car, request: Request) -> None:
        try:
            lines, follow = car.log_batch(request.payload)
            stream_key = (request.request_id, request.correlation)
            streams = car.streams or {}
            if follow and len(streams) >= LOG_MAX_STREAMS and stream_key not in streams:
                raise SimError(
                    BUSY,
                    f"{LOG_MAX_STREAMS} log streams are open (LOG_MAX_STREAMS); try again later",
                )
        except SimError as e:
            self._reply(connection, request, e.to_json(), e.code)
            return
        seq = 0
        if lines:
            self._reply(connection, request, json.dumps({"seq": 0, "lines": lines}), None)
            seq = 1
        if not follow:
            self._reply(connection, request, json.dumps({"seq": seq, "end": "done"}), None)
            return
        if car.streams is None:
            car.streams = {}
        timer = self.loop.call_later(follow, self._end_stream, car, stream_key, "done")
        car.streams[stream_key] = (timer, request, seq)

    def _end_stream(self, car: Car, key: tuple[str | None, bytes | None], end: str) -> None:
        if not car.streams or key not in car.streams:
            return
        timer, request, seq = car.streams.pop(key)
        timer.cancel()
        if not car.streams:
            car.streams = None
        self._reply(
            self._connection_of[car.index], request, json.dumps({"seq": seq, "end": end}), None
        )

    def _cancel(self, connection: Connection, car: Car, request: Request) -> None:
        key = (request.request_id, request.correlation)
        if car.streams and key in car.streams:
            self._end_stream(car, key, "cancelled")
            return
        error = SimError(
            INVALID_REQUEST, f"no open log stream {request.request_id or '(without id)'} to cancel"
        )
        request.reply_topic = response_topic(car.vin, LOGS, request.request_id)
        self._reply(connection, request, error.to_json(), error.code)

    # -- churn --------------------------------------------------------------------------

    async def _churn(self) -> None:
        """Takes cars offline at ``--churn`` per second, each for an ``--offline-time``."""
        rate = self.options.churn
        if rate <= 0:
            return
        await self._ready.wait()  # bring-up is measured without churn
        drawn = 0
        owed = 0.0
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, max(0.01, 1.0 / rate)))
            now = time.monotonic()
            owed += (now - last) * rate
            last = now
            while owed >= 1.0:
                owed -= 1.0
                index = int(unit(self.options.seed, "churn", drawn) * len(self.cars))
                away = self.options.offline.sample(unit(self.options.seed, "away", drawn))
                drawn += 1
                self._go_offline(self.cars[index], away)

    def _go_offline(self, car: Car, away: float) -> None:
        connection = self._connection_of[car.index]
        if not car.online or not connection.connected or connection.ramping:
            return
        self.stats["churn_offline"] += 1
        car.online = False
        self._online -= 1
        car.since = time.time()
        if connection.single:
            # Its own connection: gone without a word, the broker publishes the real Will.
            connection.hold_until = time.monotonic() + away
            connection.drop()
        else:
            # A shared connection stays: the car says offline itself (no Will can).
            connection.publish(
                f"vehicle/{car.vin}/status", self.presence(car, "offline"), retain=True
            )
            self.loop.call_later(away, self._come_back, connection, car)

    def _come_back(self, connection: Connection, car: Car) -> None:
        if car.online or self._stopping:
            return
        self.stats["churn_online"] += 1
        if connection.connected:
            self._came_online(connection, [car])

    # -- running ------------------------------------------------------------------------

    def _emit(self, event: str, **fields: Any) -> None:
        self.out.write(json.dumps({"event": event, **fields}) + "\n")
        self.out.flush()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            now = time.monotonic()
            for connection in self.connections:
                try:
                    connection.tick(now)
                except Exception:  # one connection's defect must not end everyone's keepalive
                    log.exception("housekeeping of %s failed", connection.client_id)

    async def _stats(self) -> None:
        interval = self.options.stats_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            self._emit("stats", online=self._online, **self.stats)

    async def run(self, stop: asyncio.Event) -> None:
        for connection in self.connections:
            connection.connect()
        tasks = [
            self.loop.create_task(self._housekeeping()),
            self.loop.create_task(self._churn()),
            self.loop.create_task(self._stats()),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await self.shutdown()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Open follows answered ``interrupted``, offline presence for every car, clean
        disconnects (no Will)."""
        self._stopping = True
        for car in self.cars:
            for follow in car.follows or ():
                if follow.timer is not None:
                    follow.timer.cancel()
                self._send_outcome(car, follow, fw.interrupt(follow))
            car.follows = None
            if car.online:
                car.online = False
                car.since = time.time()
                connection = self._connection_of[car.index]
                connection.publish(
                    f"vehicle/{car.vin}/status", self.presence(car, "offline"), retain=True
                )
        await asyncio.gather(*(c.close(timeout) for c in self.connections))
        self._emit("stopped", **self.stats)


def _key(request: Request) -> Key | None:
    """Writes with an id (topic suffix or correlation data) are answered once per delivery
    key, as the connector's reply cache does."""
    if request.operation not in WRITES or not (request.request_id or request.correlation):
        return None
    digest = hashlib.sha256(request.payload).digest()
    return (request.topic, request.reply_topic, request.correlation or b"", digest)


def _rss_kib() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def raise_file_limit(wanted: int) -> None:
    """One connection per car needs a descriptor per car; raise the soft limit as far as
    the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
