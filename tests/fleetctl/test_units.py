"""The pure parts: VIN selection, state classification, progress bar, table layout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_connector.options import ConfigError
from fleetctl import fleet
from fleetctl.progress import Progress
from fleetctl.results import Instance
from fleetctl.waiting import Phase, added_instances, phase_of, read_states, verdict


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


def instance(state: str = "", substate: str = "") -> Instance:
    return Instance("agent_A", "app", "id1", state, substate)


@pytest.mark.parametrize(
    ("state", "substate", "phase"),
    [
        ("RUNNING", "RUNNING_OK", Phase.RUNNING),
        ("PENDING", "PENDING_INITIAL", Phase.PENDING),
        ("PENDING", "PENDING_STARTING", Phase.PENDING),
        ("PENDING", "PENDING_WAITING_TO_START", Phase.PENDING),
        ("PENDING", "PENDING_STARTING_FAILED", Phase.FAILED),
        ("FAILED", "FAILED_EXEC_FAILED", Phase.FAILED),
        ("NOT_SCHEDULED", "NOT_SCHEDULED", Phase.FAILED),
        ("SUCCEEDED", "SUCCEEDED_OK", Phase.FAILED),
        ("AGENT_DISCONNECTED", "AGENT_DISCONNECTED", Phase.PENDING),
        ("", "", Phase.PENDING),
    ],
)
def test_phases(state: str, substate: str, phase: Phase) -> None:
    assert phase_of(instance(state, substate)) is phase


def test_verdict_fails_on_any_failure_and_runs_only_when_all_run() -> None:
    running, pending, failed = instance("RUNNING"), instance("PENDING"), instance("FAILED")
    assert verdict([running, running]) is Phase.RUNNING
    assert verdict([running, pending]) is Phase.PENDING
    assert verdict([pending, failed]) is Phase.FAILED


def test_states_are_read_from_the_sdk_shape() -> None:
    reply = {
        "added_workloads": [{"agent_name": "agent_A", "workload_name": "app", "workload_id": "id1"}]
    }
    [added] = added_instances(reply)
    assert added.mask == "workloadStates.agent_A.app.id1"
    state = {
        "workload_states": {
            "agent_A": {
                "app": {
                    "id1": {
                        "state": "FAILED",
                        "substate": "FAILED_EXEC_FAILED",
                        "additional_info": "Exit code: '1'",
                    }
                }
            }
        }
    }
    [read] = read_states(state, [added])
    assert read.describe() == "app: FAILED (FAILED_EXEC_FAILED): Exit code: '1'"
    assert read_states({"workload_states": {}}, [added]) == [added]


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
