"""What a car publishes is hostile input: bounded, malformed JSON dropped, never a crash."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_server.inventory.messages import MAX_PAYLOAD, Message, parse


def status(**fields: object) -> bytes:
    return json.dumps({"status": "online", "connector_version": "0.1.0", **fields}).encode()


def test_presence_is_read_with_the_car_s_own_labels() -> None:
    message = parse("vehicle/V1/status", status(labels={"region": "eu", "model": "x"}))
    assert message is not None and message.kind == "status"
    assert message.value.online is True
    assert message.value.labels == {"region": "eu", "model": "x"}


def test_labels_as_the_connector_option_text_are_read_too() -> None:
    message = parse("vehicle/V1/status", status(labels="region=eu,model=x"))
    assert message is not None
    assert message.value.labels == {"region": "eu", "model": "x"}


def test_labels_kubernetes_would_refuse_are_left_out() -> None:
    labels = {"region": "<script>alert(1)</script>", "ok": "yes", "bad key": "v", "n": 5}
    message = parse("vehicle/V1/status", status(labels=labels))
    assert message is not None
    assert message.value.labels == {"ok": "yes"}


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("vehicle/V1/status", b"not json"),
        ("vehicle/V1/status", b'{"status": "maybe"}'),
        ("vehicle/V1/status", b"[1, 2]"),
        ("vehicle/V1/status", b"[" * 60_000),
        ("vehicle/V1/workloads/w", b'{"state": 3}'),
        ("vehicle/V1/workloads/w", b"\xff\xfe"),
        ("vehicle/V1/agents/a", b'{"connected": "yes"}'),
        ("vehicle/V1/drift", b'"text"'),
        (f"vehicle/{'V' * 65}/status", status()),
        ("vehicle//status", status()),
        ("vehicle/V1/status", status(pad="x" * MAX_PAYLOAD)),
        (f"vehicle/V1/workloads/{'w' * 257}", b'{"state": "running"}'),
        ("vehicle/V1/other", b"{}"),
        ("other/V1/status", status()),
        ("vehicle/V1/manifest/apply/resp/r1", b'{"added_workloads": []}'),
    ],
)
def test_what_is_not_understood_is_dropped(topic: str, payload: bytes) -> None:
    assert parse(topic, payload) is None


def test_long_fields_are_cut_to_their_bounds() -> None:
    payload = json.dumps({"state": "r" * 1000, "info": "i" * 10_000, "agent": "a" * 1000})
    message = parse("vehicle/V1/workloads/w", payload.encode())
    assert message is not None
    assert len(message.value.state) == 32
    assert len(message.value.info) == 1024
    assert len(message.value.agent) == 128


def test_a_cleared_workload_topic_means_gone() -> None:
    assert parse("vehicle/V1/workloads/w", b"") == Message("workload", "V1", "w", None)


def test_an_outcome_is_kept_as_a_summary() -> None:
    payload = {
        "outcome": "failed",
        "workloads": {"w": {"outcome": "failed", "logs": ["x" * 1000]}},
    }
    message = parse("vehicle/V1/manifest/apply/resp/r1", json.dumps(payload).encode())
    assert message is not None and message.kind == "outcome"
    summary = json.loads(message.value)
    assert datetime.fromisoformat(summary.pop("at")).tzinfo is not None  # when it was seen
    assert summary == {
        "outcome": "failed",
        "operation": "apply",
        "request_id": "r1",
        "workloads": {"w": "failed"},
    }


@given(st.binary(max_size=300), st.sampled_from(["status", "workloads/w", "agents/a", "drift"]))
def test_no_payload_raises(payload: bytes, suffix: str) -> None:
    parse(f"vehicle/V1/{suffix}", payload)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_no_json_document_raises(document: object) -> None:
    payload = json.dumps(document).encode()
    for suffix in ("status", "workloads/w", "agents/a", "drift", "manifest/apply/resp/r"):
        parse(f"vehicle/V1/{suffix}", payload)
