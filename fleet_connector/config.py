"""The connector's configuration: parsed once from flags and environment, validated, passed down."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet_connector.journal import crashpoints
from fleet_connector.mqtt.broker import BROKER_OPTIONS, BrokerSettings
from fleet_connector.mqtt.topics import FORBIDDEN_TOPIC_CHARS
from fleet_connector.options import (
    ConfigError,
    Option,
    non_negative_int,
    positive_float,
    positive_int,
    resolve,
)
from fleet_connector.requests.policy import Policy
from fleet_connector.requests.signatures import load_trusted_keys

DEFAULT_CONTROL_INTERFACE = Path("/run/ankaios/control_interface")

CONNECTOR_OPTIONS = [
    Option("vin", "--vin", "VIN", "vehicle identification number; required"),
    *BROKER_OPTIONS,
    Option(
        "control_interface",
        "--control-interface",
        "ANKAIOS_CONTROL_INTERFACE_PATH",
        "directory holding the control interface FIFOs",
        str(DEFAULT_CONTROL_INTERFACE),
    ),
    Option(
        "client_id",
        "--client-id",
        "MQTT_CLIENT_ID",
        "MQTT client id (default: fleet-connector-<VIN>)",
    ),
    Option(
        "session_expiry",
        "--session-expiry",
        "MQTT_SESSION_EXPIRY",
        "seconds the broker keeps requests for the car while it is offline (MQTT 5)",
        7 * 24 * 3600,
        non_negative_int,
    ),
    Option(
        "request_timeout",
        "--request-timeout",
        "REQUEST_TIMEOUT",
        "seconds to wait for Ankaios to answer a request",
        5.0,
        positive_float,
    ),
    Option(
        "queue_size",
        "--queue-size",
        "QUEUE_SIZE",
        "requests waiting for Ankaios before new ones get BUSY",
        1000,
        positive_int,
    ),
    Option(
        "max_payload",
        "--max-payload",
        "MAX_PAYLOAD_SIZE",
        "largest request payload in bytes (default: the policy's, else 1048576)",
        None,
        positive_int,
    ),
    Option(
        "workload_name",
        "--workload-name",
        "ANKAIOS_WORKLOAD_NAME",
        "the connector's own workload name, protected from remote delete and replace",
        "fleetconnector",
    ),
    Option("policy_file", "--policy", "POLICY_FILE", "YAML policy file (see README)"),
    Option(
        "state_dir",
        "--state-dir",
        "STATE_DIR",
        "directory for the connector's persistent state (journal, signature counters); "
        "unset: nothing is kept across restarts",
    ),
    Option(
        "trusted_keys",
        "--trusted-keys",
        "TRUSTED_KEYS",
        "file of public keys whose signed requests this car accepts (needs STATE_DIR)",
    ),
    Option(
        "require_signed",
        "--require-signed",
        "REQUIRE_SIGNED",
        "refuse apply and delete requests that are not signed by a trusted key",
        False,
        is_switch=True,
    ),
    Option(
        "strict",
        "--strict",
        "STRICT",
        "refuse manifests with warnings (unknown keys) as INVALID_REQUEST instead of applying them",
        False,
        is_switch=True,
    ),
    Option(
        "agent_interval",
        "--agent-interval",
        "AGENT_INTERVAL",
        "seconds between reads of the agents' load for vehicle/<VIN>/agents/<agent> "
        "(Ankaios sends no events for it)",
        10.0,
        positive_float,
    ),
    Option(
        "log_max_lines",
        "--log-max-lines",
        "LOG_MAX_LINES",
        "lines one logs request may receive (and largest tail)",
        10_000,
        positive_int,
    ),
    Option(
        "log_max_rate",
        "--log-max-rate",
        "LOG_MAX_BYTES_PER_SECOND",
        "bytes of log lines per second one stream may send; more are dropped and counted",
        256 * 1024,
        positive_int,
    ),
    Option(
        "log_max_follow",
        "--log-max-follow",
        "LOG_MAX_FOLLOW",
        "seconds a logs request may follow",
        600.0,
        positive_float,
    ),
    Option(
        "log_max_streams",
        "--log-max-streams",
        "LOG_MAX_STREAMS",
        "log streams open at once",
        4,
        positive_int,
    ),
    Option(
        "journal_entries",
        "--journal-entries",
        "JOURNAL_MAX_ENTRIES",
        "changes the journal in STATE_DIR keeps; the oldest go first",
        200,
        positive_int,
    ),
    Option(
        "journal_bytes",
        "--journal-bytes",
        "JOURNAL_MAX_BYTES",
        "bytes of manifests, snapshots and replies the journal keeps",
        16 << 20,
        positive_int,
    ),
    Option(
        "reconcile",
        "--reconcile",
        "RECONCILE",
        "re-apply what Ankaios lost (e.g. after its server restarted) and the journal says "
        "the cloud applied; off: the drift is only reported on vehicle/<VIN>/drift",
        False,
        is_switch=True,
    ),
    Option(
        "labels",
        "--labels",
        "LABELS",
        "the car's own labels, carried in presence for the fleet service's selectors: "
        "key=value pairs separated by commas, e.g. region=eu,model=x",
    ),
    Option("log_level", "--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", "INFO"),
]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Label keys and values as Kubernetes validates them, so the fleet service's selectors
# (Kubernetes syntax) can name every label a car reports: an optional DNS-subdomain prefix
# and a name of at most 63 characters; a value of at most 63, possibly empty.
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
MAX_LABELS = 64
_VIN_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class LogLimits:
    """How much log streaming a car allows (see fleet_connector.observe.logs)."""

    max_lines: int = 10_000
    """Lines per stream; a larger ``tail`` is refused, a stream reaching it ends ``limit``."""
    bytes_per_second: int = 256 * 1024
    """Per stream; lines beyond it are dropped and counted."""
    max_follow: float = 600.0
    """Seconds a stream may follow; a larger ``follow`` is refused."""
    max_streams: int = 4
    """Streams open at once; one more is refused ``BUSY``."""


@dataclass(frozen=True)
class Config:
    """Everything the connector needs to know, checked."""

    vin: str
    broker: BrokerSettings
    control_interface: Path = DEFAULT_CONTROL_INTERFACE
    client_id: str = ""
    session_expiry: int = 7 * 24 * 3600
    request_timeout: float = 5.0
    queue_size: int = 1000
    policy: Policy = field(default_factory=Policy)
    state_dir: Path | None = None
    trusted_keys: Path | None = None
    require_signed: bool = False
    strict: bool = False
    agent_interval: float = 10.0
    log_limits: LogLimits = field(default_factory=LogLimits)
    journal_entries: int = 200
    journal_bytes: int = 16 << 20
    reconcile: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    """The car's own labels (LABELS), in the order given; reported in presence."""
    crash_at: str | None = None
    """Test only: the crash point (see fleet_connector.journal.crashpoints) from its variable."""
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        check_vin(self.vin)
        if self.require_signed and self.trusted_keys is None:
            raise ConfigError("REQUIRE_SIGNED needs TRUSTED_KEYS, the keys to check with")
        if self.trusted_keys is not None and self.state_dir is None:
            raise ConfigError("TRUSTED_KEYS needs STATE_DIR, where the replay counters are kept")
        if not self.client_id:
            object.__setattr__(self, "client_id", f"fleet-connector-{self.vin}")


def check_vin(vin: str) -> None:
    if not vin:
        raise ConfigError("VIN is required (environment variable VIN or --vin)")
    bad = FORBIDDEN_TOPIC_CHARS.intersection(vin)
    if bad:
        raise ConfigError(
            f"VIN {vin!r} contains {''.join(sorted(bad))!r}, which MQTT topics reserve"
        )
    if not _VIN_PATTERN.fullmatch(vin):
        raise ConfigError(f"VIN {vin!r} must be 1 to 64 letters, digits or any of _ . : -")


def check_label(key: str, value: str) -> None:
    """Raises ConfigError unless ``key=value`` is a label Kubernetes would accept."""
    prefix, _, name = key.rpartition("/")
    if "/" in prefix or (prefix and (len(prefix) > 253 or not _LABEL_PREFIX.fullmatch(prefix))):
        raise ConfigError(f"label key {key!r}: its prefix must be a DNS subdomain")
    if not _LABEL_NAME.fullmatch(name):
        raise ConfigError(
            f"label key {key!r}: the name must be 1 to 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    if not _LABEL_VALUE.fullmatch(value):
        raise ConfigError(
            f"label {key!r}: the value {value!r} must be at most 63 letters, digits, '-', '_' "
            "or '.', beginning and ending with a letter or digit"
        )


def parse_labels(text: str | None) -> tuple[tuple[str, str], ...]:
    """``region=eu,model=x`` as pairs, each checked; a key given twice is an error."""
    if not text or not text.strip():
        return ()
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise ConfigError(f"LABELS: {item.strip()!r} is not key=value")
        key, value = key.strip(), value.strip()
        check_label(key, value)
        if key in pairs:
            raise ConfigError(f"LABELS: {key!r} is given twice")
        pairs[key] = value
    if len(pairs) > MAX_LABELS:
        raise ConfigError(f"LABELS: at most {MAX_LABELS} labels")
    return tuple(pairs.items())


def _trusted_keys(path: str | None, state_dir: str | None) -> Path | None:
    """The TRUSTED_KEYS file, read once here so that a bad one stops the start."""
    if not path:
        return None
    if not state_dir:
        raise ConfigError(
            "TRUSTED_KEYS needs STATE_DIR: the car must remember each key's last counter "
            "across restarts, or a signed request could be replayed"
        )
    try:
        load_trusted_keys(Path(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot use TRUSTED_KEYS {path!r}: {e}") from None
    return Path(path)


def _flags(argv: Sequence[str]) -> dict[str, Any]:
    """The flags given. Ankaios starts the connector without any (its settings are in the
    environment), and then argparse, 0.35 MiB of RSS, is not loaded."""
    if not argv:
        return {}
    from fleet_connector import flags  # noqa: PLC0415

    parser = flags.build_parser(
        "fleet-connector",
        "Connect an Ankaios vehicle to an MQTT broker: apply and delete manifests and read "
        "the state on request from the cloud.",
        CONNECTOR_OPTIONS,
    )
    return vars(parser.parse_args(list(argv)))


def _crash_point(environ: Mapping[str, str]) -> str | None:
    point = environ.get(crashpoints.ENV) or None
    if point is not None and point not in crashpoints.POINTS:
        raise ConfigError(f"{crashpoints.ENV} must be one of {', '.join(crashpoints.POINTS)}")
    return point


def load(argv: Sequence[str], environ: Mapping[str, str]) -> Config:
    """The configuration from command-line flags and environment; raises ConfigError."""
    values = resolve(CONNECTOR_OPTIONS, _flags(argv), environ)
    level = str(values["log_level"]).upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(_LOG_LEVELS)}")
    return Config(
        vin=(values["vin"] or "").strip(),
        broker=BrokerSettings.from_values(values),
        control_interface=Path(values["control_interface"]),
        client_id=values["client_id"] or "",
        session_expiry=values["session_expiry"],
        request_timeout=values["request_timeout"],
        queue_size=values["queue_size"],
        policy=Policy.load(
            Path(values["policy_file"]) if values["policy_file"] else None,
            protected=[values["workload_name"]] if values["workload_name"] else [],
            max_payload=values["max_payload"],
        ),
        state_dir=Path(values["state_dir"]) if values["state_dir"] else None,
        trusted_keys=_trusted_keys(values["trusted_keys"], values["state_dir"]),
        require_signed=values["require_signed"],
        strict=values["strict"],
        agent_interval=values["agent_interval"],
        log_limits=LogLimits(
            max_lines=values["log_max_lines"],
            bytes_per_second=values["log_max_rate"],
            max_follow=values["log_max_follow"],
            max_streams=values["log_max_streams"],
        ),
        journal_entries=values["journal_entries"],
        journal_bytes=values["journal_bytes"],
        reconcile=values["reconcile"],
        labels=parse_labels(values["labels"]),
        crash_at=_crash_point(environ),
        log_level=level,
    )
