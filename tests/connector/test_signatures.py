"""Signed requests: each way a signature can fail is refused, and nothing reaches Ankaios."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from testkit import MANIFESTS, Broker, Requester
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Connector, config
from fleet_connector.errors import ErrorCode, RequestError
from fleet_connector.journal.store import Store
from fleet_connector.mqtt.topics import Operation
from fleet_connector.options import ConfigError
from fleet_connector.requests.signatures import ENVELOPE_MAGIC, Claims, SigningKey, Verifier, sign

SENDER = "vehicle-data-sender"
TUTORIAL = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("ops-1")


@pytest.fixture
def trusted(tmp_path: Path, key: SigningKey) -> Path:
    path = tmp_path / "trusted-keys"
    path.write_text(f"# operators\n{key.trusted_line()}\n")
    return path


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def signed_car(
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    trusted: Path,
    state_dir: Path,
) -> Callable[..., Connector]:
    def start(**overrides: Any) -> Connector:
        return start_connector(
            emulator.control_interface, trusted_keys=trusted, state_dir=state_dir, **overrides
        )

    return start


class Signer:
    """Signs requests for the test's car as an operator would."""

    def __init__(self, vin: str) -> None:
        self.vin = vin

    def claims(
        self,
        key: SigningKey,
        operation: Operation = Operation.APPLY,
        targets: tuple[str, ...] | None = None,
        counter: int = 1,
        valid_for: int = 300,
    ) -> Claims:
        deadline = int(time.time()) + valid_for
        return Claims(key.key_id, operation, targets or (self.vin,), counter, deadline)

    def envelope(self, key: SigningKey, payload: bytes = TUTORIAL, **kwargs: Any) -> bytes:
        return sign(key, self.claims(key, **kwargs), payload).envelope()


@pytest.fixture
def signer(vin: str) -> Signer:
    return Signer(vin)


def refusal(reply: Any) -> str:
    assert reply["error"]["code"] == "SIGNATURE_INVALID", reply
    message: str = reply["error"]["message"]
    assert message.startswith("signature refused: ")
    return message.removeprefix("signature refused: ")


def workloads(emulator: Emulator) -> dict[str, Any]:
    desired = emulator.complete_state(["desiredState"])["desiredState"]
    result: dict[str, Any] = desired.get("workloads", {})
    return result


def test_signed_envelope_is_carried_out(
    signed_car: Callable[..., Connector],
    emulator: Emulator,
    requester: Requester,
    key: SigningKey,
    signer: Signer,
) -> None:
    signed_car()
    applied = requester.apply(signer.envelope(key))
    assert [w["workload_name"] for w in applied["added_workloads"]] == [SENDER]
    assert SENDER in workloads(emulator)
    removed = requester.delete(signer.envelope(key, operation=Operation.DELETE, counter=2))
    assert [w["workload_name"] for w in removed["deleted_workloads"]] == [SENDER]


def test_signed_with_mqtt5_user_properties(
    signed_car: Callable[..., Connector],
    emulator: Emulator,
    requester: Requester,
    key: SigningKey,
    signer: Signer,
) -> None:
    signed_car()
    signed = sign(key, signer.claims(key), TUTORIAL)
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = signed.user_properties()
    requester.probe.publish(requester.topics.request(Operation.APPLY), TUTORIAL, 1, properties)
    reply = requester.probe.expect(requester.topics.response(Operation.APPLY)).payload
    assert b"added_workloads" in reply
    assert SENDER in workloads(emulator)

    # Properties and an envelope at once: refused, whichever would verify.
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.UserProperty = sign(key, signer.claims(key, counter=5), TUTORIAL).user_properties()
    requester.probe.publish(
        requester.topics.request(Operation.APPLY), signer.envelope(key, counter=6), 1, properties
    )
    reply = requester.probe.expect(requester.topics.response(Operation.APPLY)).payload
    assert "either by user properties or by an envelope" in refusal(_json(reply))


def _json(payload: bytes) -> Any:
    return json.loads(payload)


def test_each_refusal_says_which_check_failed_and_changes_nothing(
    signed_car: Callable[..., Connector],
    emulator: Emulator,
    requester: Requester,
    key: SigningKey,
    signer: Signer,
) -> None:
    signed_car()
    before = update_requests(emulator)
    stranger = SigningKey.generate("stranger")
    impostor = SigningKey.generate("ops-1")  # a trusted id, but not the trusted key
    good = signer.envelope(key, counter=10)
    altered = good.replace(b"INTERVAL", b"INTERVAK")
    assert altered != good
    cases = [
        (signer.envelope(stranger), "key 'stranger' is not trusted by this car"),
        (signer.envelope(impostor), "it does not match the request: altered, or not made with key"),
        (altered, "it does not match the request: altered"),
        (signer.envelope(key, targets=("2",)), f"it was made for VIN 2, not {signer.vin}"),
        (signer.envelope(key, targets=("2", "3")), f"it was made for VIN 2,3, not {signer.vin}"),
        (
            signer.envelope(key, operation=Operation.PLAN),
            "it was made for manifest/plan, not manifest/apply",
        ),
        (signer.envelope(key, valid_for=-10), "it expired at "),
        (good.replace(b"counter: 10", b"counter: 11"), "it does not match the request"),
        (good.replace(b"\n\n", b"\nextra: 1\n\n", 1), "a line that is not a known field"),
        (ENVELOPE_MAGIC + b"key: ops-1\n\n" + TUTORIAL, "the field 'operation' is missing"),
        (good.replace(b"counter: 10", b"counter: 010"), "counter must be a whole number"),
    ]
    for payload, expected in cases:
        assert expected in refusal(requester.apply(payload)), expected
    assert update_requests(emulator) == before
    assert workloads(emulator) == {}

    # The good one still works: none of the refused ones used up its counter.
    assert "added_workloads" in requester.apply(good)
    # A replay, and an older counter, are refused.
    assert "counter 10 of key 'ops-1' is not above the last one accepted (10)" in refusal(
        requester.apply(good)
    )
    assert "a replay" in refusal(requester.apply(signer.envelope(key, counter=9)))


def test_a_plan_signature_is_no_apply_signature_and_plans_stay_open(
    signed_car: Callable[..., Connector],
    emulator: Emulator,
    requester: Requester,
    key: SigningKey,
    signer: Signer,
) -> None:
    signed_car(require_signed=True)
    # Unsigned: plans and state reads are answered (they change nothing) ...
    assert requester.call(Operation.PLAN, TUTORIAL)["workloads"][SENDER]["action"] == "create"
    assert "desired_state" in requester.state(["desiredState.workloads"])
    # ... apply and delete are not.
    for operation in (Operation.APPLY, Operation.DELETE):
        assert refusal(requester.call(operation, TUTORIAL)) == (
            f"this car carries out {operation.value} requests only when they are signed "
            "(REQUIRE_SIGNED)"
        )
    # A signed plan is checked like any signature, and cannot be replayed as an apply.
    plan = signer.envelope(key, operation=Operation.PLAN, counter=1)
    assert "workloads" in requester.call(Operation.PLAN, plan)
    assert "made for manifest/plan, not manifest/apply" in refusal(requester.apply(plan))
    assert workloads(emulator) == {}
    assert "added_workloads" in requester.apply(signer.envelope(key, counter=2))


def test_counter_survives_a_restart(
    signed_car: Callable[..., Connector], requester: Requester, key: SigningKey, signer: Signer
) -> None:
    first = signed_car()
    request = signer.envelope(key, counter=7)
    assert "added_workloads" in requester.apply(request)
    first.stop()
    signed_car()
    assert "not above the last one accepted (7)" in refusal(requester.apply(request))
    assert "added_workloads" in requester.apply(signer.envelope(key, counter=8))


def test_key_rotation_with_two_trusted_keys(
    signed_car: Callable[..., Connector],
    requester: Requester,
    key: SigningKey,
    trusted: Path,
    signer: Signer,
) -> None:
    new = SigningKey.generate("ops-2")
    trusted.write_text(f"{key.trusted_line()}\n{new.trusted_line()}\n")
    signed_car()
    assert "added_workloads" in requester.apply(signer.envelope(key, counter=50))
    # Counters are per key: the new key starts at 1.
    assert "added_workloads" in requester.apply(signer.envelope(new, counter=1))
    # Dropping the old key takes effect without a restart.
    trusted.write_text(f"{new.trusted_line()}\n")
    assert "not trusted" in refusal(requester.apply(signer.envelope(key, counter=51)))


def test_every_car_and_the_mosquitto_pub_file_form(
    signed_car: Callable[..., Connector],
    *,
    broker: Broker,
    requester: Requester,
    key: SigningKey,
    tmp_path: Path,
    signer: Signer,
) -> None:
    signed_car()
    signed = tmp_path / "signed-apply.txt"
    signed.write_bytes(signer.envelope(key, targets=("*",)))
    topic = requester.topics.request(Operation.APPLY)
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            topic,
            "-f",
            str(signed),
        ],
        check=True,
        timeout=10,
    )
    reply = _json(requester.probe.expect(requester.topics.response(Operation.APPLY)).payload)
    assert [w["workload_name"] for w in reply["added_workloads"]] == [SENDER]


def test_an_unconfigured_car_refuses_signed_requests(
    connector: Connector, emulator: Emulator, requester: Requester, key: SigningKey, signer: Signer
) -> None:
    assert "no TRUSTED_KEYS" in refusal(requester.apply(signer.envelope(key)))
    assert workloads(emulator) == {}


def test_configuration_checks(tmp_path: Path, trusted: Path) -> None:
    with pytest.raises(ConfigError, match="TRUSTED_KEYS needs STATE_DIR"):
        config.load(["--vin", "1", "--trusted-keys", str(trusted)], {})
    with pytest.raises(ConfigError, match="REQUIRE_SIGNED needs TRUSTED_KEYS"):
        config.load(["--vin", "1"], {"REQUIRE_SIGNED": "true"})
    bad = tmp_path / "bad-keys"
    bad.write_text("ops-1 rsa AAAA\n")
    with pytest.raises(ConfigError, match="expected '<key id> ed25519 <base64 key>'"):
        config.load(["--vin", "1", "--state-dir", str(tmp_path)], {"TRUSTED_KEYS": str(bad)})
    loaded = config.load(
        ["--vin", "1", "--require-signed"],
        {"TRUSTED_KEYS": str(trusted), "STATE_DIR": str(tmp_path / "s")},
    )
    assert loaded.require_signed
    assert loaded.trusted_keys == trusted


# -- fuzz -------------------------------------------------------------------------------------

_FIELD_LINES = st.sampled_from(
    [
        b"key: ops-1\n",
        b"key: \n",
        b"operation: manifest/apply\n",
        b"operation: state\n",
        b"target: 1\n",
        b"target: *\n",
        b"target: 1,,2\n",
        b"counter: 1\n",
        b"counter: 99999999999999999999\n",
        b"not-after: 99999999999\n",
        b"not-after: -1\n",
        b"signature: " + b"A" * 86 + b"==\n",
        b"signature: !!\n",
    ]
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(_FIELD_LINES, st.binary(max_size=40)), max_size=9))
    separator = draw(st.sampled_from([b"\n", b"", b"\r\n"]))
    payload = draw(st.one_of(st.just(TUTORIAL), st.binary(max_size=200)))
    return ENVELOPE_MAGIC + b"".join(lines) + separator + payload


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verifier]:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "keys").write_text(SigningKey.generate("ops-1").trusted_line() + "\n")
    store = Store(directory / "state")
    yield Verifier("1", directory / "keys", store)
    store.close()


@settings(max_examples=3000, deadline=None)
@given(data=envelopes(), operation=st.sampled_from(list(Operation)))
def test_fuzzed_envelopes_are_always_refused(
    verifier: Verifier, data: bytes, operation: Operation
) -> None:
    with pytest.raises(RequestError) as info:
        verifier.admit(operation, data)
    assert info.value.code is ErrorCode.SIGNATURE_INVALID


@pytest.fixture
def running_signed_car(signed_car: Callable[..., Connector]) -> Connector:
    return signed_car()


# Function-scoped fixtures are shared by all examples here on purpose: one car, one broker.
@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=envelopes())
def test_fuzzed_envelopes_through_the_broker_get_an_error_reply(
    running_signed_car: Connector, requester: Requester, data: bytes
) -> None:
    refusal(requester.apply(data))
