"""Transport security: TLS, mutual TLS with the shipped ACL, user name and password."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from testkit import MANIFESTS, Broker, MqttProbe, Requester
from testkit.observe import update_requests

from ankaios_emulator import Emulator
from fleet_connector import Config, Connector
from fleet_connector.broker import BrokerSettings
from fleet_connector.topics import Operation

DEPLOY = Path(__file__).parents[2] / "deploy" / "mosquitto"


@dataclass
class Pki:
    directory: Path
    ca: trustme.CA

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def identity(self, name: str) -> BrokerSettings:
        """TLS settings of a client whose certificate has CN=name."""
        cert = self.ca.issue_cert(f"{name}.example", common_name=name)
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
    directory = tmp_path / "pki"
    directory.mkdir()
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    return Pki(directory, ca)


@pytest.fixture
def fleet_broker(pki: Pki, make_broker: Callable[..., Broker]) -> Broker:
    """Mosquitto with the shipped configuration and ACL, on a free port."""
    (pki.directory / "acl").write_text((DEPLOY / "acl").read_text())
    shipped = (DEPLOY / "mosquitto.conf").read_text()
    from testkit import free_port

    port = free_port()
    config = (
        shipped.replace("/etc/mosquitto/fleet", str(pki.directory))
        .replace("listener 8883", f"listener {port} 127.0.0.1")
        .replace("persistence true", "persistence false")
    )
    return make_broker(port=port, config_text=config)


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
def two_cars(pki: Pki, fleet_broker: Broker, tmp_path: Path) -> Iterator[tuple[Emulator, Emulator]]:
    with (
        Emulator(control_interface=tmp_path / "car1") as car1,
        Emulator(control_interface=tmp_path / "car2") as car2,
    ):
        connectors = [
            tls_connector(pki.identity("car1"), fleet_broker, "car1", car1),
            tls_connector(pki.identity("car2"), fleet_broker, "car2", car2),
        ]
        try:
            for connector in connectors:
                assert connector.mqtt.wait_subscribed(10)
            yield car1, car2
        finally:
            for connector in connectors:
                connector.stop()


def probe_as(pki: Pki, broker: Broker, name: str) -> MqttProbe:
    settings = pki.identity(name)
    return MqttProbe(broker, settings=BrokerSettings(**{**settings.__dict__, "port": broker.port}))


def test_operator_drives_a_car_over_mutual_tls(
    pki: Pki, fleet_broker: Broker, two_cars: tuple[Emulator, Emulator]
) -> None:
    car1, _ = two_cars
    operator = probe_as(pki, fleet_broker, "operator")
    try:
        requester = Requester(operator, "car1")
        applied = requester.apply((MANIFESTS / "vehicle-data-sender.yaml").read_bytes())
        assert applied["added_workloads"][0]["workload_name"] == "vehicle-data-sender"
        assert (
            "vehicle-data-sender"
            in car1.complete_state(["desiredState"])["desiredState"]["workloads"]
        )
    finally:
        operator.close()


def test_a_car_can_neither_read_nor_write_another_cars_topics(
    pki: Pki, fleet_broker: Broker, two_cars: tuple[Emulator, Emulator]
) -> None:
    car1, _ = two_cars
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
        assert update_requests(car1) == 0
        # car2 still uses its own topics.
        own = Requester(intruder, "car2")
        assert "workload_states" in own.state(["workloadStates"])
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
    fleet_broker: Broker, tmp_path: Path, two_cars: tuple[Emulator, Emulator]
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
    from testkit import free_port

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
    own = Sender(SenderConfig(topic="vehicle/car1/sensors/speed", broker=tls, interval=0.05))
    foreign = Sender(SenderConfig(topic="vehicle/car2/sensors/speed", broker=tls, interval=0.05))
    try:
        operator.subscribe("vehicle/+/sensors/speed")
        own.start()
        foreign.start()
        assert operator.expect("vehicle/car1/sensors/speed").payload == b"1"
        # The ACL drops what car1 publishes under car2's topics.
        for _ in range(10):
            assert operator.expect().topic == "vehicle/car1/sensors/speed"
    finally:
        own.stop()
        foreign.stop()
        operator.close()
