"""Command line: serve one control interface, or start like Ankaios from a manifest."""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from .config import EmulatorError, load_access
from .emulator import Emulator
from .runtimes import RUNTIME_NAMES

PROG = "ankaios-emulator"
EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as a single line (no usage dump), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description=(
            "Eclipse Ankaios 1.0 control-interface emulator for the unmodified ankaios-sdk. "
            "Serves FIFOs, answers like an Ankaios server + agent, runs workloads "
            "(simulated or as local processes)."
        ),
    )
    parser.add_argument(
        "--control-interface",
        type=Path,
        metavar="DIR",
        help="serve one control interface (FIFOs input/output) in DIR",
    )
    parser.add_argument(
        "--access",
        type=Path,
        metavar="FILE",
        help="YAML controlInterfaceAccess section for --control-interface, overriding "
        "the served workload's own rules (default: its controlInterfaceAccess in --state; "
        "ReadWrite on '*' when it is not there)",
    )
    parser.add_argument("--state", type=Path, metavar="FILE", help="startup manifest")
    parser.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="give each workload with controlInterfaceAccess DIR/<workload>/control_interface",
    )
    parser.add_argument("--runtime", choices=RUNTIME_NAMES, default="simulate")
    parser.add_argument(
        "--agent",
        action="append",
        type=_agent_spec,
        metavar="NAME[:KEY=VALUE,...]",
        help="an emulated agent with its tags; repeat for several (default agent_A); the "
        "first one serves --control-interface when its workload is not in --state",
    )
    parser.add_argument(
        "--state-agents",
        action="store_true",
        help="also emulate every agent a workload in --state names",
    )
    parser.add_argument(
        "--signal-agent",
        action="append",
        metavar="NAME",
        help="agent that SIGRTMIN+1 disconnects, and reconnects the next time "
        "(repeatable; default: every agent but the first, or the only one)",
    )
    parser.add_argument(
        "--workload-name",
        default="fleetconnector",
        help="the workload served at --control-interface, run outside the emulator: its "
        "rules and states are those of this workload in --state (default fleetconnector)",
    )
    parser.add_argument(
        "--image-map", type=Path, metavar="FILE", help="YAML image -> command list (process)"
    )
    parser.add_argument(
        "--step-delay",
        type=float,
        default=0.02,
        metavar="SECONDS",
        help="simulated time per state transition (default 0.02)",
    )
    parser.add_argument(
        "--delay-responses", type=float, default=0.0, metavar="SECONDS", help="answer late"
    )
    parser.add_argument("--drop-responses", action="store_true", help="never answer requests")
    parser.add_argument(
        "--strict-reconnect",
        action="store_true",
        help="like Ankaios 1.0.1: a client reopening the FIFOs gets no second "
        "ControlInterfaceAccepted",
    )
    parser.add_argument(
        "--no-pacing",
        action="store_true",
        help="write answers back to back like Ankaios, without waiting until the previous "
        "one was read (which the SDK 1.0.1 reader needs)",
    )
    parser.add_argument(
        "--no-workload-output",
        action="store_true",
        help="do not show the output of process/podman workloads on stderr "
        "(shown as '<workload> | <line>' by default; logs requests still get it)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser


def _agent_spec(text: str) -> tuple[str, dict[str, str]]:
    name, _, tags_text = text.partition(":")
    tags: dict[str, str] = {}
    for item in filter(None, tags_text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"agent tag {item!r} is not KEY=VALUE")
        tags[key] = value
    if not name:
        raise argparse.ArgumentTypeError("agent name missing")
    return name, tags


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.control_interface is None and args.run_dir is None:
        parser.error("give --control-interface DIR or --run-dir DIR (or both)")
    if args.access is not None and args.control_interface is None:
        parser.error("--access needs --control-interface")
    if args.step_delay < 0 or args.delay_responses < 0:
        parser.error("delays must not be negative")
    if args.image_map is not None and args.runtime != "process":
        parser.error("--image-map needs --runtime process")


def _fail(exc: Exception) -> int:
    # YAML errors span several lines; the contract is one line.
    print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
    return EXIT_USAGE


# Free for us: USR1, USR2 and HUP are taken, QUIT is Ctrl-\ in a terminal.
SERVER_RESTART_SIGNAL = signal.SIGRTMIN
AGENT_CONNECTION_SIGNAL = signal.SIGRTMIN + 1


def _toggle_agents(emulator: Emulator, agents: list[str]) -> None:
    connected = set(emulator.complete_state(["agents"]).get("agents", {}))
    for agent in agents:
        if agent in connected:
            emulator.disconnect_agent(agent)
        else:
            emulator.reconnect_agent(agent)


def _inject(emulator: Emulator, signum: int, signal_agents: list[str]) -> None:
    """SIGUSR1 restarts the agent, SIGUSR2 closes the connection, SIGHUP sends garbage,
    SIGRTMIN restarts the server, SIGRTMIN+1 disconnects/reconnects agents."""
    try:
        if signum == SERVER_RESTART_SIGNAL:
            emulator.restart_server()
        elif signum == AGENT_CONNECTION_SIGNAL:
            _toggle_agents(emulator, signal_agents)
        elif signum == signal.SIGUSR1:
            emulator.restart_agent()
        elif signum == signal.SIGUSR2:
            emulator.close_connection("Connection closed on SIGUSR2")
        else:
            emulator.send_garbage(b"\x05\xff\xff\xff\xff\xff")
    except Exception:  # a fault that cannot be injected now must not end the emulator
        logging.getLogger(__name__).exception("fault injection failed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args, parser)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        access = load_access(args.access) if args.access is not None else None
        agents = args.agent or [("agent_A", {})]
        emulator = Emulator(
            control_interface=args.control_interface,
            access=access,
            state=args.state,
            runtime=args.runtime,
            agent=agents[0][0],
            agents=dict(agents),
            state_agents=args.state_agents,
            workload_name=args.workload_name,
            run_dir=args.run_dir,
            image_map=args.image_map,
            step_delay=args.step_delay,
            reaccept_on_reconnect=not args.strict_reconnect,
            pace_frames=not args.no_pacing,
            workload_output=not args.no_workload_output,
        )
    except EmulatorError as exc:
        return _fail(exc)
    primary = agents[0][0]
    signal_agents = args.signal_agent or ([a for a in emulator.agents if a != primary] or [primary])
    unknown = sorted(set(signal_agents) - set(emulator.agents))
    if unknown:
        parser.error(f"--signal-agent {unknown[0]} is not an emulated agent")
    emulator.faults.delay = args.delay_responses
    emulator.faults.drop = args.drop_responses

    done = threading.Event()
    # Faults on demand for a client under test: handled on this thread, not in the handler.
    faults: queue.SimpleQueue[int] = queue.SimpleQueue()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    def on_fault(signum: int, frame: FrameType | None) -> None:
        faults.put(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGUSR1, on_fault)
    signal.signal(signal.SIGUSR2, on_fault)
    signal.signal(signal.SIGHUP, on_fault)
    signal.signal(SERVER_RESTART_SIGNAL, on_fault)
    signal.signal(AGENT_CONNECTION_SIGNAL, on_fault)
    try:
        emulator.start()
    except (EmulatorError, OSError) as exc:
        return _fail(exc)
    try:
        for name, directory in sorted(emulator.control_interfaces().items()):
            print(f"control interface {name}: {directory}", flush=True)
        print("ready", flush=True)
        # Wake regularly so a signal is handled promptly on every Python version.
        while not done.wait(0.2):
            while not faults.empty():
                _inject(emulator, faults.get(), signal_agents)
    finally:
        emulator.stop()
    return 0
