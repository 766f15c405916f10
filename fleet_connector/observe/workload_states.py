"""Live workload and agent states on retained topics, driven by Ankaios's events.

One subscription to events (field masks ``workloadStates`` and ``agents``) is kept open on
the control interface. Its first answer is the complete state, and Ankaios sends it before
any event of the subscription, on the same ordered stream: so a resync is simply a new
subscription, and no event can be applied to a state older than itself. Every reconnect of
the control interface or of the broker starts one.

Responses are routed here by the connector's loop, which reads the control interface and
only queues them; one thread of this module applies them and publishes, so requests never
wait for it. Everything queued is applied before anything is
published, so a burst of events becomes one message per workload; the queue is bounded,
and when it overflows the events are dropped and a resync replaces them.

Retained topics left by an earlier run are read back (the connector subscribes to its own
``workloads/+`` and ``agents/+``): a workload that no longer exists gets its retained topic
cleared, an agent that is gone is shown disconnected.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from ankaios_sdk import Response, ResponseType
from ankaios_sdk._protos import _ank_base

from fleet_connector.ankaios.control_interface import ControlInterface, Unavailable, proto_of
from fleet_connector.mqtt.topics import Topics
from fleet_connector.observe.live_model import LiveModel

log = logging.getLogger(__name__)

EVENT_MASKS = ["workloadStates", "agents"]
QUEUE_LIMIT = 10_000
# Responses applied before the model is published; more wait for the next round.
BATCH_LIMIT = 5_000
SUBSCRIBE_TIMEOUT = 10.0

Publish = Callable[[str, str], object]
"""Publishes a retained message (QoS 1); an empty payload clears the topic."""
Observer = Callable[[LiveModel, set[str]], float | None]
"""Called on this module's thread after each round, with the workloads it touched (maybe
none); returns the monotonic time it wants to be called again at the latest, or None."""


class WorkloadStates:
    """Keeps ``vehicle/<VIN>/workloads/<name>`` and ``.../agents/<name>`` current."""

    def __init__(
        self,
        control_interface: ControlInterface,
        topics: Topics,
        publish: Publish,
        broker_connected: Callable[[], bool],
        *,
        request_timeout: float,
        agent_interval: float,
    ) -> None:
        self._ci = control_interface
        self._topics = topics
        self._publish = publish
        self._broker_connected = broker_connected
        self._timeout = request_timeout
        self._agent_interval = agent_interval
        # A slow Ankaios answers late rather than never; subscribing again too early would
        # only add to its backlog.
        self._answer_timeout = max(SUBSCRIBE_TIMEOUT, 2 * request_timeout)
        self.model = LiveModel()
        self._inbox: queue.Queue[tuple[Any, ...]] = queue.Queue(QUEUE_LIMIT)
        self._overflow = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observers: list[Observer] = []
        # Set while the model reflects Ankaios (after a subscription's first answer).
        self.synced = threading.Event()
        # Only touched by this module's thread:
        self._subscription: str | None = None
        self._subscribed_at = 0.0
        self._masks = list(EVENT_MASKS)
        self._published: dict[str, str] = {}  # topic -> payload last published
        self._retained: set[str] = set()  # topics the broker holds retained (read back)
        self._next_agents = 0.0
        self._dirty: set[str] = set()
        self._dirty_agents: set[str] = set()
        self._force = False
        self._touched: set[str] = set()
        self._broker_seen = False
        self._wake_at: float | None = None

    # -- any thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="workload-states", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._post(("wake",))
        if self._thread:
            self._thread.join(2)

    def observe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def call_soon(self, function: Callable[[], None]) -> None:
        """Runs ``function`` on this module's thread, where the model may be read."""
        self._post(("call", function))

    def control_interface_changed(self, connected: bool) -> None:
        self._post(("ankaios", connected))

    def broker_connected(self) -> None:
        self._post(("broker",))

    def watched(self, message: mqtt.MQTTMessage) -> None:
        """A message on one of our own live-state topics; only retained ones matter."""
        if message.retain and self._topics.parse_live(message.topic) is not None:
            self._post(("retained", message.topic, bool(message.payload)))

    def _route(self, response: Response) -> None:
        # On the control interface's reading thread: queue, never wait.
        self._post(("response", response.get_request_id(), response))

    def _post(self, item: tuple[Any, ...]) -> None:
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            self._overflow.set()

    # -- this module's thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = [self._inbox.get(timeout=self._wait_time())]
            except queue.Empty:
                items = []
            while len(items) < BATCH_LIMIT:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                for item in items:
                    self._handle(item)
                if self._overflow.is_set():
                    self._overflow.clear()
                    log.warning("live states: more events than could be queued; resyncing")
                    self._subscribe()
                self._maintain()
                # Observers (open follows) see a change before it is published, so an
                # outcome never reports an older state than the retained topic showed.
                self._notify()
                self._flush()
            except Exception:
                log.exception("live states: unexpected failure; resyncing")
                self._subscription = None

    def _wait_time(self) -> float:
        waits = [1.0]
        if self._wake_at is not None:
            waits.append(self._wake_at - time.monotonic())
        if self._subscription is not None and not self.synced.is_set():
            waits.append(self._subscribed_at + self._answer_timeout - time.monotonic())
        if self.synced.is_set():
            waits.append(self._next_agents - time.monotonic())
        return max(0.01, min(waits))

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "response":
            self._on_response(item[1], item[2])
        elif kind == "ankaios":
            if item[1]:
                self._subscribe()
            else:
                if self._subscription is not None:
                    self._ci.close_stream(self._subscription)
                self._subscription = None
                self.synced.clear()
        elif kind == "broker":
            # Everything is published again (forced). On the first connection the model is
            # fresh (or its subscription is still to be answered); on a reconnect it is
            # taken anew from the complete state.
            self._force = True
            if self._broker_seen and self._ci.connected and self.synced.is_set():
                self._subscribe()
            self._broker_seen = True
        elif kind == "call":
            item[1]()
        elif kind == "retained":
            topic, present = item[1], item[2]
            if present:
                self._retained.add(topic)
                self._clear_if_stale(topic)
            else:
                self._retained.discard(topic)

    def _subscribe(self) -> None:
        old = self._subscription
        self._subscription = None
        self.synced.clear()
        if old is not None:
            try:
                self._ci.send(
                    _ank_base.Request(
                        requestId=old, eventsCancelRequest=_ank_base.EventsCancelRequest()
                    ),
                    self._timeout,
                )
            except Unavailable:
                self._ci.close_stream(old)
        request = _ank_base.Request(
            completeStateRequest=_ank_base.CompleteStateRequest(
                fieldMask=self._masks, subscribeForEvents=True
            )
        )
        try:
            self._subscription = self._ci.open_stream(request, self._route, self._timeout)
        except Unavailable as e:
            log.debug("live states: cannot subscribe yet: %s", e)
            return
        self._subscribed_at = time.monotonic()

    def _on_response(self, request_id: str, response: Response) -> None:
        if request_id != self._subscription:
            # A subscription given up: its events are dropped until Ankaios confirms the cancel.
            if response.content_type in (ResponseType.EVENT_CANCEL_ACCEPTED, ResponseType.ERROR):
                self._ci.close_stream(request_id)
            return
        proto = proto_of(response)
        if response.content_type == ResponseType.ERROR:
            self._ci.close_stream(request_id)
            self._subscription = None
            if "agents" in self._masks:
                # Without read access to agents, workload states alone are still worth it.
                log.warning(
                    "live states: Ankaios refused events for %s (%s); trying workloadStates only",
                    self._masks,
                    response.content,
                )
                self._masks = ["workloadStates"]
                self._subscribe()
            else:
                log.warning("live states unavailable: Ankaios answered %s", response.content)
            return
        if proto is None or not proto.HasField("completeStateResponse"):
            return
        answer = proto.completeStateResponse
        now = time.time()
        if response.content_type == ResponseType.COMPLETE_STATE:
            touched = self.model.replace_all(answer.completeState, now)
            self._dirty |= touched
            if "agents" in self._masks:
                self._dirty_agents |= self.model.replace_agents(answer.completeState.agents, now)
            self._next_agents = time.monotonic() + self._agent_interval
            self._force = True
            self.synced.set()
            for topic in list(self._retained):
                self._clear_if_stale(topic)
            self._touched |= touched
            log.info("live states: resynced, %d workload instances", len(self.model.instances))
        elif response.content_type == ResponseType.EVENT_RESPONSE and self.synced.is_set():
            touched = self.model.apply_event(answer.completeState, answer.alteredFields, now)
            self._dirty |= touched
            if any(path.startswith("agents") for path in _altered(answer.alteredFields)):
                self._dirty_agents |= self.model.replace_agents(answer.completeState.agents, now)
            elif any(
                s.state == "AgentDisconnected"
                for name in touched
                for s in self.model.of_workload(name)
            ):
                self._next_agents = 0.0  # an agent went away: look now, not at the next round
            self._touched |= touched

    def _maintain(self) -> None:
        now = time.monotonic()
        if (
            self._subscription is not None
            and not self.synced.is_set()
            and now > self._subscribed_at + self._answer_timeout
        ):
            log.warning("live states: no answer to the events subscription; subscribing again")
            self._subscribe()
        elif self.synced.is_set() and "agents" in self._masks and now >= self._next_agents:
            self._next_agents = now + self._agent_interval
            self._refresh_agents()

    def _refresh_agents(self) -> None:
        # Ankaios sends no events for agents' load, so it is read now and then.
        request = _ank_base.Request(
            completeStateRequest=_ank_base.CompleteStateRequest(fieldMask=["agents"])
        )
        try:
            response = self._ci.request(request, self._timeout)
        except (Unavailable, TimeoutError) as e:
            log.debug("live states: agents not read: %s", e)
            return
        proto = proto_of(response)
        if proto is None or not proto.HasField("completeStateResponse"):
            return
        agents = proto.completeStateResponse.completeState.agents
        self._dirty_agents |= self.model.replace_agents(agents, time.time())

    def _notify(self) -> None:
        touched, self._touched = self._touched, set()
        wakes: list[float] = []
        for observer in self._observers:
            try:
                wake = observer(self.model, touched)
            except Exception:
                log.exception("live states: observer failed")
                continue
            if wake is not None:
                wakes.append(wake)
        self._wake_at = min(wakes) if wakes else None

    def _clear_if_stale(self, topic: str) -> None:
        """Clears a retained topic an earlier run left for a workload that is gone."""
        if not self.synced.is_set():
            return
        parsed = self._topics.parse_live(topic)
        if parsed is None:
            return
        kind, name = parsed
        if kind == "workloads" and self.model.current(name) is None:
            self._dirty.add(name)
        elif kind == "agents" and name not in self.model.agents:
            self._dirty_agents.add(name)

    def _flush(self) -> None:
        if not self._broker_connected():
            return  # everything is published again, forced, once the broker is back
        force, self._force = self._force, False
        if force:
            self._dirty |= self.model.workloads() | {
                t.rsplit("/", 1)[1] for t in self._published if "/workloads/" in t
            }
            self._dirty_agents |= set(self.model.agents)
        for name in self._dirty:
            topic = self._topics.workload(name)
            state = self.model.current(name)
            payload = json.dumps(state.to_dict()) if state is not None else ""
            self._send(topic, payload, force)
        for name in self._dirty_agents:
            topic = self._topics.agent(name)
            agent = self.model.agents.get(name)
            if agent is None:
                payload = json.dumps(
                    {
                        "connected": False,
                        "tags": {},
                        "cpu_usage": None,
                        "free_memory": None,
                        "since": None,
                    }
                )
            else:
                payload = json.dumps(agent.to_dict())
            self._send(topic, payload, force)
        self._dirty.clear()
        self._dirty_agents.clear()

    def _send(self, topic: str, payload: str, force: bool) -> None:
        last = self._published.get(topic)
        if payload == last and not force:
            return
        if not payload and last is None and topic not in self._retained:
            return  # nothing to clear
        self._publish(topic, payload)
        if payload:
            self._published[topic] = payload
        else:
            self._published.pop(topic, None)
            self._retained.discard(topic)


def _altered(altered: Any) -> list[str]:
    return [*altered.addedFields, *altered.updatedFields, *altered.removedFields]
