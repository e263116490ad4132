"""`earlywarn simulate`: the load generator, or simulated plants with scenarios (to a broker or to files).

    earlywarn simulate --sites 10 --tags-per-site 100 --rate 100000 --duration 10 [--host --port --batch --qos --seed]
    earlywarn simulate --plants hazchem,dust,aluminum --duration 60 --speed 60 [--host --port]      # live, compressed clock
    earlywarn simulate --plants aluminum --scenario cw_pump_trip --out run.parquet --truth truth.json  # replay file
    earlywarn simulate --list-scenarios
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from simulators import load
from simulators.publish import MqttPublisher, write_replay
from simulators.run import DEFAULT_START_MS, run_scenario, simulate_sites
from simulators.scenarios import SCENARIOS, write_ground_truth_json
from simulators.transport import TransportFaults


def _plants_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="earlywarn simulate --plants",
                                description="Simulated plants running fault scenarios on a compressed clock.")
    p.add_argument("--plants", required=True, help="comma-separated plant types: hazchem,dust,aluminum,steel")
    p.add_argument("--sites-per-plant", type=int, default=1)
    p.add_argument("--scenario", action="append", default=[],
                   help="run exactly this scenario (repeatable; one site each); default: scenarios that fit")
    p.add_argument("--duration", type=float, default=60.0, help="wall-clock seconds (live) or event span / speed")
    p.add_argument("--speed", type=float, default=60.0, help="event seconds per wall second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start-ms", type=int, default=None,
                   help="event time of the start (default: live = now - duration*speed, so it ends now)")
    p.add_argument("--batch-window-ms", type=int, default=1000, help="gateway upload window; 0 = one reading per message")
    p.add_argument("--transport-faults", action="store_true", help="jitter, duplicates, out-of-order (domain defaults)")
    p.add_argument("--malformed-rate", type=float, default=0.0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    p.add_argument("--out", default=None, help="write a replay file (.parquet/.csv/.ndjson) instead of publishing")
    p.add_argument("--truth", default=None, help="write the ground truth as JSON")
    return p


def plants_main(argv: Sequence[str]) -> int:
    args = _plants_parser().parse_args(argv)
    plants = [p.strip() for p in args.plants.split(",") if p.strip()]
    window = args.batch_window_ms or None
    faults = None
    if args.transport_faults or args.malformed_rate:
        base = TransportFaults() if args.transport_faults else TransportFaults.none()
        faults = TransportFaults(**{**base.__dict__, "malformed_rate": args.malformed_rate})
    if args.scenario:
        start_ms = args.start_ms or DEFAULT_START_MS
        runs = [run_scenario(name, start_ms=start_ms, seed=args.seed) for name in args.scenario]
        sites_run = None
    else:
        span_ms = int(args.duration * args.speed * 1000)
        start_ms = args.start_ms if args.start_ms is not None else (
            DEFAULT_START_MS if args.out else int(time.time() * 1000) - span_ms)
        sites = [(f"SIM-{p.upper()}-{k + 1:02d}", p) for p in plants for k in range(args.sites_per_plant)]
        sites_run = simulate_sites(sites, start_ms, args.duration, args.seed, args.speed,
                                   batch_window_ms=window, transport=faults)
        runs = sites_run.runs
    truths = [t for r in runs for t in r.truths]
    if args.truth:
        write_ground_truth_json(args.truth, truths)
    if args.out:
        path = write_replay(args.out, [r.readings() for r in runs])
        print(f"wrote {sum(len(r.readings()) for r in runs):,} readings of {len(runs)} site(s) to {path}"
              + (f"; ground truth of {len(truths)} scenario(s) to {args.truth}" if args.truth else ""))
        return 0
    pub = MqttPublisher(args.host, args.port, qos=args.qos)
    try:
        pub.connect()
    except (ConnectionError, OSError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2
    try:
        if sites_run is not None:
            stats = pub.publish_timed(sites_run.messages())
        else:
            msgs = [(m.topic, m.payload) for r in runs for m in r.messages(batch_window_ms=window, transport=faults)[0]]
            stats = pub.publish_all(msgs)
    finally:
        pub.close()
    print(f"published {stats.messages:,} messages in {stats.seconds:.1f} s ({stats.acked:,} acknowledged); "
          f"{len(truths)} scenario(s): " + ", ".join(f"{t.site}:{t.scenario}" for t in truths))
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `earlywarn simulate ARGS`: plant mode with `--plants`, else the load generator."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list-scenarios" in argv:
        for sc in SCENARIOS.values():
            print(f"{sc.plant:9s} {sc.name:30s} {sc.span_s / 60:7.0f} min  {sc.title}")
        return 0
    if any(a == "--plants" or a.startswith("--plants=") for a in argv):
        return plants_main(argv)
    return load.main(argv)
