"""The fleet connector: MQTT requests in, Ankaios requests out, one worker in between."""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from fleet_connector.ankaios import Ankaios
from fleet_connector.config import Config
from fleet_connector.control_interface import ControlInterface
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.handler import Handler, Request
from fleet_connector.mqtt import MqttLink
from fleet_connector.topics import Topics

log = logging.getLogger(__name__)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Connector:
    """One vehicle's connector; several can run in one process (e.g. in tests)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.vin)
        self.started_at = _now()
        self._status_since = self.started_at
        self._queue: queue.Queue[Request] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.control_interface = ControlInterface(
            config.control_interface, on_connection_change=self._control_interface_changed
        )
        self._handler = Handler(
            Ankaios(self.control_interface, config.request_timeout), config.max_payload
        )
        self.mqtt = MqttLink(
            config.broker,
            self.topics,
            client_id=config.client_id,
            session_expiry=config.session_expiry,
            on_request=self._enqueue,
            presence=self._presence,
        )

    def start(self) -> None:
        log.info(
            "fleet connector for VIN %s: broker %s, control interface %s",
            self.config.vin,
            self.config.broker.describe(),
            self.config.control_interface,
        )
        self.control_interface.start()
        self._worker = threading.Thread(target=self._work, name="requests", daemon=True)
        self._worker.start()
        self.mqtt.start()

    def stop(self, grace: float = 1.0) -> None:
        """Stops within about ``grace`` seconds plus a second for the goodbye.

        Requests still queued are not acknowledged, so the broker delivers them again
        when the connector is back.
        """
        self._stop.set()
        if self._worker:
            self._worker.join(grace)
        self.control_interface.stop()
        self.mqtt.stop()
        log.info("fleet connector for VIN %s stopped", self.config.vin)

    def _enqueue(self, request: Request) -> None:
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            error = RequestError(
                ErrorCode.BUSY, f"{self.config.queue_size} requests are waiting; try again later"
            )
            self._finish(request, error.to_json(), error.code)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            reply, code = self._handler.handle(request)
            self._finish(request, reply, code)

    def _finish(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        self.mqtt.reply(request, reply)
        log.info(
            "request id=%s topic=%s outcome=%s duration_ms=%.1f",
            request.request_id,
            request.topic,
            code or "OK",
            (time.monotonic() - request.received) * 1000,
        )

    def _control_interface_changed(self, connected: bool) -> None:
        self._status_since = _now()
        if self.mqtt.connected:
            self.mqtt.publish_status("online")

    def _presence(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "vin": self.config.vin,
            "connector_version": _version("ankaios-fleet-connector"),
            "sdk_version": _version("ankaios-sdk"),
            "ankaios": "connected" if self.control_interface.connected else "disconnected",
            "started_at": self.started_at,
            "since": self._status_since,
        }
