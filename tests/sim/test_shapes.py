"""fleet-sim against the real connector: the same requests, replies of the same shape.

One scenario runs once against a real car (the connector's command on an emulated Ankaios
whose workloads are processes) and against simulated cars; each test compares one kind of
message by its keys, nesting and types (shapes.py), not its values. When the connector's
replies change shape, these fail until the simulator follows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import Broker, Message, MqttProbe
from testkit.shapes import same_shape, shape
from testkit.sim import RealCar, Sim

STEADY = """apiVersion: v0.1
workloads:
  steady:
    runtime: podman
    agent: agent_A
    restartPolicy: NEVER
    runtimeConfig: |
      image: steady:{version}
"""
# v1, with tags and a config the workload renders: the config shapes of plan, state and
# the journal's snapshot.
WEB = """apiVersion: v1
workloads:
  web:
    runtime: podman
    agent: agent_A
    tags: {owner: me}
    configs: {c: web-config}
    runtimeConfig: |
      image: steady:1
      commandOptions: ["-e", "PORT={{c.port}}"]
configs:
  web-config:
    port: "{port}"
    hosts: ["a", "b"]
"""
CRASHER = """apiVersion: v0.1
workloads:
  crasher:
    runtime: podman
    agent: agent_A
    restartPolicy: NEVER
    runtimeConfig: |
      image: crash:1
"""

Pair = tuple[Any, Any]


class Scenario:
    """Sends each request to a car and collects what comes back on its reply topic."""

    def __init__(self, probe: MqttProbe) -> None:
        self.probe = probe
        self.inbox: dict[str, list[Message]] = {}

    def watch(self, vin: str) -> None:
        self.probe.subscribe(f"vehicle/{vin}/#")

    def _collect(self, topic: str, count: int, timeout: float) -> list[Message]:
        """``count`` messages on ``topic``, keeping what arrives on other topics for later."""
        deadline = time.monotonic() + timeout
        while len(self.inbox.get(topic, [])) < count:
            message = self.probe.expect(timeout=max(0.01, deadline - time.monotonic()))
            self.inbox.setdefault(message.topic, []).append(message)
        got = self.inbox[topic]
        taken, self.inbox[topic] = got[:count], got[count:]
        return taken

    def ask(
        self,
        vin: str,
        suffix: str,
        payload: str,
        *,
        count: int = 1,
        timeout: float = 20.0,
        properties: Properties | None = None,
        reply_topic: str | None = None,
    ) -> list[Any]:
        """The JSON of the ``count`` messages answering the request."""
        return [
            json.loads(m.payload)
            for m in self.raw(
                vin,
                suffix,
                payload,
                count=count,
                timeout=timeout,
                properties=properties,
                reply_topic=reply_topic,
            )
        ]

    def raw(
        self,
        vin: str,
        suffix: str,
        payload: str,
        *,
        count: int = 1,
        timeout: float = 20.0,
        properties: Properties | None = None,
        reply_topic: str | None = None,
    ) -> list[Message]:
        topic = f"vehicle/{vin}/{suffix}"
        self.probe.publish(topic, payload, properties=properties)
        answer = reply_topic or topic.replace("/req", "/resp", 1).split("/follow", 1)[0]
        return self._collect(answer, count, timeout)

    def latest(self, topic: str, wanted: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        """The first message on ``topic`` (seen or to come) that ``wanted`` accepts."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            messages = self.inbox.get(topic, [])
            for message in messages[checked:]:
                if message.payload and wanted(json.loads(message.payload)):
                    return json.loads(message.payload)
            checked = len(messages)
            message = self.probe.expect(timeout=max(0.01, deadline - time.monotonic()))
            self.inbox.setdefault(message.topic, []).append(message)


def run(scenario: Scenario, vin: str, crash_vin: str, results: dict[str, list[Any]]) -> None:
    """The requests, in order; ``results[kind]`` gets this car's messages."""
    s = scenario

    def keep(kind: str, value: Any) -> None:
        results.setdefault(kind, []).append(value)

    keep(
        "presence",
        s.latest(
            f"vehicle/{vin}/status",
            lambda p: p["status"] == "online" and p["ankaios"] == "connected",
        ),
    )
    keep("agent", s.latest(f"vehicle/{vin}/agents/agent_A", lambda p: True))
    reply, outcome = s.ask(
        vin, "manifest/apply/req/a1/follow;settle=0.3", STEADY.format(version=1), count=2
    )
    keep("apply", reply)
    keep("outcome_running", outcome)
    keep(
        "live_state",
        s.latest(f"vehicle/{vin}/workloads/steady", lambda p: p["state"] == "running"),
    )
    keep(
        "logs", s.ask(vin, "logs/req/l1", json.dumps({"workloads": ["steady"], "tail": 5}), count=2)
    )
    keep("state", s.ask(vin, "state/req/s1", "[]")[0])
    keep("state_masked", s.ask(vin, "state/req/s2", '["workloadStates"]')[0])
    keep("plan", s.ask(vin, "manifest/plan/req/p1", STEADY.format(version=2))[0])
    replaced = s.ask(vin, "manifest/apply/req/a2", STEADY.format(version=2))[0]
    keep("apply_replace", replaced)
    keep("history", s.ask(vin, "history/req/h1", "{}")[0])
    keep("history_entry", s.ask(vin, "history/req/h2", '{"entry": 2}')[0])
    keep("plan_delete", s.ask(vin, "manifest/plan-delete/req/p2", STEADY.format(version=2))[0])
    reply, outcome = s.ask(vin, "manifest/delete/req/d1/follow", STEADY.format(version=2), count=2)
    keep("delete", reply)
    keep("outcome_removed", outcome)
    keep("rollback", s.ask(vin, "manifest/rollback/req/r1", "{}")[0])
    # Exactly once: the same id and payload again is answered, not carried out again.
    keep(
        "redelivered", (replaced, s.ask(vin, "manifest/apply/req/a2", STEADY.format(version=2))[0])
    )
    keep("error_invalid", s.ask(vin, "manifest/apply/req/e1", "apiVersion: v0.1\n")[0])
    keep("error_rollback", s.ask(vin, "manifest/rollback/req/e2", '{"entry": 99}')[0])
    keep("error_state", s.ask(vin, "state/req/e3", "not json")[0])
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ResponseTopic = f"vehicle/{vin}/mine/replies"
    properties.CorrelationData = b"corr-1"
    correlated = s.raw(
        vin, "state/req", '["agents"]', properties=properties, reply_topic=properties.ResponseTopic
    )[0]
    keep("correlated", (json.loads(correlated.payload), correlated.properties))
    web = WEB.replace("{port}", "80")
    keep("apply_v1", s.ask(vin, "manifest/apply/req/w1", web)[0])
    keep("plan_config", s.ask(vin, "manifest/plan/req/w2", WEB.replace("{port}", "81"))[0])
    keep("apply_config", s.ask(vin, "manifest/apply/req/w3", WEB.replace("{port}", "81"))[0])
    keep("history_config", s.ask(vin, "history/req/w4", '{"entry": 6}')[0])
    keep("state_config", s.ask(vin, "state/req/w5", '["desiredState"]')[0])
    reply, outcome = s.ask(
        crash_vin, "manifest/apply/req/c1/follow;settle=5", CRASHER, count=2, timeout=30
    )
    keep("apply_crashing", reply)
    keep("outcome_failed", outcome)


@pytest.fixture(scope="module")
def both(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pair]]:
    """The scenario's messages, as (connector's, simulator's) per kind."""
    sims: list[Sim] = []
    real: RealCar | None = None
    probe = MqttProbe(broker)
    try:
        real = RealCar(broker, tmp_path_factory.mktemp("real"), "REALSHAPES")
        sims.append(Sim(broker, "SHAPESA", ["--count", "1", "--labels", "region=eu"]))
        sims.append(Sim(broker, "SHAPESB", ["--count", "1", "--crash-ratio", "1"]))
        for sim in sims:
            sim.expect("ready", 30)
        scenario = Scenario(probe)
        real_results: dict[str, list[Any]] = {}
        sim_results: dict[str, list[Any]] = {}
        for vin in (real.vin, sims[0].vin(0), sims[1].vin(0)):
            scenario.watch(vin)
        run(scenario, real.vin, real.vin, real_results)
        run(scenario, sims[0].vin(0), sims[1].vin(0), sim_results)
        yield {kind: (real_results[kind][0], sim_results[kind][0]) for kind in real_results}
    finally:
        probe.close()
        for sim in sims:
            sim.kill()
        if real is not None:
            real.stop()


def _check(pair: Pair, maps: frozenset[tuple[str, ...]] = frozenset(), **kw: Any) -> None:
    real, sim = pair
    found = same_shape(real, sim, maps, **kw)
    assert not found, f"shapes differ: {found}\nconnector: {real}\nsimulator: {sim}"


WORKLOADS = frozenset({("workloads",)})


@pytest.mark.parametrize(
    "kind", ["apply", "apply_replace", "delete", "apply_crashing", "apply_v1", "apply_config"]
)
def test_apply_and_delete_replies_have_the_connectors_shape(
    both: dict[str, Pair], kind: str
) -> None:
    _check(both[kind])
    real, sim = both[kind]
    assert set(real) == set(sim) == {"added_workloads", "deleted_workloads"}


def test_a_replacing_apply_lists_the_workload_as_deleted_and_added_in_both(
    both: dict[str, Pair],
) -> None:
    for reply in both["apply_replace"]:
        assert len(reply["added_workloads"]) == len(reply["deleted_workloads"]) == 1


@pytest.mark.parametrize("kind", ["state", "state_masked", "correlated", "state_config"])
def test_state_replies_have_the_connectors_shape(both: dict[str, Pair], kind: str) -> None:
    maps = frozenset(
        {
            ("desired_state", "workloads"),
            ("desired_state", "configs"),
            ("desired_state", "workloads", "*", "dependencies"),
            ("desired_state", "workloads", "*", "tags"),
            ("desired_state", "workloads", "*", "configs"),
            ("workload_states",),
            ("workload_states", "*"),
            ("workload_states", "*", "*"),
            ("agents",),
            ("agents", "*", "tags"),
        }
    )
    real, sim = both[kind]
    if kind == "correlated":
        # Answered on the MQTT 5 response topic, with the request's correlation data.
        assert real[1].CorrelationData == sim[1].CorrelationData == b"corr-1"
        real, sim = real[0], sim[0]
    _check((real, sim), maps)


@pytest.mark.parametrize(
    ("kind", "workload"), [("plan", "steady"), ("plan_delete", "steady"), ("plan_config", "web")]
)
def test_plans_have_the_connectors_shape(both: dict[str, Pair], kind: str, workload: str) -> None:
    _check(both[kind], frozenset({("workloads",), ("configs",), ("workloads", "*", "fields")}))
    real, sim = both[kind]
    assert real["workloads"][workload]["action"] == sim["workloads"][workload]["action"]


def test_a_config_change_replaces_the_workload_rendering_it_in_both(both: dict[str, Pair]) -> None:
    for plan in both["plan_config"]:
        assert plan["configs"] == {"web-config": {"action": "replace"}}
        assert plan["workloads"]["web"]["configs"] == ["web-config"]
        assert set(plan["workloads"]["web"]["fields"]) == {"runtimeConfig"}
    for reply in both["apply_config"]:
        assert len(reply["added_workloads"]) == len(reply["deleted_workloads"]) == 1


@pytest.mark.parametrize("kind", ["history", "history_entry", "history_config"])
def test_history_has_the_connectors_shape(both: dict[str, Pair], kind: str) -> None:
    snapshot = ("entries", "[]", "snapshot")
    maps = frozenset(
        {
            (*snapshot, "workloads", "workloads"),
            (*snapshot, "workloads", "workloads", "*", "tags", "tags"),
            (*snapshot, "workloads", "workloads", "*", "configs", "configs"),
            (*snapshot, "configs", "configs"),
            (*snapshot, "configs", "configs", "*", "object", "fields"),
        }
    )
    _check(both[kind], maps)
    real, sim = both[kind]
    assert [e["entry"] for e in real["entries"]] == [e["entry"] for e in sim["entries"]]


def test_a_rollback_answers_like_an_apply_plus_what_it_rolled_back(
    both: dict[str, Pair],
) -> None:
    _check(both["rollback"])
    real, sim = both["rollback"]
    assert real["rolled_back"] == sim["rolled_back"] == {"entry": 3, "request_id": "d1"}


def test_a_redelivered_write_is_answered_the_same_in_both(both: dict[str, Pair]) -> None:
    for first, again in both["redelivered"]:
        assert again == first


@pytest.mark.parametrize("kind", ["error_invalid", "error_rollback", "error_state"])
def test_error_replies_have_the_connectors_shape_and_code(both: dict[str, Pair], kind: str) -> None:
    _check(both[kind])
    real, sim = both[kind]
    assert real["error"]["code"] == sim["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize(
    ("kind", "optional"),
    [
        ("outcome_running", frozenset()),
        ("outcome_failed", frozenset()),
        # The connector reports a deleted instance's last state when it saw the instance
        # still stopping, only agent, id and "state": null when it was gone already (a
        # race in the car); both are its shape.
        ("outcome_removed", frozenset({"substate", "info", "since"})),
    ],
)
def test_followed_outcomes_have_the_connectors_shape(
    both: dict[str, Pair], kind: str, optional: frozenset[str]
) -> None:
    real, sim = both[kind]
    if optional:
        real, sim = _last_state_unknown(real), _last_state_unknown(sim)
    _check((real, sim), WORKLOADS, optional=optional)
    assert real["outcome"] == sim["outcome"]


def _last_state_unknown(outcome: dict[str, Any]) -> dict[str, Any]:
    workloads = {name: {**w, "state": None} for name, w in outcome["workloads"].items()}
    return {**outcome, "workloads": workloads}


def test_a_failed_outcome_carries_the_last_log_lines_in_both(both: dict[str, Pair]) -> None:
    for outcome in both["outcome_failed"]:
        crasher = outcome["workloads"]["crasher"]
        assert crasher["state"] == "failed"
        assert crasher["logs"] and all(isinstance(line, str) for line in crasher["logs"])


def test_presence_has_the_connectors_keys_plus_labels(both: dict[str, Pair]) -> None:
    real, sim = both["presence"]
    # The real car runs without LABELS (labels {}); the simulated one has some.
    wanted = {**shape(real), "labels": {"region": "str"}}
    assert shape(sim) == wanted
    assert sim["labels"] == {"region": "eu"}


@pytest.mark.parametrize("kind", ["live_state", "agent"])
def test_live_states_have_the_connectors_shape(both: dict[str, Pair], kind: str) -> None:
    _check(both[kind], frozenset({("tags",)}))


def test_log_batches_have_the_connectors_shape(both: dict[str, Pair]) -> None:
    real, sim = both["logs"]
    assert len(real) == len(sim) == 2
    for r, s in zip(real, sim, strict=True):
        _check((r, s))
