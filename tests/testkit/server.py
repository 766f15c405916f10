"""fleet-server in tests: a server in a thread, API tokens, cars made of retained topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import requests
from aiohttp import web

from fleet_connector.mqtt.broker import BrokerSettings
from fleet_server.auth import Role, create_token
from fleet_server.config import ServerConfig
from fleet_server.db import connect, migrate
from fleet_server.service import serve
from testkit.broker import Broker, free_port


class RunningServer:
    """A fleet-server in a thread of this process, with its own event loop."""

    def __init__(
        self,
        config: ServerConfig,
        extra: Sequence[Callable[[web.Application], None]] = (),
        *,
        wait_ready: bool = True,
    ) -> None:
        self.config = config
        self._extra = extra
        self.url = f"http://{config.listen[0]}:{config.listen[1]}"
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("fleet-server did not start within 30s")
        if self.error is not None:
            raise self.error
        # Listening is not ready: the retained topics are read after the listener is up.
        if wait_ready:
            wait_until(lambda: self.get("/readyz").status_code == 200, timeout=30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        ready = _ThreadEvent(self._ready)
        try:
            self._loop.run_until_complete(serve(self.config, self._stop, ready, self._extra))  # type: ignore[arg-type]
        except BaseException as e:
            self.error = e
        finally:
            self._ready.set()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, token, **kwargs)

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


class _ThreadEvent:
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def set(self) -> None:
        self._event.set()


def make_token(database: str, name: str, role: str) -> str:
    db = connect(database)
    try:
        migrate(db)
        with db.transaction() as tx:
            return create_token(tx, name, Role.parse(role))
    finally:
        db.close()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Polls an HTTP answer until ``check`` returns something truthy (the server's inventory
    is eventually current by design: write-behind, then a poll)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: last {result!r}")
        time.sleep(interval)


class FakeCar:
    """A car's retained topics published with paho, as its connector would."""

    def __init__(self, client: mqtt.Client, vin: str) -> None:
        self.client = client
        self.vin = vin
        self.topics: set[str] = set()

    def publish(
        self, suffix: str, payload: bytes | str | dict[str, Any], retain: bool = True
    ) -> None:
        topic = f"vehicle/{self.vin}/{suffix}"
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
        if retain:
            self.topics.add(topic)

    def presence(self, status: str = "online", **fields: Any) -> None:
        self.publish(
            "status",
            {
                "status": status,
                "vin": self.vin,
                "connector_version": "0.1.0",
                "ankaios": "connected",
                **fields,
            },
        )

    def workload(
        self,
        name: str,
        state: str = "running",
        since: str = "2026-12-07T08:00:00.000+00:00",
        **fields: Any,
    ) -> None:
        self.publish(
            f"workloads/{name}",
            {
                "agent": "agent_A",
                "instance_id": "i1",
                "state": state,
                "substate": "Ok",
                "info": "",
                "since": since,
                **fields,
            },
        )

    def clear(self) -> None:
        """Removes its retained messages from the session's broker."""
        for topic in self.topics:
            self.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)


@dataclass
class Api:
    """A server with a token of each role and the database it uses."""

    server: RunningServer
    database: str
    tokens: dict[str, str]

    def get(self, path: str, role: str | None = "viewer", **kwargs: Any) -> requests.Response:
        return self.server.get(path, self.tokens.get(role or ""), **kwargs)

    def call(
        self, method: str, path: str, role: str | None = "operator", **kwargs: Any
    ) -> requests.Response:
        return self.server.request(method, path, self.tokens.get(role or ""), **kwargs)


class ServerProcess:
    """``fleet-server`` as its own process (to SIGKILL it), on a free loopback port."""

    def __init__(self, database: str, broker: Broker, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = workdir / f"fleet-server-{self.port}.log"
        environ = {
            **os.environ,
            **broker.env(),
            "FLEET_SERVER_DATABASE": database,
            "FLEET_SERVER_LISTEN": f"127.0.0.1:{self.port}",
            "FLEET_SERVER_FLUSH_INTERVAL": "0.05",
            "FLEET_SERVER_POLL_INTERVAL": "0.1",
            **env,
        }
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fleet_server"], env=environ, stdout=log, stderr=log
            )
        try:
            wait_until(self._ready, timeout=30)
        except AssertionError:
            self.kill()
            raise RuntimeError(f"fleet-server did not get ready: {self.log_text()}") from None

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"fleet-server exited: {self.log_text()}")
        try:
            return requests.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def get(self, path: str, token: str | None = None) -> requests.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return requests.get(self.url + path, headers=headers, timeout=30)

    def post(self, path: str, token: str, data: str | bytes) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return requests.post(self.url + path, headers=headers, data=data, timeout=30)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:]


class CuttableProxy:
    """A TCP proxy to the broker that can be cut (connections dropped, new ones refused)
    and restored on the same port, while the broker itself stays up."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.host = "127.0.0.1"
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.create_server((self.host, self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.broker.host, self.broker.port))
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for s in (source, target):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._listener is not None:
            # shutdown wakes the thread in accept(); close alone would leave the port bound
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.cut()


def publisher(broker: Broker) -> mqtt.Client:
    """A connected paho client for the cars' messages; :func:`close_publisher` ends it."""
    client = BrokerSettings(host=broker.host, port=broker.port).make_client(
        f"cars-{os.getpid()}-{time.monotonic_ns()}"
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def close_publisher(client: mqtt.Client) -> None:
    # disconnect first: it wakes the network loop, which loop_stop would otherwise wait
    # out (up to a second per test)
    client.disconnect()
    client.loop_stop()
