"""The pure parts: VIN selection, outcome judgement, progress bar, table layout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_connector.options import ConfigError
from fleetctl.client import fleet
from fleetctl.client.results import Instance, Status
from fleetctl.client.waiting import judge
from fleetctl.output.progress import Progress


@pytest.mark.parametrize(
    ("spec", "vins"),
    [
        ("1-3,7,CAR9", ["1", "2", "3", "7", "CAR9"]),
        ("CAR08-CAR11", ["CAR08", "CAR09", "CAR10", "CAR11"]),
        ("CAR8-11", ["CAR8", "CAR9", "CAR10", "CAR11"]),
        ("098-101", ["098", "099", "100", "101"]),
        ("WVW-123", ["WVW-123"]),
        ("AB1-CD3", ["AB1-CD3"]),
        (" 1 , 2 ,", ["1", "2"]),
    ],
)
def test_vins_specs(spec: str, vins: list[str]) -> None:
    assert fleet.expand_spec(spec) == vins


@pytest.mark.parametrize("spec", ["", ",", "3-1", "A/1", "AB-1-3", "0-100000"])
def test_bad_vins_specs(spec: str) -> None:
    with pytest.raises(ConfigError):
        fleet.expand_spec(spec)


@given(st.integers(0, 5000), st.integers(0, 300), st.sampled_from(["", "CAR", "WVW_"]))
def test_ranges_name_every_number_once(start: int, length: int, prefix: str) -> None:
    vins = fleet.expand_spec(f"{prefix}{start}-{prefix}{start + length}")
    assert vins == [f"{prefix}{n}" for n in range(start, start + length + 1)]


def test_select_merges_in_order_without_duplicates(tmp_path: Path) -> None:
    listing = tmp_path / "vins.txt"
    listing.write_text("# depot 7\nCAR2\n\nCAR9  # spare\n")
    assert fleet.select(["CAR5", "CAR2"], ["CAR1-CAR3"], [str(listing)]) == [
        "CAR5",
        "CAR2",
        "CAR1",
        "CAR3",
        "CAR9",
    ]


def test_an_outcome_running_is_ok_and_keeps_the_states() -> None:
    outcome = {
        "outcome": "running",
        "workloads": {
            "app": {
                "outcome": "running",
                "agent": "agent_A",
                "instance_id": "id1",
                "state": "running",
                "substate": "Ok",
                "info": "",
            }
        },
    }
    judged = judge(outcome, settle=2)
    assert judged.status is Status.OK
    assert judged.instances == [Instance("agent_A", "app", "id1", "running", "Ok", "")]


def test_a_failed_outcome_says_why_with_the_last_lines() -> None:
    outcome = {
        "outcome": "failed",
        "workloads": {
            "ok": {"outcome": "running", "state": "running", "substate": "Ok"},
            "app": {
                "outcome": "failed",
                "state": "failed",
                "substate": "ExecFailed",
                "info": "Exit code: '2'",
                "logs": ["a", "b", "c", "invalid INTERVAL"],
            },
        },
    }
    judged = judge(outcome, settle=2)
    assert judged.status is Status.FAILED
    assert judged.code == "NOT_RUNNING"
    assert judged.message.startswith("app: failed (ExecFailed): Exit code: '2' [failed]")
    assert "last lines: b | c | invalid INTERVAL" in judged.message
    assert "ok:" not in judged.message


def test_a_timeout_outcome_is_a_wait_timeout() -> None:
    outcome = {
        "outcome": "timeout",
        "workloads": {"app": {"outcome": "timeout", "state": "pending", "substate": "Initial"}},
    }
    judged = judge(outcome, settle=2)
    assert (judged.status, judged.code) == (Status.TIMEOUT, "WAIT_TIMEOUT")
    assert "app: pending (Initial)" in judged.message


def test_progress_draws_only_when_enabled() -> None:
    stream = io.StringIO()
    progress = Progress(4, stream, enabled=True)
    progress.phase("wave 1/2")
    progress.advance(True)
    progress.advance(False)
    assert progress.render() == "[" + "#" * 15 + "-" * 15 + "] 2/4 cars, 1 failed  wave 1/2"
    progress.close()
    assert stream.getvalue().endswith("\r\x1b[K")
    silent = io.StringIO()
    quiet = Progress(4, silent)  # a StringIO is no terminal
    quiet.advance(True)
    quiet.close()
    assert silent.getvalue() == ""
