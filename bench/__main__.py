"""``python -m bench``: runs the benchmarks, prints the table, writes bench/results.md.

``python -m bench --only latency,throughput`` runs some; ``--cars``, ``--requests`` and
``--samples`` scale them (defaults: the figures of issue #7). Figures only: nothing fails
on a time; the exit code is 1 only if a benchmark could not run at all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import (
    dashboard,
    fleet,
    fleet_server,
    footprint,
    handoffs,
    latency,
    live,
    rollout_scale,
    sim_scale,
    throughput,
)
from bench.common import REPO, mosquitto_binary, nats_binary, tool_version

# A car's threads (4 of the connector's, 3 of the emulator's) share one interpreter lock per
# host: more cars per host spend their time handing it around (bench/README.md, "1,000 cars").
CARS_PER_HOST = 100
BENCHMARKS = (
    "latency",
    "throughput",
    "footprint",
    "fleet",
    "bridged",
    "nats",
    "dashboard",
    "live",
    # fleet-server with fleet-sim's cars (issue #23): mosquitto on SQLite and PostgreSQL;
    # inventory at start on the bridged and NATS brokers; fleetctl's dashboard at that scale;
    # a rollout, where the service has the rollout engine (#22).
    "server",
    "server-brokers",
    "server-dashboard",
    "server-rollout",
)
# Run only when named in --only, not by default (yet): fleet-sim's own scale (issue #23).
OPTIONAL_BENCHMARKS = ("sim",)


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    nats = nats_binary()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "paho-mqtt": metadata.version("paho-mqtt"),
        "ankaios-sdk": metadata.version("ankaios-sdk"),
        "mosquitto": tool_version([mosquitto_binary(), "-h"]),
        "nats-server": tool_version([nats, "--version"]) if nats else "not installed",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _get(results: dict[str, Any], *path: str) -> Any:
    value: Any = results
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _fmt(value: Any, unit: str, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f} {unit}".strip()
    return f"{value} {unit}".strip()


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _ms(sample: dict[str, Any]) -> str:
    return f"{sample['p50_ms']:.2f} / {sample['p99_ms']:.2f} ms"


def latency_rows(lat: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Issue #12's round-trip targets, as ratios to the baseline measured in the same run."""
    echo, ratio = lat["echo"], lat["ratios"]
    out = [
        ("Bare MQTT echo round trip p50 / p99 (MQTT 5, QoS 1, ack after reply)", _ms(echo), "-", "")
    ]
    if "echo_qos0" in lat:
        out.append(
            ("  the same at the tutorial's MQTT 3.1.1, QoS 0", _ms(lat["echo_qos0"]), "-", "")
        )
    for name in ("state", "apply"):
        ours, base = lat[name], lat[f"baseline_{name}"]
        out.append((f"Connector {name} round trip p50 / p99", _ms(ours), "-", ""))
        out.append((f"  baseline (tutorial-style) {name}, p50 / p99", _ms(base), "-", ""))
        qos1 = lat.get(f"baseline_qos1_{name}")
        if qos1:
            out.append((f"  tutorial connector at QoS 1 {name}, p50 / p99", _ms(qos1), "-", ""))
        loop = lat.get(f"single_loop_{name}")
        if loop:
            out.append((f"  single-loop prototype {name}, p50 / p99", _ms(loop), "-", ""))
        p50 = ratio[f"{name}_p50_vs_baseline"]
        out.append(
            (f"Connector {name} p50 / baseline p50", f"{p50:.2f}x", "<= 0.8x", _met(p50 <= 0.8))
        )
        vs_qos1 = ratio.get(f"{name}_p50_vs_baseline_qos1")
        if vs_qos1 is not None:
            # Issue #23 sets the target for state reads; an apply is shown beside it.
            target = "<= 1.0x" if name == "state" else "-"
            out.append(
                (
                    f"Connector {name} p50 / tutorial connector at QoS 1 p50",
                    f"{vs_qos1:.2f}x",
                    target,
                    _met(vs_qos1 <= 1.0) if name == "state" else "",
                )
            )
        if name == "state":
            over = ratio["state_p50_over_echo_ms"]
            out.append(
                (
                    "Connector state p50 over the bare echo",
                    f"{over:.2f} ms (baseline: {ratio['baseline_state_p50_over_echo_ms']:.2f} ms)",
                    "<= 0.25 ms",
                    _met(over <= 0.25),
                )
            )
        p99 = ratio[f"{name}_p99_vs_baseline"]
        out.append(
            (f"Connector {name} p99 / baseline p99", f"{p99:.2f}x", "<= 1x", _met(p99 <= 1.0))
        )
        if loop:
            loop_ratio = ratio[f"single_loop_{name}_p50_vs_baseline"]
            out.append(
                (
                    f"  single-loop prototype {name} p50 / baseline p50",
                    f"{loop_ratio:.2f}x",
                    "-",
                    "",
                )
            )
        direct = lat.get("ankaios_direct" if name == "state" else "ankaios_direct_apply")
        if direct:
            out.append(
                (
                    f"  Ankaios (emulator) {name} round trip alone, no MQTT, p50",
                    f"{direct['p50_ms']:.2f} ms",
                    "-",
                    "",
                )
            )
    return out


def rows(results: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    lat = results.get("latency")
    if isinstance(lat, dict) and "echo" in lat:
        out.extend(latency_rows(lat))
    tp = results.get("throughput")
    if isinstance(tp, dict) and "raised_queue" in tp:
        raised = tp["raised_queue"]
        out.append(
            (
                f"Pipelined state requests through one connector ({raised['requests']}, "
                f"QUEUE_SIZE={raised['queue_size']})",
                f"{raised['per_second']:.0f} req/s, {raised['answered']}/{raised['requests']} "
                f"answered, errors {raised['errors'] or 'none'}",
                ">= 5000 req/s",
                _met(raised["per_second"] >= 5000 and raised["answered"] == raised["requests"]),
            )
        )
        out.append(
            (
                "  connector CPU per request; requests per CPU-second (one free core)",
                f"{raised.get('connector_cpu_ms_per_request', 0):.3f} ms; "
                f"{raised.get('per_connector_cpu_second', 0)}/s",
                ">= 5000/s",
                _met(raised.get("per_connector_cpu_second", 0) >= 5000),
            )
        )
        for key, label in (
            ("fast_responder", "the same with the fast Ankaios responder"),
            ("single_loop_fast_responder", "the single-loop prototype, fast responder"),
        ):
            run = tp.get(key)
            if run:
                out.append(
                    (
                        f"  {label}",
                        f"{run['per_second']:.0f} req/s, {run['answered']}/{run['requests']}; "
                        f"{run.get('connector_cpu_ms_per_request', 0):.3f} ms CPU per request",
                        "-",
                        "",
                    )
                )
        for key, label in (
            ("emulator_ceiling", "emulator"),
            ("responder_ceiling", "fast responder"),
        ):
            ceiling = tp.get(key)
            if ceiling:
                out.append(
                    (
                        f"  ceiling of the {label} alone (requests straight into its FIFO)",
                        f"{ceiling['per_second']:.0f} req/s",
                        "-",
                        "",
                    )
                )
        window = tp["broker_window"]
        out.append(
            (
                f"Same burst ({window['requests']}) with default QUEUE_SIZE=1000, "
                "mosquitto max_inflight_messages 20",
                f"{window['per_second']:.0f} replies/s, BUSY: {window['errors'].get('BUSY', 0)}",
                "-",
                "",
            )
        )
    fp = results.get("footprint")
    if isinstance(fp, dict) and "connector" in fp:
        ours, base = fp["connector"], fp["baseline"]
        out.append(
            (
                "Connector idle RSS (baseline's)",
                f"{ours['idle_rss_mib']:.1f} MiB ({base['idle_rss_mib']:.1f} MiB)",
                "<= baseline",
                _met(ours["idle_rss_mib"] <= base["idle_rss_mib"]),
            )
        )
        out.append(
            (
                "Connector start -> first answered request (baseline's)",
                f"{ours['start_to_first_answer_s']:.2f} s "
                f"({base['start_to_first_answer_s']:.2f} s)",
                "<= 0.2 s",
                _met(ours["start_to_first_answer_s"] <= 0.2),
            )
        )
        for step in fp.get("imports", [])[1:]:
            out.append(
                (
                    f"  connector imports, {step.get('when', '')}: + {step['step']}",
                    f"+{step['adds_mib']:.1f} MiB, {step['seconds'] * 1000:.0f} ms "
                    f"(RSS {step['rss_mib']:.1f} MiB)",
                    "-",
                    "",
                )
            )
        sender = fp["sender"]
        out.append(
            (
                "Vehicle data sender idle RSS; start -> first value",
                f"{sender['idle_rss_mib']:.1f} MiB; {sender['start_to_first_value_s']:.2f} s",
                "< 40 MB; < 1 s",
                _met(
                    sender["idle_rss_mib"] * 1.048576 < 40 and sender["start_to_first_value_s"] < 1
                ),
            )
        )
        out.append(
            (
                "Emulator process RSS (for comparison)",
                _fmt(ours["emulator_rss_mib"], "MiB", 1),
                "-",
                "",
            )
        )
    for key, label in (
        ("fleet", "mosquitto"),
        ("bridged", "2 mosquittos bridged (MQTT 5)"),
        ("nats", "3-node NATS, MQTT 3.1.1"),
    ):
        fl = results.get(key)
        if not isinstance(fl, dict) or "cars" not in fl:
            continue
        cars = fl["cars"]
        walls = [r["wall_s"] for r in fl["applies"]]
        slowest = [r["slowest_car_s"] for r in fl["applies"] if r["slowest_car_s"] is not None]
        broker_cpu = sum(r["broker_cpu_s"] for r in fl["applies"]) / len(fl["applies"])
        cars_cpu = sum(r["cars_cpu_s"] for r in fl["applies"]) / len(fl["applies"])
        ok = all(r["exit"] == 0 for r in fl["applies"])
        out.append(
            (
                f"{cars}-car apply via fleetctl on {label} (fleetctl process, median of "
                f"{len(walls)})",
                f"{fl['apply_wall_s_median']:.2f} s"
                + ("" if ok else _not_ok(_failed_run(fl["applies"]))),
                # Issue #7's target was set for 100 cars; #12 asks figures for 1,000.
                "< 3 s" if cars == 100 else "- (all ok)",
                _met((fl["apply_wall_s_median"] < 3 or cars != 100) and ok),
            )
        )
        out.append(
            (
                f"  {label}: slowest car publish->reply; broker CPU / cars CPU per apply",
                f"{max(slowest) if slowest else 0:.2f} s; {broker_cpu:.2f} s / {cars_cpu:.2f} s",
                "-",
                "",
            )
        )
        states = fl.get("states") or []
        if states:
            state_slowest = [r["slowest_car_s"] for r in states if r["slowest_car_s"] is not None]
            state_ok = all(r["exit"] == 0 for r in states)
            out.append(
                (
                    f"{cars}-car state via fleetctl on {label} (median of {len(states)}); "
                    "slowest car; broker CPU",
                    f"{fl['state_wall_s_median']:.2f} s"
                    + ("" if state_ok else _not_ok(_failed_run(states)))
                    + f"; {max(state_slowest) if state_slowest else 0:.2f} s; "
                    + f"{sum(r['broker_cpu_s'] for r in states) / len(states):.2f} s",
                    "-",
                    "",
                )
            )
        out.append(
            (
                f"  {label}: memory per car, {fl['host_processes']} host processes; "
                "idle CPU; fleet ready",
                f"{fl['rss_mib_per_car']:.2f} MiB; {fl['idle_cpu_percent_of_one_core']:.0f}% "
                f"of a core; {fl['fleet_ready_s']:.1f} s",
                "-",
                "",
            )
        )
    for name, value in results.items():
        if isinstance(value, dict) and "failed" in value:
            out.append((f"{name}: could not run", str(value["failed"])[:120], "-", "**no**"))
    return out


# Why a target is missed, in one line each; bench/README.md ("Where the time goes") has the
# measurements behind them.
WHY = {
    "state p50 / baseline": "No thread hand-off is left on the path (one loop; hand-off "
    "table below). What is left: the connector speaks MQTT 5 at QoS 1 with a manual ack "
    "after the reply (the two echo rows: the QoS 1 echo is slower than the tutorial's QoS 0 "
    "by about that much), and it checks each request (dedupe, expiry, policy, signatures) "
    "where the baseline checks nothing. The single-loop prototype row, which skips most of "
    "those checks, shows what they cost",
    "tutorial connector at QoS 1": "the same delivery level as the tutorial's loop at QoS 1, "
    "so what is left is the connector's own work: 1.20x the tutorial loop's instructions per "
    "request (python -m bench.instructions), of which its log line, written after the "
    "reply, is 8.6 %, the single loop's three turns per request about 5 %, MQTT 5 2.5 % and "
    "all checks together (dedupe, expiry, policy, signature envelope) 1.5 % (bench/README.md, "
    "'The connector against the tutorial's loop at QoS 1')",
    "state p50 over the bare echo": "the emulator's own share (its state round trip alone, "
    "above) plus the connector's processing; the echo does no work. The baseline misses it "
    "too",
    "apply p50 / baseline": "the connector reads and checks the manifest itself (YAML, "
    "JSON-schema validation, policy) where the SDK only parses it",
    "p99 / baseline": "tail latency on a shared 2-core machine (see the load average under "
    "Machine): requests run on one thread, but the connector's live-state and log threads "
    "share the interpreter lock with it",
    "idle RSS": "the connector's own modules for what every car does (requests, policy, "
    "signature checks, live states, presence, outcomes): the 'at start' import row, all of the "
    "difference; from import to idle both grow alike. The journal, log streams, flags, "
    "validation, plans and signatures' cryptography load on first use (the rows below it)",
    "first answered request": "Python's start and imports (paho and the SDK's protobuf "
    "alone take about 0.08 s, the connector's own modules about 0.035 s; see the import "
    "rows) on a machine whose cores were shared; the baseline misses it too",
    "Pipelined state requests": "the connector's CPU per request (next row) on a machine "
    "whose cores were shared; the emulator is not the limit (its ceiling row)",
    "CPU per request": "per-request Python work, most of it paho's packet handling (a "
    "send per packet; bench/README.md, 'Where the time goes')",
    "-car apply": "the first apply starts a workload in every car at once, and some "
    "emulators, simulated in the same host processes as the connectors, answer after the "
    "connector's REQUEST_TIMEOUT (5 s); the second apply and every state read were all ok",
}


def findings(results: dict[str, Any], lines: list[tuple[str, str, str, str]]) -> list[str]:
    """Missed targets with by how much and why, and where a request's time goes."""
    out: list[str] = []
    missed = [line for line in lines if line[3] == "**no**"]
    if missed:
        out += ["## Missed targets", ""]
        for figure, measured, target, _ in missed:
            why = next((text for key, text in WHY.items() if key in figure and text), "")
            out.append(f"- {figure.strip()}: {measured}, target {target}. {why}".rstrip())
        out.append("")
    hops = (results.get("latency") or {}).get("handoffs")
    if isinstance(hops, dict) and "ours" in hops:
        out += [
            "## Where a state request's time goes (medians, ms, bench/handoffs.py)",
            "",
            "| Stage | Connector | Baseline |",
            "| --- | --- | --- |",
        ]
        ours, base = hops["ours"]["median_ms"], hops["baseline"]["median_ms"]
        for stage in ours:
            out.append(f"| {stage} ({hops['ours']['threads'][stage]}) | {ours[stage]} | |")
        for stage in base:
            out.append(f"| {stage} ({hops['baseline']['threads'][stage]}) | | {base[stage]} |")
        out.append(
            f"| in the process: on_message -> sent | {hops['ours']['on_message_to_sent_median_ms']}"
            f" | {hops['baseline']['on_message_to_sent_median_ms']} |"
        )
        out.append(
            f"| client round trip p50 | {hops['ours']['client_round_trip_p50_ms']} | "
            f"{hops['baseline']['client_round_trip_p50_ms']} |"
        )
        out.append("")
    return out


def _failed_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return next((r for r in runs if r["exit"] != 0), runs[-1])


def _not_ok(run: dict[str, Any]) -> str:
    summary = run.get("summary")
    if isinstance(summary, dict):
        return f" but only {summary['ok']}/{summary['total']} ok ({', '.join(run['errors'])})"
    return f" but failed: {str(summary)[:80]}"


def table(lines: list[tuple[str, str, str, str]]) -> str:
    header = ("Figure", "Measured", "Target", "Met")
    text = [f"| {' | '.join(header)} |", "| --- | --- | --- | --- |"]
    text += [f"| {' | '.join(line)} |" for line in lines]
    return "\n".join(text)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset; also {', '.join(OPTIONAL_BENCHMARKS)}, not run by default",
    )
    parser.add_argument("--samples", type=int, default=500, help="round trips per latency figure")
    parser.add_argument("--requests", type=int, default=10_000, help="pipelined requests")
    parser.add_argument(
        "--cars",
        type=int,
        default=1000,
        help="cars in the fleet benchmarks (sent to in waves of 100 above 250)",
    )
    parser.add_argument(
        "--hosts",
        type=int,
        default=None,
        help="host processes for the fleet (default: one per core, at most 100 cars each)",
    )
    parser.add_argument(
        "--sim-cars",
        type=int,
        default=sim_scale.DEFAULT_CARS,
        help="simulated cars for --only sim (fleet-sim)",
    )
    parser.add_argument(
        "--server-cars",
        type=int,
        default=fleet_server.DEFAULT_CARS,
        help="simulated cars for the server benchmarks (issue #23's goal: 100000)",
    )
    parser.add_argument("--applies", type=int, default=3, help="fleetctl applies per fleet")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled runs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    args = parser.parse_args()
    selected = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(selected) - set(BENCHMARKS) - set(OPTIONAL_BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    if args.hosts is None:
        args.hosts = max(os.cpu_count() or 2, -(-args.cars // CARS_PER_HOST))
    # A benchmark stopped from outside (timeout, Ctrl-C) still stops what it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    info = machine()
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    profile = not args.no_profile
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        for name in selected:
            print(f"== {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                if name == "latency":
                    results[name] = latency.run(work / name, args.samples, profile)
                    if profile:
                        results[name]["handoffs"] = handoffs.run(
                            work / "handoffs", min(args.samples, 400)
                        )
                elif name == "throughput":
                    results[name] = throughput.run(work / name, args.requests, profile)
                elif name == "footprint":
                    results[name] = footprint.run(work / name, 3)
                elif name == "fleet":
                    results[name] = fleet.run_mosquitto(
                        work / name, args.cars, args.hosts, args.applies
                    )
                elif name == "bridged":
                    results[name] = fleet.run_bridged(
                        work / name, args.cars, args.hosts, args.applies
                    )
                elif name == "nats":
                    results[name] = fleet.run_nats(work / name, args.cars, args.hosts, args.applies)
                elif name == "dashboard":
                    results[name] = dashboard.run(work / name)
                elif name == "live":
                    results[name] = live.run(work / name)
                elif name == "sim":
                    results[name] = sim_scale.run(work / name, args.sim_cars)
                elif name == "server":
                    results[name] = fleet_server.run_mosquitto(work / name, args.server_cars)
                elif name == "server-brokers":
                    results[name] = fleet_server.run_brokers(work / name, args.server_cars)
                elif name == "server-dashboard":
                    # fleetctl's dashboard at 20,000 (the dashboard in fleet-server is #21's).
                    results[name] = dashboard.run_sim(work / name)
                elif name == "server-rollout":
                    results[name] = rollout_scale.run(work / name, args.server_cars)
            except Exception as e:
                traceback.print_exc()
                results[name] = {"failed": f"{type(e).__name__}: {e}"}
            durations[name] = round(time.monotonic() - started, 1)
            print(f"   {name}: {durations[name]} s", file=sys.stderr, flush=True)
    lines = (
        rows(results, args)
        + dashboard.rows(results.get("dashboard"))
        + live.rows(results.get("live"))
        + sim_scale.rows(results.get("sim"))
        + fleet_server.rows(results.get("server"), results.get("server-brokers"))
        + dashboard.rows(results.get("server-dashboard"))
        + rollout_scale.rows(results.get("server-rollout"))
    )
    text = table(lines)
    print(text)
    report = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); see bench/README.md for what each figure "
        "means. Figures, not pass/fail: a missed target is a finding.",
        "",
        text,
        "",
        *findings(results, lines),
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        "## Run",
        "",
        f"- command: `python -m bench {' '.join(sys.argv[1:])}`".rstrip(),
        f"- seconds per benchmark: {json.dumps(durations)}",
        "- profiles: bench/profiles/*.txt (top functions, time per thread; .pstats for pstats)",
        "",
        "## Raw figures",
        "",
        "```json",
        json.dumps(results, indent=1),
        "```",
        "",
    ]
    args.out.write_text("\n".join(report))
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return 1 if any(isinstance(v, dict) and "failed" in v for v in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
