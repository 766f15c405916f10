"""fleet-sim's options, parsed once into :class:`Options`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from fleet_sim import labels
from fleet_sim.draw import Latency

DESCRIPTION = (
    "Many simulated cars speaking the fleet connector's MQTT protocol, for load tests. "
    "A load tool, not the connector: see docs/fleet-sim.md."
)


@dataclass(frozen=True)
class Options:
    count: int = 1000
    vin_prefix: str = "SIM"
    first: int = 0
    vin_width: int = 6
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: str = "5"
    keepalive: int = 60
    username: str | None = None
    password: str | None = None
    client_prefix: str = "fleet-sim"
    cars_per_connection: int = 1000
    seed: int = 0
    latency: Latency = field(default_factory=Latency)
    reject_ratio: float = 0.0
    crash_ratio: float = 0.0
    no_reply_ratio: float = 0.0
    churn: float = 0.0
    """Cars going offline per second (over the whole fleet)."""
    offline: Latency = field(default_factory=lambda: Latency("uniform", 5.0, 30.0))
    labels: labels.LabelSpec = field(default_factory=list)
    workloads: tuple[str, ...] = ("fleetconnector",)
    agent: str = "agent_A"
    start_time: float = 0.2
    """Seconds a new instance is pending before it runs."""
    stop_time: float = 0.1
    crash_after: float = 0.5
    journal: bool = True
    journal_entries: int = 20
    car_queue: int = 100
    connection_queue: int = 10_000
    """Requests waiting on one connection (all its cars) before BUSY."""
    max_payload: int = 1 << 20
    connection_backlog: int = 1000
    """Messages a connection may have on their way to the broker before it stops reading."""
    ramp: int = 100
    """Cars brought online per step on each connection (subscribe + presence + live states)."""
    stats_interval: float = 0.0

    def vin(self, index: int) -> str:
        return f"{self.vin_prefix}{self.first + index:0{self.vin_width}d}"


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a ratio from 0 to 1")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def _latency(text: str) -> Latency:
    try:
        return Latency.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _labels(text: str) -> labels.LabelSpec:
    try:
        return labels.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet-sim", description=DESCRIPTION)
    a = p.add_argument
    a("--count", type=_positive, default=1000, help="simulated cars (default 1000)")
    a("--vin-prefix", default="SIM", help="VIN prefix (default SIM)")
    a("--first", type=int, default=0, help="number of the first car (default 0)")
    a("--vin-width", type=int, default=6, help="digits of the car number (default 6)")
    a("--broker-addr", default="127.0.0.1", help="MQTT broker host")
    a("--broker-port", type=int, default=1883, help="MQTT broker port")
    a("--mqtt-protocol", choices=("5", "3.1.1"), default="5")
    a("--keepalive", type=int, default=60, help="MQTT keepalive in seconds")
    a("--username", help="MQTT user name")
    a("--password", help="MQTT password")
    a("--client-prefix", default="fleet-sim", help="client ids are <prefix>-<first VIN>")
    a(
        "--cars-per-connection",
        type=_positive,
        default=1000,
        help="cars sharing one MQTT connection; 1 gives each car its own connection and a "
        "real Last Will (default 1000)",
    )
    a("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    a(
        "--latency",
        type=_latency,
        default=Latency(),
        help="reply latency: SECONDS, uniform:A:B or exp:MEAN (default 0)",
    )
    a("--reject-ratio", type=_ratio, default=0.0, help="writes answered REJECTED")
    a("--crash-ratio", type=_ratio, default=0.0, help="applies whose new instances crash")
    a("--no-reply-ratio", type=_ratio, default=0.0, help="requests never answered")
    a("--churn", type=float, default=0.0, help="cars going offline per second (fleet-wide)")
    a(
        "--offline-time",
        type=_latency,
        default=Latency("uniform", 5.0, 30.0),
        help="how long a churned car stays away (default uniform:5:30)",
    )
    a("--labels", type=_labels, default=[], help="e.g. 'region=eu,us;model=a:3,b:1'")
    a(
        "--workloads",
        default="fleetconnector",
        help="comma-separated workloads every car starts with (default fleetconnector)",
    )
    a("--agent", default="agent_A", help="the cars' agent (default agent_A)")
    a("--start-time", type=float, default=0.2, help="seconds a new instance is pending")
    a("--stop-time", type=float, default=0.1, help="seconds a deleted instance is stopping")
    a("--crash-after", type=float, default=0.5, help="seconds a crashing instance runs")
    a("--no-journal", action="store_true", help="history and rollback answer NO_JOURNAL")
    a("--journal-entries", type=_positive, default=20, help="journal entries per car")
    a("--car-queue", type=_positive, default=100, help="requests waiting per car before BUSY")
    a(
        "--connection-queue",
        type=_positive,
        default=10_000,
        help="requests waiting per connection (all its cars) before BUSY",
    )
    a("--max-payload", type=_positive, default=1 << 20, help="largest request in bytes")
    a(
        "--connection-backlog",
        type=_positive,
        default=1000,
        help="messages on their way to the broker before a connection stops reading",
    )
    a("--ramp", type=_positive, default=100, help="cars brought online per step")
    a("--stats-interval", type=float, default=0.0, help="seconds between stats lines")
    return p


def parse(argv: list[str] | None = None) -> Options:
    p = parser()
    args = p.parse_args(argv)
    if args.reject_ratio + args.crash_ratio + args.no_reply_ratio > 1.0:
        p.error("--reject-ratio, --crash-ratio and --no-reply-ratio add up to more than 1")
    workloads = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    width = max(args.vin_width, len(str(args.first + args.count - 1)))
    return Options(
        count=args.count,
        vin_prefix=args.vin_prefix,
        first=args.first,
        vin_width=width,
        host=args.broker_addr,
        port=args.broker_port,
        protocol=args.mqtt_protocol,
        keepalive=args.keepalive,
        username=args.username,
        password=args.password,
        client_prefix=args.client_prefix,
        cars_per_connection=args.cars_per_connection,
        seed=args.seed,
        latency=args.latency,
        reject_ratio=args.reject_ratio,
        crash_ratio=args.crash_ratio,
        no_reply_ratio=args.no_reply_ratio,
        churn=max(0.0, args.churn),
        offline=args.offline_time,
        labels=args.labels,
        workloads=workloads,
        agent=args.agent,
        start_time=max(0.0, args.start_time),
        stop_time=max(0.0, args.stop_time),
        crash_after=max(0.0, args.crash_after),
        journal=not args.no_journal,
        journal_entries=args.journal_entries,
        car_queue=args.car_queue,
        connection_queue=args.connection_queue,
        max_payload=args.max_payload,
        connection_backlog=args.connection_backlog,
        ramp=args.ramp,
        stats_interval=max(0.0, args.stats_interval),
    )
