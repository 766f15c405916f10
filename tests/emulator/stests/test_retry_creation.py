"""A failed create is retried (Ankaios v1.0.1 stest
``workloads/retry_creation_of_workload_podman.robot``, manifest
``podman_wrong_image_name.yaml``).

``podman run`` of an image that does not exist fails with ``RuntimeError::Create``; the
agent reports ``Pending(Starting)`` ``Retry <n>: <error>`` and tries again after a
jittered exponential backoff (``workload_control_loop.rs`` ``send_retry_for_workload``,
``retry_manager.rs``). A delete or an update invalidates the retries. In the emulator an
image missing from the image map (process runtime) or a failing ``podman run`` (podman
runtime) is such a create error.
"""

from __future__ import annotations

import queue
import stat
import threading
from pathlib import Path

import pytest
from ankaios_sdk import Ankaios
from emulator.ci_client import MakeEmulator
from emulator.state_log import REMOVED, StateLog
from emulator.stests.stest_data import manifest_text

from ankaios_emulator import Emulator
from ankaios_emulator.runtime import ExecState
from ankaios_emulator.runtimes import PodmanRuntime
from ankaios_emulator.scheduler import Scheduler
from ankaios_model.rendering import RenderedWorkload

ALPINE = "ghcr.io/eclipse-ankaios/tests/alpine:latest"
# The stests' alpine runs `--entrypoint /bin/true`; `env` exits 0 as well.
IMAGES = {ALPINE: ["env"]}
TYPO = "image 'image_typo:latest' is not in the image map"


def retrying(make_emulator: MakeEmulator, tmp_path: Path) -> tuple[Emulator, str]:
    emu = make_emulator(
        state=manifest_text("podman_wrong_image_name"),
        runtime="process",
        run_dir=tmp_path / "run",
        control_interface=tmp_path / "ci",
        image_map=IMAGES,
    )
    [name] = emu.instance_names("hello1")
    return emu, name.split(".")[1]


def retries(log: StateLog, workload_id: str) -> list[str]:
    return [s.info for s in log.seen if s.workload_id == workload_id and s.info.startswith("Retry")]


def test_failed_create_is_retried(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    # "the workload state of workload hello1 shall contain an additional info signaling
    # retries within 5 seconds"
    emu, hello_id = retrying(make_emulator, tmp_path)
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        log.wait_for(lambda s: len(retries(s, hello_id)) >= 3, timeout=5)
    # The subscription may come after the first retry (the emulator starts the workload
    # before the test's client connects): the count goes on from where it was, by one.
    seen = retries(log, hello_id)[:3]
    first = int(seen[0].split(":")[0].removeprefix("Retry "))
    assert seen == [f"Retry {n}: {TYPO}" for n in range(first, first + 3)]
    assert {s.substate for s in log.seen if s.info.startswith("Retry")} == {"PENDING_STARTING"}
    assert emu.start_count("hello1") >= 1


def test_update_interrupts_the_retries(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    # "... creation failure intercepted by update": the image is corrected
    emu, hello_id = retrying(make_emulator, tmp_path)
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        log.wait_for(lambda s: bool(retries(s, hello_id)))
        [workload] = ank.get_workload("hello1")
        config = workload.to_dict()["runtimeConfig"]
        workload.update_runtime_config(config.replace("image_typo:latest", ALPINE))
        [added] = ank.apply_workload(workload).added_workloads
        log.wait_for(lambda s: s.last("hello1", added.workload_id) == "SUCCEEDED_OK", timeout=10)
        assert log.last("hello1", hello_id) == REMOVED
        # The old instance's retries ended with it.
        count = len(retries(log, hello_id))
        with pytest.raises(TimeoutError):
            log.wait_for(lambda s: len(retries(s, hello_id)) > count, timeout=1.5)
    assert emu.instance_names("hello1") == [f"hello1.{added.workload_id}.agent_A"]


def test_delete_interrupts_the_retries(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    # "... creation failure intercepted by delete"
    emu, hello_id = retrying(make_emulator, tmp_path)
    with Ankaios() as ank:
        log = StateLog(ank.register_event(["workloadStates"]))
        log.wait_for(lambda s: bool(retries(s, hello_id)))
        ank.delete_workload("hello1")
        log.wait_for(lambda s: s.last("hello1", hello_id) == REMOVED)
        after = len(log.seen)
        assert log.of("hello1")[-2:] == [("STOPPING_REQUESTED_AT_RUNTIME", ""), (REMOVED, "")]
        with pytest.raises(TimeoutError):
            log.wait_for(lambda s: len(s.seen) > after, timeout=1.5)
    assert emu.instance_names("hello1") == []


FAKE_PODMAN = """\
#!/bin/sh
case "$1" in
  run) echo "Error: image_typo:latest: image not known" >&2; exit 125 ;;
  ps) echo "[]" ;;
esac
exit 0
"""


def test_podman_run_failure_is_retried(tmp_path: Path) -> None:
    podman = tmp_path / "podman"
    podman.write_text(FAKE_PODMAN)
    podman.chmod(podman.stat().st_mode | stat.S_IXUSR)
    reports: queue.Queue[ExecState] = queue.Queue()
    scheduler = Scheduler()
    runtime = PodmanRuntime(lambda _w, state: reports.put(state), scheduler, podman=str(podman))
    workload = RenderedWorkload(
        name="hello1",
        agent="agent_A",
        runtime="podman",
        runtime_config="image: image_typo:latest",
        restart_policy="NEVER",
        dependencies={},
        tags={},
        control_interface_access={},
        files=[],
    )
    try:
        runtime.start(workload, None)
        assert reports.get(timeout=5) == ExecState("Pending", "Starting", "Triggered at runtime.")
        message = "podman run failed: Error: image_typo:latest: image not known"
        assert reports.get(timeout=5) == ExecState("Pending", "Starting", f"Retry 1: {message}")
        assert reports.get(timeout=5) == ExecState("Pending", "Starting", f"Retry 2: {message}")
        runtime.stop(workload)
        # A retry may be under way; after the removal nothing more comes.
        state = reports.get(timeout=5)
        while state.info.startswith("Retry"):
            state = reports.get(timeout=5)
        assert state == ExecState("Removed", "Removed")
        done = threading.Event()
        scheduler.call_later(1.5, done.set)
        assert done.wait(5)
        assert reports.empty()
    finally:
        runtime.shutdown()
        scheduler.stop()
