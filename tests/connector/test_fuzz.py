"""Property-based fuzzing over MQTT: every generated bad payload gets an error reply.

More than 10,000 payloads go to one connector process across the three request topics;
afterwards it still serves and its memory has not grown without bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testkit import MANIFESTS, Broker, MqttProbe, Requester
from testkit.observe import rss_kib

from ankaios_emulator import Emulator
from fleet_connector.config import load
from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from vehicle_data_sender.cli import load_config as load_sender_config
from vehicle_data_sender.config import ConfigError as SenderConfigError

EXAMPLES_PER_TOPIC = int(os.environ.get("FUZZ_EXAMPLES", "3400"))
MAX_PAYLOAD = 64 * 1024
FUZZ = settings(
    max_examples=EXAMPLES_PER_TOPIC,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


class Target:
    """One connector process and a requester that insists on an error reply."""

    def __init__(self, proc: subprocess.Popen[bytes], requester: Requester) -> None:
        self.proc = proc
        self.requester = requester
        self.sent = 0
        self.rss_start = 0

    def error_for(self, operation: Operation, payload: bytes) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        self.sent += 1
        reply = json.loads(self.requester.send(operation, payload, request_id).payload)
        assert set(reply) == {"error"}, (payload[:200], reply)
        # SIGNATURE_INVALID: a payload that starts like a signed envelope is one that fails.
        assert reply["error"]["code"] in (
            "INVALID_REQUEST",
            "POLICY_DENIED",
            "SIGNATURE_INVALID",
        ), reply
        assert reply["error"]["message"]
        return reply


@pytest.fixture(scope="module")
def target(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    vin = f"FUZZ{uuid.uuid4().hex[:8]}"
    with Emulator(control_interface=tmp_path_factory.mktemp("fuzz") / "ci") as emu:
        env = {
            **os.environ,
            **broker.env(),
            "VIN": vin,
            "ANKAIOS_CONTROL_INTERFACE_PATH": str(emu.control_interface),
            "MAX_PAYLOAD_SIZE": str(MAX_PAYLOAD),
            "LOG_LEVEL": "WARNING",
            # With a journal, so that rollback and history are served (and fuzzed) too.
            "STATE_DIR": str(tmp_path_factory.mktemp("fuzz-state")),
        }
        proc = subprocess.Popen([sys.executable, "-m", "fleet_connector"], env=env)
        probe = MqttProbe(broker)
        requester = Requester(probe, vin)
        requester.wait_online()
        t = Target(proc, requester)
        requester.state(["workloadStates"])
        t.rss_start = rss_kib(proc.pid)
        yield t
        probe.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


# -- payload strategies -----------------------------------------------------------------


def alias_bomb(levels: int) -> bytes:
    text = "apiVersion: v1\nconfigs:\n  a0: &r0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  a{i}: &r{i} [{', '.join([f'*r{i - 1}'] * 10)}]\n" for i in range(1, levels)
    )
    return text.encode()


def nested(depth: int, yaml_style: bool) -> bytes:
    if yaml_style:
        return ("apiVersion: v1\nconfigs:\n  c: " + "{a: " * depth + "x" + "}" * depth).encode()
    return ("[" * depth + "]" * depth).encode()


WRONG_VALUES = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=3),
)
STRING_FIELDS = ["agent", "runtime", "runtimeConfig"]
MAPPING_FIELDS = ["configs", "dependencies", "tags", "controlInterfaceAccess"]


@st.composite
def wrongly_typed_manifest(draw: st.DrawFn) -> bytes:
    """The tutorial's manifest with one field given a value of the wrong type."""
    manifest = yaml.safe_load((MANIFESTS / "v1" / "vehicle-data-sender.yaml").read_text())
    workload = manifest["workloads"]["vehicle-data-sender"]
    where = draw(st.sampled_from(["string", "mapping", "restart", "config", "top"]))
    if where == "string":
        workload[draw(st.sampled_from(STRING_FIELDS))] = draw(
            WRONG_VALUES.filter(lambda v: not isinstance(v, str))
        )
    elif where == "mapping":
        workload[draw(st.sampled_from(MAPPING_FIELDS))] = draw(
            st.one_of(st.integers(), st.text(min_size=1), st.lists(st.integers(), min_size=1))
        )
    elif where == "restart":
        workload["restartPolicy"] = draw(
            st.one_of(st.text(), st.integers()).filter(
                lambda v: v not in ("NEVER", "ON_FAILURE", "ALWAYS")
            )
        )
    elif where == "config":
        manifest["configs"]["vehicle-data-sender-config"]["env"][0]["value"] = draw(
            WRONG_VALUES.filter(lambda v: not isinstance(v, str | list | dict))
        )
    else:
        manifest[draw(st.sampled_from(["apiVersion", "workloads"]))] = draw(
            st.one_of(st.integers(), st.lists(st.integers(), min_size=1), st.booleans())
        )
    return yaml.safe_dump(manifest).encode()


def not_a_manifest() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        st.binary(max_size=256).map(lambda b: b"\xff\xfe" + b),
        st.integers(1, 30_000).map(lambda d: nested(d, yaml_style=False)),
        st.integers(70, 2_000).map(lambda d: nested(d, yaml_style=True)),
        st.integers(6, 9).map(alias_bomb),
        st.integers(MAX_PAYLOAD + 1, MAX_PAYLOAD * 3).map(lambda n: b"#" * n),
        st.text(max_size=200).map(lambda t: json.dumps({"text": t}).encode()),
        st.text(alphabet="abc:- \n[]{}&*!|>'\"", max_size=200).map(str.encode),
        wrongly_typed_manifest(),
    )


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )


def not_field_masks() -> st.SearchStrategy[bytes]:
    def valid(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(m, str) and m for m in value)

    return st.one_of(
        json_values().filter(lambda v: not valid(v)).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=512).filter(lambda b: not _is_valid_masks(b)),
        st.integers(2, 30_000).map(lambda d: ("[" * d + "]" * d).encode()),
        st.integers(MAX_PAYLOAD + 1, MAX_PAYLOAD * 3).map(lambda n: b"[" + b" " * n + b"]"),
    )


def _is_valid_masks(payload: bytes) -> bool:
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(value, list) and all(isinstance(m, str) and m for m in value)


def not_a_history_selector() -> st.SearchStrategy[bytes]:
    """Anything but empty, {} or {"limit": N} ({"entry": N} of an empty journal is an error)."""

    def valid(payload: bytes) -> bool:
        if not payload.strip():
            return True
        try:
            value = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False
        return isinstance(value, dict) and (
            not value
            or (set(value) == {"limit"} and type(value["limit"]) is int and value["limit"] >= 1)
        )

    return st.one_of(
        json_values().map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["limit", "entry", "x"]), json_values(), min_size=1).map(
            lambda v: json.dumps(v).encode()
        ),
        st.binary(max_size=512),
    ).filter(lambda b: not valid(b))


# -- the properties ---------------------------------------------------------------------


@pytest.mark.timeout(600)
@FUZZ
@given(payload=not_a_manifest())
def test_apply_fuzz(target: Target, payload: bytes) -> None:
    target.error_for(Operation.APPLY, payload)


@pytest.mark.timeout(600)
@FUZZ
@given(payload=not_a_manifest())
def test_delete_fuzz(target: Target, payload: bytes) -> None:
    target.error_for(Operation.DELETE, payload)


@pytest.mark.timeout(600)
@FUZZ
@given(payload=not_field_masks())
def test_state_fuzz(target: Target, payload: bytes) -> None:
    target.error_for(Operation.STATE, payload)


JOURNAL_FUZZ = settings(FUZZ, max_examples=max(1, EXAMPLES_PER_TOPIC // 4))


@pytest.mark.timeout(600)
@JOURNAL_FUZZ
@given(payload=st.one_of(not_a_history_selector(), st.binary(max_size=512)))
def test_rollback_fuzz(target: Target, payload: bytes) -> None:
    # The journal is empty: whatever the selector, there is nothing to roll back.
    target.error_for(Operation.ROLLBACK, payload)


@pytest.mark.timeout(600)
@JOURNAL_FUZZ
@given(payload=not_a_history_selector())
def test_history_fuzz(target: Target, payload: bytes) -> None:
    target.error_for(Operation.HISTORY, payload)


def test_still_serving_with_bounded_memory(target: Target) -> None:
    """Runs after the fuzzers in this module (pytest keeps file order)."""
    assert target.sent >= 3 * EXAMPLES_PER_TOPIC
    assert target.proc.poll() is None
    assert "workload_states" in target.requester.state(["workloadStates"])
    grown = rss_kib(target.proc.pid) - target.rss_start
    print(f"{target.sent} fuzzed requests; RSS grew by {grown} KiB")
    assert grown < 64 * 1024


ENV_KEYS = [
    "VIN",
    "MQTT_BROKER_ADDR",
    "MQTT_BROKER_PORT",
    "MQTT_PROTOCOL",
    "MQTT_KEEPALIVE",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "MQTT_TLS_CA_FILE",
    "REQUEST_TIMEOUT",
    "QUEUE_SIZE",
    "MAX_PAYLOAD_SIZE",
    "MQTT_SESSION_EXPIRY",
    "LOG_LEVEL",
    "ANKAIOS_CONTROL_INTERFACE_PATH",
    "MQTT_PASSWORD_FILE",
    "MQTT_TLS_CERT_FILE",
    "MQTT_TLS_KEY_FILE",
    "POLICY_FILE",
    "ANKAIOS_WORKLOAD_NAME",
]


@settings(max_examples=2000, deadline=None, database=None)
@given(
    env=st.dictionaries(st.sampled_from(ENV_KEYS), st.text(max_size=30), max_size=8),
    argv=st.lists(st.sampled_from(["--vin", "--broker-port", "-x", "--help", "1", "", "--tls"])),
)
def test_connector_configuration_fuzz(env: dict[str, str], argv: list[str]) -> None:
    argv = [a for a in argv if a != "--help"]
    try:
        config = load(argv, env)
    except ConfigError as e:
        assert str(e)
        assert "\n" not in str(e)
    else:
        assert config.vin
        assert 1 <= config.broker.port <= 65535


SENDER_ENV_KEYS = [
    "TOPIC",
    "INTERVAL",
    "MQTT_BROKER_ADDR",
    "MQTT_BROKER_PORT",
    "MQTT_PROTOCOL",
    "MQTT_TLS_CA_FILE",
    "MQTT_USERNAME",
    "MQTT_PASSWORD_FILE",
]


@settings(max_examples=2000, deadline=None, database=None)
@given(
    env=st.dictionaries(st.sampled_from(SENDER_ENV_KEYS), st.text(max_size=30), max_size=6),
    argv=st.lists(st.sampled_from(["--topic", "--interval", "-x", "t", "0", "nan", "", "1e400"])),
)
def test_sender_configuration_fuzz(env: dict[str, str], argv: list[str]) -> None:
    try:
        config = load_sender_config(argv, env)
    except SenderConfigError as e:
        assert str(e)
        assert "\n" not in str(e)
    else:
        assert config.topic
        assert 0 < config.interval < float("inf")
