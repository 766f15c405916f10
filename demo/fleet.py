"""A fleet of cars on this machine, for fleetctl, the dashboard and rollouts (make fleet).

One mosquitto, and per car an emulated Ankaios (process runtime) whose startup state starts
the fleet connector for VIN 1, 2, ... with what a full setup needs and the tutorial's
state.yaml leaves out: a STATE_DIR (journal: history, rollback, exactly-once changes) and a
LogRule (fleetctl logs, the dashboard's log tails). Runs until Ctrl-C, SIGTERM or SIGHUP,
then stops everything it started.

    python demo/fleet.py [--cars 3] [--port 1883]    # or: make fleet CARS=3
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from tutorial import (
    MANIFESTS,
    ROOT,
    Stopped,
    free_port,
    manifest,
    port_free,
    process,
    say,
    stop_on_signal,
    wait_port,
)

CONNECTOR_IMAGE = "ghcr.io/eclipse-ankaios/fleet-connector:1.0.0"
STARTUP_TIMEOUT = 60.0


def startup_state(vin: str, state_dir: Path) -> str:
    """The car's startup manifest (v1): the tutorial's connector, with a journal and logs."""
    options = ["--net=host", "-e", f"VIN={vin}", "-e", f"STATE_DIR={state_dir}"]
    return json.dumps(
        {
            "apiVersion": "v1",
            "workloads": {
                "fleetconnector": {
                    "runtime": "podman",
                    "agent": "agent_A",
                    "restartPolicy": "NEVER",
                    "controlInterfaceAccess": {
                        "allowRules": [
                            {"type": "StateRule", "operation": "ReadWrite", "filterMasks": ["*"]},
                            # fleetctl logs and the dashboard read workloads' logs through it
                            {"type": "LogRule", "workloadNames": ["*"]},
                        ]
                    },
                    "runtimeConfig": json.dumps(
                        {"image": CONNECTOR_IMAGE, "commandOptions": options}
                    ),
                }
            },
        },
        indent=2,
    )


class Presence:
    """Waits until every car's connector says it is online with Ankaios connected."""

    def __init__(self, port: int) -> None:
        self.ready: queue.Queue[str] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-demo-presence")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("vehicle/+/status", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            status = json.loads(message.payload)
        except ValueError:
            return
        if status.get("status") == "online" and status.get("ankaios") == "connected":
            self.ready.put(message.topic.split("/")[1])

    def wait(self, vins: list[str], timeout: float) -> None:
        waiting = set(vins)
        while waiting:
            try:
                waiting.discard(self.ready.get(timeout=timeout))
            except queue.Empty:
                raise SystemExit(
                    f"fleet: no presence from {', '.join(sorted(waiting))} within {timeout:g} s "
                    "(see the emulator logs named above)"
                ) from None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cars", type=int, default=3, help="how many cars (default 3)")
    parser.add_argument(
        "--port",
        type=int,
        help="the broker's port (default 1883, or a free one when taken; 0: a free one)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.cars <= 100:
        parser.error("--cars must be from 1 to 100")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)
    try:
        return run(args.cars, args.port)
    except KeyboardInterrupt:
        print("\nfleet: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except Stopped as stopped:
        print(f"\nfleet: {stopped}; everything it started is stopped", file=sys.stderr)
        return 128 + stopped.signum


def run(cars: int, wanted_port: int | None) -> int:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("fleet: mosquitto is not installed (make setup installs it)", file=sys.stderr)
        return 2
    if wanted_port is None:
        port = 1883 if port_free(1883) else free_port()
    else:
        port = wanted_port or free_port()
    vins = [str(n) for n in range(1, cars + 1)]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-")))
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        stack.enter_context(process([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL))
        wait_port(port)
        presence = Presence(port)
        stack.callback(presence.close)
        env = {
            **_environ(),
            "MQTT_BROKER_ADDR": "127.0.0.1",
            "MQTT_BROKER_PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        for vin in vins:
            car = workdir / f"car-{vin}"
            (car / "state").mkdir(parents=True)
            state = car / "startup-state.yaml"
            state.write_text(startup_state(vin, car / "state"))
            log = stack.enter_context((car / "emulator.log").open("w"))
            stack.enter_context(
                process(
                    [
                        sys.executable,
                        "-m",
                        "ankaios_emulator",
                        "--state",
                        str(state),
                        "--run-dir",
                        str(car / "run"),
                        "--runtime",
                        "process",
                        "--image-map",
                        str(MANIFESTS / "image-map.yaml"),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        presence.wait(vins, STARTUP_TIMEOUT)
        _explain(vins, port, workdir)
        while True:  # until Ctrl-C (KeyboardInterrupt), SIGTERM or SIGHUP (Stopped)
            signal.pause()


def _environ() -> dict[str, str]:
    # The emulator starts "python3" with its own interpreter; the venv's commands come first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path}


def _explain(vins: list[str], port: int, workdir: Path) -> None:
    say(f"A fleet of {len(vins)} car(s) on mosquitto 127.0.0.1:{port}; Ctrl-C stops it")
    print(f"cars: VIN {', '.join(vins)}: each an emulated Ankaios running the fleet connector")
    print("with STATE_DIR (history, rollback) and a LogRule (logs)")
    print(f"their logs: {workdir}/car-<VIN>/emulator.log")
    sender = manifest("vehicle-data-sender.yaml", port, workdir)
    manifest("config.yaml", port, workdir)
    say("In another terminal (. .venv/bin/activate first)")
    if port != 1883:
        print(f"export MQTT_BROKER_PORT={port}")
        print(f"# not on 1883: the sender's manifests naming port {port} are in {workdir}")
    last = vins[-1]
    for line in (
        "fleetctl status",
        f"fleetctl apply {_shown(sender)} --vins 1-{last} --wait running",
        "fleetctl get workloads",
        "fleetctl logs --vin 1 -n 5 vehicle-data-sender",
        "fleetctl history --vin 1",
        "fleetctl rollback --vin 1",
        "fleetctl dashboard",
    ):
        print(line)
    print(f"MQTT_BROKER_PORT={port} MANIFESTS={sender.parent}", flush=True)
    print("ready", flush=True)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
