"""Transport, handshake and connection faults, with raw clients and the real SDK."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ankaios_sdk import Ankaios, AnkaiosResponseError, ConnectionClosedException, Manifest
from ankaios_sdk._protos import _ank_base as ank_base
from ankaios_sdk._protos import _control_api as control_api
from emulator.ci_client import NGINX_MANIFEST, MakeEmulator, RawClient

from ankaios_emulator import Emulator, SessionState

Connect = Callable[[Path], RawClient]
MANIFEST = NGINX_MANIFEST


def closed_reason(message: control_api.FromAnkaios) -> str:
    assert message.WhichOneof("FromAnkaiosEnum") == "connectionClosed"
    return str(message.connectionClosed.reason)


def accepted(message: control_api.FromAnkaios) -> bool:
    return message.WhichOneof("FromAnkaiosEnum") == "controlInterfaceAccepted"


def request(rid: str, **content: object) -> control_api.ToAnkaios:
    return control_api.ToAnkaios(request=ank_base.Request(requestId=rid, **content))


# -- handshake -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["1.0.0", "1.0.1", "1.7.3", "1.0.0-rc.1+build.007", "1.0.0-0a.x-y", "1.0.0--"]
)
def test_hello_with_major_1_is_accepted(emu: Emulator, raw_client: Connect, version: str) -> None:
    client = raw_client(emu.control_interface)
    client.hello(version)
    assert accepted(client.read())
    emu.wait_for(lambda e: e.connected)


@pytest.mark.parametrize(
    "version",
    [
        "0.7.0",
        "2.0.0",
        "1.0",
        "one",
        # semver::Version::parse is strict SemVer 2.0:
        "1.0.0-",  # empty pre-release
        "1.0.0-rc.01",  # leading zero in a numeric pre-release identifier
        "1.0.0-rc..1",  # empty identifier
        "1.0.0+",  # empty build metadata
        "1.0.0-a_b",  # only ASCII alphanumerics and hyphen
        "1.0.0-\u03b1",
        "\uff11.0.0",  # full-width digit
        "01.0.0",
        "1.0.0\n",
        "1.18446744073709551616.0",  # minor overflows u64
    ],
)
def test_wrong_hello_version_closes_with_reason(
    emu: Emulator, raw_client: Connect, version: str
) -> None:
    client = raw_client(emu.control_interface)
    client.hello(version)
    assert closed_reason(client.read()) == (
        f"Unsupported protocol version '{version}'. Currently supported '1'"
    )
    assert not emu.connected


def test_request_before_hello_closes_with_reason(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.send(request("r1", completeStateRequest=ank_base.CompleteStateRequest()))
    assert closed_reason(client.read()) == "Initial Hello missing!"


def test_garbage_first_frame_closes_with_reason(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.send_bytes(b"\x03\xff\xff\xff")
    assert closed_reason(client.read()) == "Could not decode protobuf data"


def test_after_handshake_garbage_and_second_hello_are_ignored(
    emu: Emulator, raw_client: Connect
) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    assert accepted(client.read())
    client.send_bytes(b"\x03\xff\xff\xff")
    client.hello("1.0.0")
    client.send(request("r2", completeStateRequest=ank_base.CompleteStateRequest()))
    answer = client.read()
    # No second ControlInterfaceAccepted: the next frame is the answer.
    assert answer.response.requestId == "r2"
    assert answer.response.WhichOneof("ResponseContent") == "completeStateResponse"


def test_second_hello_with_bad_version_closes(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    assert accepted(client.read())
    client.hello("0.5.0")
    assert (
        closed_reason(client.read())
        == "Unsupported protocol version '0.5.0'. Currently supported '1'"
    )


# -- server error strings through a raw client ----------------------------------------


def test_request_without_content_is_denied_by_the_agent(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    client.read()
    client.send(request("empty"))
    answer = client.read().response
    assert (answer.requestId, answer.error.message) == ("empty", "Access denied")


def test_server_answers_content_less_request_with_its_error(emu: Emulator) -> None:
    # Reachable only behind the agent's authorizer, i.e. never from a workload.
    sent: list[ank_base.Response] = []

    class Capture:
        workload_name = "x"

        def send_response(
            self, response: ank_base.Response, on_undeliverable: object = None
        ) -> None:
            sent.append(response)

    emu.handle_request(Capture(), ank_base.Request(requestId="n"))  # type: ignore[arg-type]
    assert sent[0].error.message == "The Request does not contain any content"


def test_update_without_new_state(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    client.read()
    client.send(
        request("u1", updateStateRequest=ank_base.UpdateStateRequest(updateMask=["desiredState"]))
    )
    assert client.read().response.error.message == (
        "The UpdateStateRequest does not contain a new state"
    )


def test_update_with_unsupported_api_version(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    client.read()
    state = ank_base.CompleteState(desiredState=ank_base.State(apiVersion="v2"))
    client.send(
        request(
            "u2",
            updateStateRequest=ank_base.UpdateStateRequest(
                newState=state, updateMask=["desiredState.apiVersion"]
            ),
        )
    )
    assert client.read().response.error.message == (
        "Unsupported API version. Received 'v2', expected 'v1'"
    )


# -- the SDK ---------------------------------------------------------------------------


def test_sdk_records_requests(emu: Emulator) -> None:
    with Ankaios() as ank:
        ank.get_state(["desiredState.workloads"])
    kinds = [m.WhichOneof("ToAnkaiosEnum") for m in emu.requests]
    assert kinds[:2] == ["hello", "request"]
    assert list(emu.requests[1].request.completeStateRequest.fieldMask) == [
        "desiredState.workloads"
    ]


def test_workload_restarting_on_the_same_directory_is_served_again(emu: Emulator) -> None:
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(MANIFEST))
    # A restarted process comes after its predecessor closed output (as a container does).
    emu.wait_for(lambda e: e.session().client_left)
    with Ankaios() as ank:
        assert (
            "nginx"
            in ank.get_state(["desiredState.workloads"]).to_dict()["desired_state"]["workloads"]
        )
    hellos = [m for m in emu.requests if m.WhichOneof("ToAnkaiosEnum") == "hello"]
    assert len(hellos) == 2


def test_strict_reconnect_mode_does_not_accept_again(make_emulator: MakeEmulator) -> None:
    emu = make_emulator(reaccept_on_reconnect=False)
    with Ankaios():
        pass
    # Ankaios 1.0.1 keeps the task's handshake: the second Hello gets no answer and the
    # SDK gives up after its 5 s connect timeout.
    started = time.monotonic()
    with pytest.raises(ConnectionClosedException, match="timed out"):
        Ankaios()
    assert time.monotonic() - started >= 5
    assert emu.session().state is SessionState.CONNECTED


def test_sdk_recovers_from_an_agent_restart(emu: Emulator) -> None:
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(MANIFEST))
        emu.restart_agent()
        emu.wait_for(lambda e: e.connected, timeout=5)
        hellos = [m for m in emu.requests if m.WhichOneof("ToAnkaiosEnum") == "hello"]
        assert len(hellos) >= 2
        deadline = time.monotonic() + 5
        while not ank._control_interface.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        state = ank.get_state(["desiredState.workloads.nginx"])
        assert "nginx" in state.to_dict()["desired_state"]["workloads"]


def test_close_connection_reaches_the_sdk(emu: Emulator) -> None:
    with Ankaios() as ank:
        emu.close_connection("Agent shutting down")
        emu.wait_for(lambda e: not e.connected)
        deadline = time.monotonic() + 5
        while ank._control_interface.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ConnectionClosedException):
            ank.get_state()


def test_delayed_and_dropped_responses(emu: Emulator) -> None:
    with Ankaios() as ank:
        emu.faults.delay = 0.5
        started = time.monotonic()
        ank.get_state(["agents"])
        assert time.monotonic() - started >= 0.5
        with pytest.raises(TimeoutError):
            ank.get_state(["agents"], timeout=0.2)
        emu.faults.delay = 0
        emu.faults.drop = True
        with pytest.raises(TimeoutError):
            ank.get_state(["agents"], timeout=0.5)
        emu.faults.drop = False
        assert "agent_A" in ank.get_agents()


def test_response_with_unknown_id_is_skipped_by_the_sdk(emu: Emulator) -> None:
    with Ankaios() as ank:
        emu.send_frame(
            control_api.FromAnkaios(
                response=ank_base.Response(requestId="nobody", error=ank_base.Error(message="x"))
            )
        )
        assert "agent_A" in ank.get_agents()


def test_a_1mb_frame_arrives_whole(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    assert accepted(client.read())
    big = control_api.FromAnkaios(
        response=ank_base.Response(
            requestId="big", error=ank_base.Error(message="x" * (1024 * 1024))
        )
    )
    emu.send_frame(big)
    payload = client.read_payload(timeout=10)
    assert payload == big.SerializeToString()
    assert len(payload) > 1024 * 1024


def test_garbage_bytes_reach_the_client(emu: Emulator, raw_client: Connect) -> None:
    client = raw_client(emu.control_interface)
    client.hello()
    assert accepted(client.read())
    emu.send_garbage(b"\x02\xff\xff")
    assert client.read_payload() == b"\xff\xff"


def test_access_denied_error_via_sdk(make_emulator: MakeEmulator) -> None:
    make_emulator(
        access={"allowRules": [{"type": "StateRule", "operation": "Read", "filterMasks": ["*"]}]}
    )
    with Ankaios() as ank, pytest.raises(AnkaiosResponseError, match="Access denied"):
        ank.apply_manifest(Manifest.from_string(MANIFEST))
