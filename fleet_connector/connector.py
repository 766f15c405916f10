"""The fleet connector: MQTT requests in, Ankaios requests out, on one loop's thread."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fleet_connector.ankaios.client import Ankaios
from fleet_connector.ankaios.control_interface import ControlInterface
from fleet_connector.config import Config
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.journal.crashpoints import CrashPoints
from fleet_connector.loop import Interrupted, Loop
from fleet_connector.mqtt.link import MqttLink
from fleet_connector.mqtt.replies import ReplyCache
from fleet_connector.mqtt.takeover import SessionWatch
from fleet_connector.mqtt.topics import FOLLOWABLE, Operation, Topics
from fleet_connector.observe.outcomes import Outcomes, follow_spec
from fleet_connector.observe.workload_states import WorkloadStates
from fleet_connector.requests.handler import JOURNALED, Handler, Request
from fleet_connector.requests.redaction import Redactor
from fleet_connector.requests.signatures import Verifier
from fleet_connector.versions import version

if TYPE_CHECKING:
    from fleet_connector.journal.changes import Changes
    from fleet_connector.journal.entries import Journal
    from fleet_connector.journal.reconcile import Reconciler
    from fleet_connector.journal.store import Store
    from fleet_connector.observe.logs import LogStreams

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _DriftCheck:
    """A queue item: compare Ankaios with the journal (after the control interface connects)."""


# State requests sent to Ankaios at once (see _work).
PIPELINED_READS = 16
# Payload bytes waiting in the queue before new requests get BUSY: QUEUE_SIZE requests
# of the largest size allowed could otherwise hold gigabytes while Ankaios hangs.
QUEUE_BYTES = 64 * 1024 * 1024
# Pause before a request worker that died is started again.
WORKER_RESTART_DELAY = 0.5


class Connector:
    """One vehicle's connector; several can run in one process (e.g. in tests)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.topics = Topics(config.vin)
        self.started_at = _now()
        self._status_since = self.started_at
        # Read once: the code running does not change when a package is upgraded under it.
        self._versions = (version("ankaios-fleet-connector"), version("ankaios-sdk"))
        # The worker's thread runs the loop: it serves MQTT and the control interface
        # whenever the worker waits (see fleet_connector/loop.py).
        self.loop = Loop()
        self._queue: queue.Queue[Request | _DriftCheck] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._replies = ReplyCache()
        self.store: Store | None = None
        self._worker: threading.Thread | None = None
        self._worker_restarts = 0
        self.session = SessionWatch()
        self._queued_bytes = 0
        self._queued_lock = threading.Lock()
        self.control_interface = ControlInterface(
            config.control_interface,
            loop=self.loop,
            on_connection_change=self._control_interface_changed,
        )
        self._crash = CrashPoints(config.crash_at)
        ankaios = Ankaios(self.control_interface, config.request_timeout)
        self.journal: Journal | None = None
        self._changes: Changes | None = None
        self.reconciler: Reconciler | None = None
        if config.state_dir:
            self._keep_journal(config, ankaios)
        self._handler = Handler(
            ankaios,
            config.policy,
            strict=config.strict,
            redact=Redactor([config.broker.password]),
            verifier=Verifier(
                config.vin,
                config.trusted_keys,
                self.store,
                require_signed=config.require_signed,
            ),
            changes=self._changes,
            crash=self._crash,
        )
        self.mqtt = MqttLink(
            config.broker,
            self.topics,
            loop=self.loop,
            client_id=config.client_id,
            session_expiry=config.session_expiry,
            on_request=self._enqueue,
            presence=self._presence,
            session=self.session,
            watch=[
                self.topics.workloads_filter,
                self.topics.agents_filter,
                self.topics.logs_cancel(),
                self.topics.logs_cancel("+"),
            ],
            on_watched=self._watched,
            on_connected=self._broker_connected,
        )
        self.live = WorkloadStates(
            self.control_interface,
            self.topics,
            lambda topic, payload: self.mqtt.publish(topic, payload, retain=True),
            lambda: self.mqtt.connected,
            request_timeout=config.request_timeout,
            agent_interval=config.agent_interval,
        )
        self.outcomes = Outcomes(self.live, self.control_interface, self._publish_outcome)
        # Made at the first logs request or cancel: most cars never stream, and until then
        # neither the module nor its thread is needed (bench/README.md, "Footprint").
        self.logs: LogStreams | None = None
        self._logs_lock = threading.Lock()

    def _keep_journal(self, config: Config, ankaios: Ankaios) -> None:
        """The journal and what uses it (STATE_DIR); imported only here, because a
        connector without STATE_DIR does without them and each module loaded stays in
        memory (bench/README.md, "Footprint")."""
        from fleet_connector.journal.changes import Changes  # noqa: PLC0415
        from fleet_connector.journal.entries import Journal  # noqa: PLC0415
        from fleet_connector.journal.reconcile import Reconciler  # noqa: PLC0415
        from fleet_connector.journal.store import Store  # noqa: PLC0415

        assert config.state_dir is not None
        self.store = Store(config.state_dir)
        self.journal = Journal(self.store, config.journal_entries, config.journal_bytes)
        self._changes = Changes(ankaios, self.journal, self._crash)
        self.reconciler = Reconciler(
            ankaios,
            self.journal,
            self._changes,
            enabled=config.reconcile,
            publish=self._publish_drift,
            vet=lambda state, masks: config.policy.check_update(
                ankaios.desired_state, state, masks
            ),
        )

    def _log_streams(self) -> LogStreams | None:
        """The log streams, started on first use; None if stopping before they ever were."""
        with self._logs_lock:
            if self.logs is None and not self._stop.is_set():
                from fleet_connector.observe.logs import LogStreams  # noqa: PLC0415

                self.logs = LogStreams(
                    self.control_interface,
                    self.topics,
                    self.live,
                    answer=self.mqtt.answer,
                    ack=self.mqtt.ack,
                    limits=self.config.log_limits,
                    request_timeout=self.config.request_timeout,
                )
                self.logs.start()
            return self.logs

    def start(self) -> None:
        log.info(
            "fleet connector for VIN %s: broker %s, control interface %s",
            self.config.vin,
            self.config.broker.describe(),
            self.config.control_interface,
        )
        self.live.start()
        self.control_interface.start()
        self.mqtt.start()
        self._worker = threading.Thread(target=self._supervise, name="requests", daemon=True)
        self._worker.start()

    def stop(self, grace: float = 1.0) -> None:
        """Stops within about ``grace`` seconds plus a second for the goodbye.

        A request in progress gets ``grace`` to finish; requests still queued are not
        acknowledged, so the broker delivers them again when the connector is back.
        """
        self._stop.set()
        self.control_interface.end_boot_wait()  # wakes the loop
        if self._worker:
            self._worker.join(grace)
            if self._worker.is_alive():
                self.loop.interrupt()  # unwinds the request in progress, unanswered
                self._worker.join(grace)
        self.loop.own()  # from here on, this thread serves MQTT for the goodbye
        self.outcomes.stop()
        with self._logs_lock:  # none are made once _stop is set
            logs = self.logs
        if logs is not None:
            logs.stop()
        self.control_interface.stop()
        self.live.stop()
        self.mqtt.stop()
        self.loop.close()
        if self.store:
            self.store.close()
        log.info("fleet connector for VIN %s stopped", self.config.vin)

    def _enqueue(self, request: Request) -> None:
        # Refusals that need no Ankaios are answered on arrival, so nothing oversized or
        # broken waits in memory behind a slow request.
        try:
            if request.problem is not None:
                raise request.problem
            self.config.policy.check_payload(request.payload)
            self.outcomes.check(request)
        except RequestError as e:
            self._finish(request, e.to_json(), e.code)
            return
        if request.operation is Operation.LOGS:
            logs = self._log_streams()
            # Streams, so not through the request queue. When stopping, the request is
            # left unacknowledged, as queued ones are: the broker delivers it again.
            if logs is not None:
                logs.submit(request)
            return
        admitted = self._replies.admit(request)
        if admitted is False:
            log.info("request id=%s redelivered while running; ignored", request.request_id)
            self.mqtt.ack(request)
            return
        if isinstance(admitted, str):
            log.info("request id=%s redelivered; answered from cache", request.request_id)
            self.mqtt.reply(request, admitted)
            return
        with self._queued_lock:
            full = self._queued_bytes + len(request.payload) > QUEUE_BYTES
            if not full:
                try:
                    self._queue.put_nowait(request)
                except queue.Full:
                    full = True
                else:
                    self._queued_bytes += len(request.payload)
        if full:
            error = RequestError(
                ErrorCode.BUSY,
                f"the queue is full ({self.config.queue_size} requests or "
                f"{QUEUE_BYTES // 2**20} MiB waiting); try again later",
            )
            self._finish(request, error.to_json(), error.code)

    def _next(self) -> Request | _DriftCheck | None:
        """The next queued item, running the loop until there is one; None when stopping."""
        self.loop.wait(lambda: self._stop.is_set() or not self._queue.empty(), None)
        return None if self._stop.is_set() else self._take()

    def _take(self) -> Request | _DriftCheck:
        """The next queued item; raises queue.Empty when there is none."""
        request = self._queue.get_nowait()
        if isinstance(request, Request):
            with self._queued_lock:
                self._queued_bytes -= len(request.payload)
        return request

    def _supervise(self) -> None:
        """Runs the worker; one that dies on a defect is logged and started again.

        A request worker that ended silently would leave a car that looks online and
        answers nothing.
        """
        self.loop.own()
        while not self._stop.is_set():
            try:
                self._work()
                return
            except Interrupted:
                return
            except Exception:
                self._worker_restarts += 1
                log.exception(
                    "request worker failed (restart %d); starting it again", self._worker_restarts
                )
                if self.mqtt.connected:
                    self.mqtt.publish_status("online")
                self._stop.wait(WORKER_RESTART_DELAY)

    def _work(self) -> None:
        held: Request | _DriftCheck | None = None
        while True:
            request = held if held is not None else self._next()
            held = None
            if request is not None:
                self.control_interface.wait_first_connection(self.config.request_timeout)
            if request is None or self._stop.is_set():
                return
            if isinstance(request, _DriftCheck):
                self._check_drift()
                continue
            if request.operation is not Operation.STATE:
                try:
                    reply, code = self._handler.handle(request)
                except Exception as e:
                    reply, code = _internal(request, e)
                self._finish(request, reply, code)
                continue
            # Consecutive reads go to Ankaios back to back; a write ends the batch, so a
            # read never overtakes a write sent before it.
            batch = [request]
            while len(batch) < PIPELINED_READS:
                try:
                    following = self._take()
                except queue.Empty:
                    break
                if isinstance(following, _DriftCheck) or following.operation is not Operation.STATE:
                    held = following
                    break
                batch.append(following)
            try:
                replies = self._handler.handle_reads(batch)
            except Exception as e:
                replies = [_internal(r, e) for r in batch]
            answered = list(zip(batch, replies, strict=True))
            with self.mqtt.together():  # the replies first, all in one write
                for done, (reply, code) in answered:
                    self._answer(done, reply, code)
            for done, (reply, code) in answered:
                self._record(done, reply, code)

    def _finish(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        self._answer(request, reply, code)
        self._record(request, reply, code)

    def _answer(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        self._replies.done(request, reply, code)
        try:
            self._send_reply(request, reply)
        except Exception:
            # A reply paho will not send (e.g. a topic it refuses) must not end the worker;
            # the request is acknowledged so the broker does not hand it over again forever.
            log.exception("reply to request id=%s could not be sent", request.request_id)
            with contextlib.suppress(Exception):
                self.mqtt.ack(request)

    def _record(self, request: Request, reply: str, code: ErrorCode | None) -> None:
        """What follows a reply that is out: its log line, and the follow of its outcome."""
        log.info(
            "request id=%s topic=%s outcome=%s duration_ms=%.1f%s",
            request.request_id,
            request.topic,
            code or "OK",
            (time.monotonic() - request.received) * 1000,
            request.log_trace,
        )
        if code is None and request.operation in FOLLOWABLE:
            try:
                spec = follow_spec(request)
            except RequestError:
                spec = None  # refused before it ran; cannot happen here
            if spec is not None:
                self.outcomes.follow(request, spec, json.loads(reply))

    def _watched(self, message: Any) -> None:
        is_cancel, request_id = self.topics.parse_logs_cancel(message.topic)
        if is_cancel:
            if message.retain:
                # Delivered again at every connect, it would end streams it was never meant for.
                log.warning("retained log cancel on %s ignored", message.topic)
                return
            properties = message.properties if self.mqtt.v5 else None
            logs = self._log_streams()
            if logs is not None:
                logs.cancel(request_id, getattr(properties, "CorrelationData", None))
        else:
            self.live.watched(message)

    def _broker_connected(self) -> None:
        self.live.broker_connected()

    def _send_reply(self, request: Request, reply: str) -> None:
        if request.journal_entry is not None:
            self._reply_once(request, request.journal_entry, reply)
        elif self._crash.point == "after-reply" and request.operation in JOURNALED:
            info = self.mqtt.answer(request, reply)
            self.mqtt.wait_published(info, self.config.request_timeout)
            self._crash.reach("after-reply")
        else:
            self.mqtt.reply(request, reply)

    def _reply_once(self, request: Request, entry: int, reply: str) -> None:
        """Replies to a journaled change unless its reply reached the broker before.

        The request is acknowledged only after the broker has the reply and the journal
        knows it, so a redelivery after a crash is answered exactly when no reply got out.
        """
        assert self.journal is not None
        if request.already_replied:
            log.info("request id=%s redelivered; its reply went out before", request.request_id)
            self.mqtt.ack(request)
            return
        info = self.mqtt.answer(request, reply)
        if self.mqtt.wait_published(info, self.config.request_timeout):
            self.journal.mark_replied(entry)
            self._crash.reach("after-reply")
        self.mqtt.ack(request)

    def _check_drift(self) -> None:
        assert self.reconciler is not None
        # The report is retained on the broker; wait for it a while on boot.
        self.mqtt.wait_subscribed(self.config.request_timeout)
        try:
            self.reconciler.check()
        except Exception:
            log.exception("drift check failed unexpectedly")

    def _publish_outcome(self, request: Request, payload: str) -> Any:
        """A followed outcome goes into the change's journal entry too, then out."""
        if self.journal is not None and request.journal_entry is not None:
            try:
                self.journal.record_followed(request.journal_entry, json.loads(payload)["outcome"])
            except Exception:
                log.exception("outcome of request id=%s not journaled", request.request_id)
        return self.mqtt.answer(request, payload)

    def _publish_drift(self, report: dict[str, Any]) -> None:
        self.mqtt.publish(self.topics.drift, json.dumps(report), retain=True)

    def _control_interface_changed(self, connected: bool) -> None:
        self.live.control_interface_changed(connected)
        if self.logs is not None:
            self.logs.connection_changed(connected)
        self._status_since = _now()
        if connected and self.reconciler is not None:
            # Ankaios may have restarted from its startup state (a car reboot, a server
            # restart): whatever the cloud applied may be gone.
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_DriftCheck())
            self.loop.wake()
        if self.mqtt.connected:
            self.mqtt.publish_status("online")

    def _presence(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "vin": self.config.vin,
            "connector_version": self._versions[0],
            "sdk_version": self._versions[1],
            "ankaios": "connected" if self.control_interface.connected else "disconnected",
            "started_at": self.started_at,
            "since": self._status_since,
            "worker": "running" if self._worker and self._worker.is_alive() else "stopped",
            "worker_restarts": self._worker_restarts,
            "session_takeovers": self.session.takeovers,
            "last_session_takeover": self.session.last,
            "labels": dict(self.config.labels),
        }


def _internal(request: Request, error: Exception) -> tuple[str, ErrorCode]:
    log.exception("request id=%s failed unexpectedly", request.request_id)
    internal = RequestError(ErrorCode.INTERNAL, f"{type(error).__name__}: {error}")
    return internal.to_json(), internal.code
