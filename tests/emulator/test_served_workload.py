"""The control interface of the served workload: kept across reopened FIFOs, its own rules.

Clients of our own speak raw protobuf (as Ankaios's Node.js and Python examples do); the
unmodified SDK checks the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from ankaios_sdk import Ankaios, AnkaiosResponseError, ControlInterfaceException, Manifest
from ankaios_sdk._protos import _ank_base as ank_base
from ankaios_sdk._protos import _control_api as control_api
from emulator.ci_client import (
    NGINX_MANIFEST,
    MakeEmulator,
    RawClient,
    add_workload,
    connector_state,
)

Connect = Callable[..., RawClient]


def state_request(rid: str, subscribe: bool = False) -> Any:
    return control_api.ToAnkaios(
        request=ank_base.Request(
            requestId=rid,
            completeStateRequest=ank_base.CompleteStateRequest(
                fieldMask=["desiredState.workloads"], subscribeForEvents=subscribe
            ),
        )
    )


def kind(message: Any) -> str:
    return str(message.WhichOneof("FromAnkaiosEnum"))


def test_a_client_reopening_output_per_message_keeps_its_session(
    make_emulator: MakeEmulator, raw_client: Connect
) -> None:
    emu = make_emulator()
    client = raw_client(emu.control_interface, reopen_output=True)
    client.hello()
    assert kind(client.read()) == "controlInterfaceAccepted"
    emu.wait_for(lambda e: e.session().client_left)

    client.send(state_request("sub", subscribe=True))
    assert client.read().response.requestId == "sub"
    emu.wait_for(lambda e: e.session().client_left)
    # Still the same session: no second handshake, and the subscription lives on.
    client.send(add_workload("add", "nginx"))
    event = client.read().response
    assert event.requestId == "sub"
    assert list(event.completeStateResponse.alteredFields.addedFields) == [
        "desiredState.workloads.nginx"
    ]
    assert client.read().response.requestId == "add"
    hellos = [m for m in emu.requests if m.WhichOneof("ToAnkaiosEnum") == "hello"]
    assert len(hellos) == 1
    assert not client.saw_eof


def test_closing_output_leaves_input_open(make_emulator: MakeEmulator, raw_client: Connect) -> None:
    emu = make_emulator()
    client = raw_client(emu.control_interface)
    client.stop_at_eof = True
    client.hello()
    assert kind(client.read()) == "controlInterfaceAccepted"
    # The answer comes after the emulator noticed that output was closed.
    emu.faults.delay = 0.3
    client.send(state_request("late"))
    client.close_output()
    emu.wait_for(lambda e: e.session().client_left)
    assert client.read().response.requestId == "late"


def test_a_restarted_client_is_accepted_again(
    make_emulator: MakeEmulator, raw_client: Connect
) -> None:
    emu = make_emulator()
    first = raw_client(emu.control_interface)
    first.hello()
    assert kind(first.read()) == "controlInterfaceAccepted"
    first.close()
    emu.wait_for(lambda e: e.session().client_left)
    second = raw_client(emu.control_interface)
    second.hello()
    assert kind(second.read()) == "controlInterfaceAccepted"


SERVED = connector_state('StateRule, operation: Read, filterMasks: ["desiredState"]')
NGINX = NGINX_MANIFEST


def test_the_served_workloads_own_rules_decide(make_emulator: MakeEmulator) -> None:
    make_emulator(state=SERVED)
    with Ankaios() as ank:
        assert (
            "fleetconnector"
            in ank.get_state(["desiredState"]).to_dict()["desired_state"]["workloads"]
        )
        with pytest.raises(AnkaiosResponseError, match="Access denied"):
            ank.get_state(["agents"])
        with pytest.raises(AnkaiosResponseError, match="Access denied"):
            ank.apply_manifest(Manifest.from_string(NGINX))


def test_access_overrides_the_workloads_rules(make_emulator: MakeEmulator) -> None:
    everything = {
        "allowRules": [{"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]}]
    }
    emu = make_emulator(state=SERVED, access=everything)
    with Ankaios() as ank:
        ank.apply_manifest(Manifest.from_string(NGINX))
    assert "nginx" in emu.complete_state()["desiredState"]["workloads"]


WITHOUT_RULES = connector_state(None)


@pytest.mark.parametrize("arguments", [{"state": WITHOUT_RULES}, {"access": {"allowRules": []}}])
def test_no_allow_rules_no_control_interface(
    make_emulator: MakeEmulator, arguments: dict[str, Any]
) -> None:
    emu = make_emulator(**arguments)
    assert not (emu.control_interface / "input").exists()
    assert not (emu.control_interface / "output").exists()
    with pytest.raises(ControlInterfaceException, match="input fifo does not exist"):
        Ankaios()
