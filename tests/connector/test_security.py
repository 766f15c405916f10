"""Transport security: TLS, mutual TLS with the shipped ACL, user name and password."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import yaml
from testkit import MANIFESTS, Broker, MqttProbe, Requester, free_port, wait_for_port
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.mqtt.broker import BrokerSettings
from fleet_connector.mqtt.topics import Operation, Topics

DEPLOY = Path(__file__).parents[2] / "deploy" / "mosquitto"
SENDER = (MANIFESTS / "vehicle-data-sender.yaml").read_bytes()


@dataclass
class Pki:
    directory: Path
    ca: trustme.CA
    operators_ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def identity(self, name: str, *, operator: bool = False) -> BrokerSettings:
        """TLS settings of a client whose certificate has CN=name (a car's, unless operator)."""
        ca = self.operators_ca if operator else self.ca
        cert = ca.issue_cert(f"{name}.example", common_name=name)
        cert_file = self.directory / f"{name}.crt"
        key_file = self.directory / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        return BrokerSettings(
            host="127.0.0.1",
            tls=True,
            tls_ca_file=self.ca_file,
            tls_cert_file=cert_file,
            tls_key_file=key_file,
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    operators_ca = trustme.CA()
    directory = tmp_path / "pki"
    directory.mkdir()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    operators_ca.cert_pem.write_to_path(str(directory / "operators-ca.crt"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    return Pki(directory, ca, operators_ca)


def shipped_config(pki: Pki, port: int, operator_port: int, data: Path | None = None) -> str:
    """The shipped mosquitto.conf with this test's paths and ports (and persistence where
    ``data`` is given)."""
    (pki.directory / "acl").write_text((DEPLOY / "acl").read_text())
    config = (
        (DEPLOY / "mosquitto.conf")
        .read_text()
        .replace("/etc/mosquitto/fleet", str(pki.directory))
        .replace("listener 8883", f"listener {port} 127.0.0.1")
        .replace("listener 8884", f"listener {operator_port} 127.0.0.1")
    )
    if data is None:
        return config.replace("persistence true", "persistence false")
    return config.replace("/var/lib/mosquitto/", f"{data}/")


def start_shipped(
    make_broker: Callable[..., Broker],
    pki: Pki,
    ports: tuple[int, int],
    data: Path | None = None,
) -> Broker:
    """Mosquitto with the shipped configuration on ``ports`` (cars, operators); the
    operators' port is ``operator_port``."""
    broker = make_broker(port=ports[0], config_text=shipped_config(pki, *ports, data=data))
    wait_for_port(broker.host, ports[1])
    broker.operator_port = ports[1]  # type: ignore[attr-defined]
    return broker


@pytest.fixture
def fleet_broker(pki: Pki, make_broker: Callable[..., Broker]) -> Broker:
    """Mosquitto with the shipped configuration and ACL, on free ports."""
    return start_shipped(make_broker, pki, (free_port(), free_port()))


def tls_connector(
    settings: BrokerSettings, broker: Broker, vin: str, emulator: Emulator
) -> Connector:
    config = Config(
        vin=vin,
        broker=BrokerSettings(**{**settings.__dict__, "port": broker.port}),
        control_interface=emulator.control_interface,
    )
    connector = Connector(config)
    connector.start()
    return connector


@pytest.fixture
def car1(pki: Pki, fleet_broker: Broker, tmp_path: Path) -> Iterator[Connector]:
    """Car 1's connector on the shipped broker; its emulated Ankaios is ``car1.emulator``."""
    with Emulator(control_interface=tmp_path / "car1") as emulator:
        connector = tls_connector(pki.identity("car1"), fleet_broker, "car1", emulator)
        connector.emulator = emulator  # type: ignore[attr-defined]
        try:
            assert connector.mqtt.wait_subscribed(10)
            yield connector
        finally:
            connector.stop()


def probe_as(pki: Pki, broker: Broker, name: str, client_id: str | None = None) -> MqttProbe:
    """A client with the certificate CN=name: "operator" on the operators' listener, any
    other name as a car."""
    operator = name == "operator"
    settings = pki.identity(name, operator=operator)
    port = broker.operator_port if operator else broker.port  # type: ignore[attr-defined]
    return MqttProbe(
        broker,
        settings=BrokerSettings(**{**settings.__dict__, "port": port}),
        client_id=client_id,
    )


def test_operator_drives_a_car_over_mutual_tls(
    pki: Pki, fleet_broker: Broker, car1: Connector
) -> None:
    operator = probe_as(pki, fleet_broker, "operator")
    try:
        requester = Requester(operator, "car1")
        applied = requester.apply((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
        assert applied["added_workloads"][0]["workload_name"] == "vehicle-data-sender"
        assert (
            "vehicle-data-sender"
            in car1.emulator.complete_state(["desiredState"])["desiredState"]["workloads"]
        )
    finally:
        operator.close()


def test_a_car_can_neither_read_nor_write_another_cars_topics(
    pki: Pki, fleet_broker: Broker, car1: Connector
) -> None:
    intruder = probe_as(pki, fleet_broker, "car2")
    operator = probe_as(pki, fleet_broker, "operator")
    try:
        intruder.subscribe("vehicle/car1/#")
        # Writing: car2 sends an apply request to car1; it never reaches car1.
        intruder.publish("vehicle/car1/manifest/apply/req/intrusion", b"apiVersion: v1")
        # Reading: the operator's exchange with car1 is invisible to car2.
        requester = Requester(operator, "car1")
        assert "workload_states" in requester.state(["workloadStates"])
        intruder.expect_nothing(1.0)
        assert update_requests(car1.emulator) == 0
        # car2 still uses its own topics.
        intruder.subscribe("vehicle/car2/echo")
        intruder.publish("vehicle/car2/echo", b"mine")
        assert intruder.expect("vehicle/car2/echo").payload == b"mine"
    finally:
        intruder.close()
        operator.close()


def test_client_without_certificate_is_refused(fleet_broker: Broker, pki: Pki) -> None:
    settings = BrokerSettings(
        host="127.0.0.1", port=fleet_broker.port, tls=True, tls_ca_file=pki.ca_file
    )
    with pytest.raises((ConnectionError, OSError)):
        MqttProbe(fleet_broker, settings=settings)


def test_server_certificate_is_verified(
    fleet_broker: Broker, tmp_path: Path, car1: Connector
) -> None:
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.crt"))
    settings = BrokerSettings(
        host="127.0.0.1", port=fleet_broker.port, tls=True, tls_ca_file=tmp_path / "other-ca.crt"
    )
    with pytest.raises((ConnectionError, OSError)):
        MqttProbe(fleet_broker, settings=settings)


@pytest.fixture
def password_broker(make_broker: Callable[..., Broker], tmp_path: Path) -> Broker:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "car1", "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "operator", "op-pass"], check=True)
    port = free_port()
    return make_broker(
        port=port,
        config_text=(
            "per_listener_settings false\npersistence false\nallow_anonymous false\n"
            f"password_file {passwd}\nlistener {port} 127.0.0.1\n"
        ),
    )


def test_username_and_password_from_a_file(
    password_broker: Broker, tmp_path: Path, vin: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {
        **os.environ,
        "VIN": vin,
        "MQTT_BROKER_ADDR": "127.0.0.1",
        "MQTT_BROKER_PORT": str(password_broker.port),
        "MQTT_USERNAME": "car1",
        "MQTT_PASSWORD_FILE": str(secret),
    }
    from fleet_connector.config import load

    config = load([], env)
    assert config.broker.password == "s3cret"
    assert "s3cret" not in config.broker.describe()
    with Emulator(control_interface=tmp_path / "ci") as emu:
        connector = Connector(
            Config(
                vin=vin,
                broker=config.broker,
                control_interface=emu.control_interface,
            )
        )
        connector.start()
        try:
            assert connector.mqtt.wait_subscribed(10)
            operator = MqttProbe(
                password_broker,
                settings=BrokerSettings(
                    host="127.0.0.1",
                    port=password_broker.port,
                    username="operator",
                    password="op-pass",
                ),
            )
            try:
                reply = Requester(operator, vin).call(Operation.STATE, '["workloadStates"]')
                assert "workload_states" in reply
            finally:
                operator.close()
        finally:
            connector.stop()


def test_wrong_password_is_refused_and_the_connector_keeps_trying(
    password_broker: Broker, tmp_path: Path, vin: str
) -> None:
    with pytest.raises(ConnectionRefusedError):
        MqttProbe(
            password_broker,
            settings=BrokerSettings(
                host="127.0.0.1", port=password_broker.port, username="car1", password="wrong"
            ),
        )
    with Emulator(control_interface=tmp_path / "ci") as emu:
        connector = Connector(
            Config(
                vin=vin,
                broker=BrokerSettings(
                    host="127.0.0.1",
                    port=password_broker.port,
                    username="car1",
                    password="wrong",
                ),
                control_interface=emu.control_interface,
            )
        )
        connector.start()
        try:
            assert not connector.mqtt.wait_subscribed(2)
            assert connector.control_interface.connected
        finally:
            connector.stop()


def test_sender_publishes_over_mutual_tls_within_its_own_topics(
    pki: Pki, fleet_broker: Broker
) -> None:
    from vehicle_data_sender.config import Config as SenderConfig
    from vehicle_data_sender.sender import Sender

    operator = probe_as(pki, fleet_broker, "operator")
    settings = pki.identity("car1")
    tls = BrokerSettings(**{**settings.__dict__, "port": fleet_broker.port})
    # One after the other: on the cars' listener one certificate holds one connection.
    foreign = Sender(SenderConfig(topic="vehicle/car2/sensors/speed", broker=tls, interval=0.05))
    own = Sender(SenderConfig(topic="vehicle/car1/sensors/speed", broker=tls, interval=0.05))
    try:
        operator.subscribe("vehicle/+/sensors/speed")
        foreign.start()
        deadline = time.monotonic() + 10
        while foreign.published < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert foreign.published >= 10
        foreign.stop()
        own.start()
        # The ACL dropped what car1 published under car2's topics: the first value the
        # operator sees is car1's own.
        first = operator.expect()
        assert (first.topic, first.payload) == ("vehicle/car1/sensors/speed", b"1")
        for _ in range(10):
            assert operator.expect().topic == "vehicle/car1/sensors/speed"
    finally:
        own.stop()
        foreign.stop()
        operator.close()


def test_a_car_cannot_take_over_another_cars_session(
    pki: Pki, fleet_broker: Broker, car1: Connector
) -> None:
    # car2, with its own valid certificate, connects with car1's predictable client id.
    operator = probe_as(pki, fleet_broker, "operator")
    attacker = probe_as(pki, fleet_broker, "car2", client_id="fleet-connector-car1")
    try:
        requester = Requester(operator, "car1")
        for i in range(20):
            reply = requester.call(Operation.STATE, '["workloadStates"]', f"during-{i}")
            assert "workload_states" in reply
        assert car1.mqtt.connected
        assert car1.session.takeovers == 0
    finally:
        attacker.close()
        operator.close()


def test_a_takeover_of_the_session_is_noticed_logged_and_shown_in_presence(
    broker: Broker,
    emulator: Emulator,
    start_connector: Callable[..., Connector],
    requester: Requester,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A broker that does not bind client ids to identities: anyone may use the car's.
    client_id = f"fleet-connector-{requester.topics.base.split('/')[1]}"
    start_connector(emulator.control_interface, client_id=client_id)
    assert requester.wait_online()["session_takeovers"] == 0
    # The thief reconnects whenever the connector takes its session back (mosquitto 2.0.11
    # closes the old connection without saying why, so the pattern gives it away).
    thief = MqttProbe(broker, client_id=client_id)
    try:
        while True:
            status = requester.wait_status("online", timeout=30)
            if status["session_takeovers"]:
                break
    finally:
        thief.close()
    assert status["session_takeovers"] >= 1
    assert status["last_session_takeover"]
    assert "SECURITY: MQTT session of client id" in caplog.text


def test_quick_losses_after_connect_count_as_a_takeover_on_mqtt_311() -> None:
    from fleet_connector.mqtt.takeover import QUICK_LOSSES, SessionWatch

    now = [0.0]
    watch = SessionWatch(clock=lambda: now[0])
    for _ in range(QUICK_LOSSES):
        watch.connected()
        now[0] += 1
        watch.lost(None, "c")  # 3.1.1: no reason, just a closed connection
        now[0] += 1
    assert watch.takeovers == 1
    watch.connected()
    now[0] += 600
    watch.lost(None, "c")  # a connection that lasted is an ordinary loss
    assert watch.takeovers == 1


def test_a_request_the_broker_acknowledged_survives_a_broker_sigkill(
    pki: Pki, make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    # The shipped persistence settings, with the broker's database in this test's directory.
    data = tmp_path / "mosquitto-data"
    data.mkdir()
    ports = (free_port(), free_port())
    broker = start_shipped(make_broker, pki, ports, data)
    with Emulator(control_interface=tmp_path / "car1") as emulator:
        first = tls_connector(pki.identity("car1"), broker, "car1", emulator)
        assert first.mqtt.wait_subscribed(10)
        first.stop()  # the car is offline; its session waits in the broker
        operator = probe_as(pki, broker, "operator")
        topics = Topics("car1")
        database = data / "mosquitto.db"
        saved = database.stat().st_mtime_ns if database.exists() else 0
        operator.publish(topics.request(Operation.APPLY, "kept"), SENDER)  # acknowledged
        operator.close()
        # mosquitto saves right after the change, not before it acknowledges: wait for that
        # save (with the default autosave_interval of 30 minutes it never comes).
        deadline = time.monotonic() + 5
        while not (database.exists() and database.stat().st_mtime_ns != saved):
            assert time.monotonic() < deadline, "the broker did not save the request"
            time.sleep(0.01)
        broker.kill()
        restarted = start_shipped(make_broker, pki, ports, data)
        operator = probe_as(pki, restarted, "operator")
        operator.subscribe(topics.response(Operation.APPLY, "kept"))
        second = tls_connector(pki.identity("car1"), restarted, "car1", emulator)
        try:
            reply = json.loads(operator.expect(topics.response(Operation.APPLY, "kept")).payload)
            assert reply["added_workloads"][0]["workload_name"] == "vehicle-data-sender"
        finally:
            second.stop()
            operator.close()


def test_the_broker_refuses_messages_over_its_size_limit(pki: Pki, fleet_broker: Broker) -> None:
    operator = probe_as(pki, fleet_broker, "operator")
    watcher = probe_as(pki, fleet_broker, "operator")
    try:
        watcher.subscribe("vehicle/car9/#")
        sender = probe_as(pki, fleet_broker, "operator")
        # mosquitto announces the limit (MQTT 5) and drops a client that exceeds it.
        with contextlib.suppress(RuntimeError, ValueError):
            sender.publish("vehicle/car9/manifest/apply/req/huge", b"#" * (5 * 1024 * 1024))
        sender.close()
        operator.publish("vehicle/car9/manifest/apply/req/small", b"#")
        assert watcher.expect().topic == "vehicle/car9/manifest/apply/req/small"
    finally:
        operator.close()
        watcher.close()


def test_the_connectors_password_is_not_readable_through_the_state(
    broker: Broker, tmp_path: Path, requester: Requester, vin: str
) -> None:
    # A startup state that (against the README's advice) names the password in runtimeConfig.
    secret = 'pa"ss-w0rd-ü'
    startup = {
        "apiVersion": "v0.1",
        "workloads": {
            "fleetconnector": {
                "runtime": "podman",
                "agent": "agent_A",
                "restartPolicy": "NEVER",
                "controlInterfaceAccess": {
                    "allowRules": [
                        {"type": "StateRule", "operation": "Read", "filterMask": ["desiredState"]}
                    ]
                },
                "runtimeConfig": "image: ghcr.io/eclipse-ankaios/fleet-connector:0.5.3\n"
                f"commandOptions: [\"-e\", 'MQTT_PASSWORD={secret}']\n",
            }
        },
    }
    with Emulator(control_interface=tmp_path / "ci", state=startup) as emu:
        settings = BrokerSettings(
            host=broker.host, port=broker.port, username="car", password=secret
        )
        connector = Connector(
            Config(vin=vin, broker=settings, control_interface=emu.control_interface)
        )
        connector.start()
        try:
            assert connector.mqtt.wait_subscribed(10)
            for masks in (["desiredState.workloads"], ["desiredState.workloads.fleetconnector"]):
                reply = requester.send(Operation.STATE, json.dumps(masks)).payload.decode()
                workloads = json.loads(reply)["desired_state"]["workloads"]
                assert "MQTT_PASSWORD=<redacted>" in str(workloads), workloads
                assert "w0rd" not in reply
        finally:
            connector.stop()


def test_the_shipped_startup_states_hold_no_secrets() -> None:
    for path in MANIFESTS.rglob("state*.yaml"):
        for name, workload in yaml.safe_load(path.read_text())["workloads"].items():
            for secret in ("PASSWORD=", "PRIVATE KEY"):
                assert secret not in workload["runtimeConfig"], f"{path}: {name} holds {secret}"
    least = (MANIFESTS / "state-least-privilege.yaml").read_text()
    assert "MQTT_PASSWORD_FILE=/etc/fleet/" in least


def test_the_shipped_acl_lets_a_car_clear_a_retained_request(
    pki: Pki, fleet_broker: Broker, car1: Connector
) -> None:
    operator = probe_as(pki, fleet_broker, "operator")
    try:
        requester = Requester(operator, "car1")
        topic = requester.topics.request(Operation.DELETE)
        operator.client.publish(topic, SENDER, qos=1, retain=True).wait_for_publish(5)
        refused = json.loads(operator.expect(requester.topics.response(Operation.DELETE)).payload)
        assert refused["error"]["code"] == "INVALID_REQUEST"
        # Cleared: a new subscription gets the marker published after it, nothing retained.
        operator.subscribe(topic)
        operator.subscribe("vehicle/car1/marker")
        operator.publish("vehicle/car1/marker", b"m")
        assert operator.expect().topic == "vehicle/car1/marker"
        assert update_requests(car1.emulator) == 0  # type: ignore[attr-defined]
    finally:
        operator.close()
