"""How to reach the MQTT broker: settings shared by every program of this project.

The connector, the vehicle data sender and the operator tool all take the same broker
options (address, port, protocol, TLS, credentials) and build their paho client here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fleet_connector.options import ConfigError, Option, port_number, positive_int

log = logging.getLogger(__name__)

PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


def _protocol(text: str) -> str:
    if text not in PROTOCOLS:
        raise ValueError("must be 5 or 3.1.1")
    return text


BROKER_OPTIONS = [
    Option("broker_addr", "--broker-addr", "MQTT_BROKER_ADDR", "MQTT broker host", "localhost"),
    Option(
        "broker_port", "--broker-port", "MQTT_BROKER_PORT", "MQTT broker port", 1883, port_number
    ),
    Option(
        "mqtt_protocol",
        "--mqtt-protocol",
        "MQTT_PROTOCOL",
        "MQTT version: 5 or 3.1.1 (default: 5, falling back to 3.1.1 for a broker "
        "that does not speak 5)",
        None,
        _protocol,
    ),
    Option(
        "keepalive", "--keepalive", "MQTT_KEEPALIVE", "MQTT keepalive in seconds", 60, positive_int
    ),
    Option("username", "--username", "MQTT_USERNAME", "MQTT user name"),
    Option("password", "--password", "MQTT_PASSWORD", "MQTT password", secret=True),
    Option(
        "password_file",
        "--password-file",
        "MQTT_PASSWORD_FILE",
        "file whose first line is the MQTT password",
    ),
    Option("tls_ca_file", "--tls-ca-file", "MQTT_TLS_CA_FILE", "CA bundle; enables TLS"),
    Option(
        "tls_cert_file",
        "--tls-cert-file",
        "MQTT_TLS_CERT_FILE",
        "client certificate for mutual TLS; enables TLS",
    ),
    Option(
        "tls_key_file",
        "--tls-key-file",
        "MQTT_TLS_KEY_FILE",
        "private key of the client certificate",
    ),
    Option(
        "tls",
        "--tls",
        "MQTT_TLS",
        "use TLS with the system's CA bundle",
        False,
        is_switch=True,
    ),
]


@dataclass(frozen=True)
class BrokerSettings:
    """Where the broker is and how to authenticate to it."""

    host: str = "localhost"
    port: int = 1883
    protocol: str = "5"
    keepalive: int = 60
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    fallback: bool = True
    """Whether a broker that refuses MQTT 5 as an unsupported version is tried with 3.1.1.
    ``from_values`` turns it off when MQTT_PROTOCOL is given."""

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> BrokerSettings:
        """Settings from parsed :data:`BROKER_OPTIONS`; checks that named files are readable."""
        password = values["password"]
        if values["password_file"]:
            if password is not None:
                raise ConfigError("give the MQTT password or a password file, not both")
            password = _read_first_line(Path(values["password_file"]), "password file")
        if password is not None and not values["username"]:
            raise ConfigError("an MQTT password needs a user name (MQTT_USERNAME)")
        ca, cert, key = (
            _readable(values[name], label)
            for name, label in (
                ("tls_ca_file", "CA file"),
                ("tls_cert_file", "client certificate"),
                ("tls_key_file", "client key"),
            )
        )
        if (cert is None) != (key is None):
            raise ConfigError("mutual TLS needs both a client certificate and its key")
        host = values["broker_addr"].strip()
        if not host or any(c.isspace() for c in host):
            raise ConfigError(
                f"the MQTT broker address {host!r} is not a host name (MQTT_BROKER_ADDR)"
            )
        return cls(
            host=host,
            port=values["broker_port"],
            protocol=values["mqtt_protocol"] or "5",
            fallback=values["mqtt_protocol"] is None,
            keepalive=values["keepalive"],
            username=values["username"],
            password=password,
            tls=bool(values["tls"]) or ca is not None or cert is not None,
            tls_ca_file=ca,
            tls_cert_file=cert,
            tls_key_file=key,
        )

    def falls_back(self, refusal: ReasonCode) -> BrokerSettings | None:
        """The 3.1.1 settings to try after ``refusal`` of an MQTT 5 connection, if any."""
        if not (self.fallback and self.protocol == "5"):
            return None
        if refusal.getName() != "Unsupported protocol version":
            return None
        return dataclasses.replace(self, protocol="3.1.1", fallback=False)

    def describe(self) -> str:
        """For the start-up log line; never includes the password."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port} (MQTT {self.protocol})"

    def make_client(self, client_id: str, *, clean: bool = True) -> mqtt.Client:
        """A paho client set up for these settings; not yet connected."""
        protocol = PROTOCOLS[self.protocol]
        kwargs: dict[str, Any] = {}
        if protocol != mqtt.MQTTv5:
            # MQTT 5 sets clean start per connect instead.
            kwargs["clean_session"] = clean
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            context = ssl.create_default_context(
                cafile=str(self.tls_ca_file) if self.tls_ca_file else None
            )
            if self.tls_cert_file and self.tls_key_file:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
            client.tls_set_context(context)
        # Nagle's algorithm stalls small request/reply exchanges by ~40 ms on loopback.
        client.on_socket_open = _set_nodelay
        return client


class FallbackClient:
    """A program's paho client, replaced by a 3.1.1 one when the broker refuses MQTT 5.

    paho fixes a client's protocol when it is made, so on a refusal the refused client ends
    (its loop stops after the callback it was refused in) and a new one takes over. The
    swap is safe against a concurrent :meth:`close`; callbacks must ignore clients for
    which :meth:`is_current` is false.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        make: Callable[[BrokerSettings], mqtt.Client],
        connect: Callable[[mqtt.Client, BrokerSettings], None],
    ) -> None:
        self.settings = settings
        self._make = make
        self._connect = connect
        self._lock = threading.Lock()
        self._closing = False
        self.client = make(settings)

    def connect(self) -> None:
        self._connect(self.client, self.settings)

    def is_current(self, client: mqtt.Client) -> bool:
        return client is self.client

    def fall_back(self, refused: mqtt.Client, refusal: ReasonCode) -> bool:
        """Whether ``refusal`` is handled: a 3.1.1 client took over (or we are closing).

        Call from the refused client's on_connect.
        """
        fallback = self.settings.falls_back(refusal)
        if fallback is None:
            return False
        with self._lock:
            if self._closing:
                return True
            log.warning("MQTT broker %s does not speak MQTT 5; using 3.1.1", fallback.describe())
            self.settings = fallback
            self.client = self._make(fallback)
            refused.loop_stop()  # called on its own thread: only asks the loop to end
            self._connect(self.client, fallback)
        return True

    def close(self) -> mqtt.Client:
        """Ends swapping; returns the client to disconnect."""
        with self._lock:
            self._closing = True
            return self.client


def _set_nodelay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    raw = getattr(sock, "_sock", sock)  # paho wraps TLS sockets
    with contextlib.suppress(OSError, AttributeError):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _readable(value: str | None, label: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot read {label} {value!r}: {e.strerror}") from None
    except ValueError:  # e.g. a NUL byte in the name
        raise ConfigError(f"{label} {value!r} is not a valid file name") from None
    return path


def _read_first_line(path: Path, label: str) -> str:
    try:
        lines = path.read_text().splitlines()
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {label} {str(path)!r}: {e}") from None
    if not lines or not lines[0]:
        raise ConfigError(f"{label} {str(path)!r} is empty")
    return lines[0]
