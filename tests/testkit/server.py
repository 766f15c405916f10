"""fleet-server in tests: a server in a thread, API tokens, cars made of retained topics."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from aiohttp import web

from fleet_server.auth import Role, create_token
from fleet_server.config import ServerConfig
from fleet_server.db import connect, migrate
from fleet_server.service import serve
from testkit.probe import MqttProbe


class RunningServer:
    """A fleet-server in a thread of this process, with its own event loop."""

    def __init__(
        self, config: ServerConfig, extra: Sequence[Callable[[web.Application], None]] = ()
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

    def __init__(self, probe: MqttProbe, vin: str) -> None:
        self.probe = probe
        self.vin = vin
        self.topics: set[str] = set()

    def publish(
        self, suffix: str, payload: bytes | str | dict[str, Any], retain: bool = True
    ) -> None:
        topic = f"vehicle/{self.vin}/{suffix}"
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        self.probe.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
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
            self.probe.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)


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
