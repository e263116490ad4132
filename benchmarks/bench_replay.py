"""`earlywarn replay` of a large Parquet file, end to end (read -> rules -> alarms -> store), readings/s.

    python benchmarks/bench_replay.py [--quick] [--readings N]
    python benchmarks/bench_replay.py --rules-only [--repeats R] [--profile] [--quick] [--readings N]

Workload (seeded, built once and cached in benchmarks/results/cache/): simulated plants of every type
(`simulators.simulate_sites`, with their fault scenarios, so rules raise and clear alarms), 10 M readings
(1 M with --quick) over 240 sites, written with `simulators.write_replay` (zstd Parquet). Generation is
outside every timed part.

Timed, each a fresh `earlywarn replay --config FILE INPUT` process into a fresh DuckDB file (what a user
runs; process start and imports included in the wall time):
- replay: the whole path; target >= 2 M readings/s;
- replay --no-readings: the same without storing the readings (rules, alarms and signals still stored),
  to show what the readings table costs;
- limit: DuckDB alone loading the same file into a table of the same shape (`INSERT ... SELECT FROM
  read_parquet`), in a fresh process: what the store stage could at best do with this file.
Writes benchmarks/results/replay.json.

--rules-only: the rule engine alone on the same file and the shipped packs, in this process
(POLARS_MAX_THREADS=1; the engine's worker thread for the windowed kinds runs as in a replay): the file
read as `earlywarn replay` reads it, cut into the same chunks (--chunk), `RuleEngine.evaluate` + `tick`
per chunk with the replay clock (event time), timed in CPU seconds of all threads. Best of
--repeats fresh engines, and the sum over chunks of each chunk's best (less sensitive to a busy machine).
The chunks' names are given as codes (NameCodes), as `run_replay` gives them, coded once for the file
(its cost reported apart); --hash-names: the engine hashes the name columns per chunk instead (the live
path).
--profile: one more run under cProfile (in CPU time; the windowed kinds kept on the profiled thread),
the top functions by internal time. Writes replay_rules.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import CACHE, Figure, engine_config, env_block, plant_sites, write_json

SEED = 20261128
START_MS = 1_764_288_000_000
N_SITES_PER_PLANT = 60


def workload(n_readings: int) -> tuple[Path, list[tuple[str, str]]]:
    """The cached Parquet file of exactly `n_readings` readings, and its sites."""
    import polars as pl

    from simulators import simulate_sites
    from simulators.publish import readings_frame

    sites = plant_sites(N_SITES_PER_PLANT)
    path = CACHE / f"replay-{n_readings}-s{SEED}.parquet"
    if path.exists():
        return path, sites
    CACHE.mkdir(parents=True, exist_ok=True)
    # about 5.3 readings/s per site on average across the four plant types: size the span to overshoot
    span_s = int(n_readings / (5.0 * len(sites))) + 600
    t = time.perf_counter()
    run = simulate_sites(sites, START_MS, duration_s=span_s, seed=SEED, speed=1.0, scenarios="auto")
    frame = readings_frame([r.readings() for r in run.runs]).head(n_readings)
    if frame.height < n_readings:
        msg = f"simulated only {frame.height} readings, wanted {n_readings}"
        raise RuntimeError(msg)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True)
    tmp.rename(path)
    print(f"built {path.name}: {frame.height:,} readings, {len(sites)} sites, "
          f"{pl.read_parquet_schema(path)} in {time.perf_counter() - t:.1f} s", flush=True)
    return path, sites


def _replay(cfg: Path, inp: Path, no_readings: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "earlywarn", "replay", "--config", str(cfg), str(inp)]
    if no_readings:
        cmd.append("--no-readings")
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cfg.parent, check=False)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        msg = f"replay failed ({p.returncode}): {p.stderr[-2000:]}"
        raise RuntimeError(msg)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


_LIMIT = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SET enable_progress_bar = false")
con.execute("CREATE TABLE readings (site VARCHAR NOT NULL, tag VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, "
            "value DOUBLE, quality VARCHAR NOT NULL, batch_seq BIGINT NOT NULL)")
t = time.perf_counter()
n = con.execute("INSERT INTO readings SELECT site, tag, make_timestamptz(ts * 1000), value, quality, 1 "
                "FROM read_parquet(?)", [sys.argv[2]]).fetchone()[0]
con.execute("CHECKPOINT")
print(n, time.perf_counter() - t)
"""


def _limit(db: Path, inp: Path) -> tuple[int, float, float]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _LIMIT, str(db), str(inp)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    n, inner = p.stdout.strip().splitlines()[-1].split()  # DuckDB may draw a progress bar before it
    return int(n), float(inner), wall


def run(quick: bool, n_readings: int | None = None) -> dict[str, Any]:
    n = n_readings or (1_000_000 if quick else 10_000_000)
    inp, sites = workload(n)
    res: dict[str, Any] = {"readings": n, "sites": len(sites), "input": inp.name,
                           "input_mb": round(inp.stat().st_size / 2**20, 1)}
    with tempfile.TemporaryDirectory(prefix="bench_replay_") as d:
        tmp = Path(d)
        full = _replay(engine_config(tmp, "replay", sites), inp, no_readings=False)
        res["replay"] = full
        nr = _replay(engine_config(tmp, "replay_nr", sites), inp, no_readings=True)
        res["replay_no_readings"] = nr
        stored, inner, wall = _limit(tmp / "limit.duckdb", inp)
        res["limit"] = {"readings": stored, "insert_s": inner, "process_wall_s": wall}
    w = res["replay"]["process_wall_s"]
    res["figures"] = [
        Figure("replay", f"replay {n / 1e6:g} M readings, whole process", n / w, "readings/s",
               baseline=n / res["limit"]["process_wall_s"], baseline_label="DuckDB alone loading the file",
               target=2e6, note=f"signals {full['signals']:,}; in-command rate {full['readings_per_second']:,}/s"
               ).as_dict(),
        Figure("replay", "replay --no-readings", n / res["replay_no_readings"]["process_wall_s"], "readings/s",
               baseline=n / res["limit"]["process_wall_s"], baseline_label="DuckDB alone loading the file"
               ).as_dict(),
    ]
    return res


def rules_only(n: int, repeats: int, profile: bool, chunk: int | None = None, hash_names: bool = False
               ) -> dict[str, Any]:
    """The rule engine alone over the replay file (see the module docstring)."""
    import numpy as np

    from earlywarn.config import load_config
    from earlywarn.model import ReadingBatch
    from earlywarn.pipeline import (
        REPLAY_CHUNK,
        _chunk_bounds,
        _replay_names,
        load_site_rules,
        read_replay_files,
    )
    from earlywarn.rules.engine import RuleEngine

    chunk = chunk or REPLAY_CHUNK

    inp, sites = workload(n)
    with tempfile.TemporaryDirectory(prefix="bench_replay_rules_") as d:
        _, site_rules = load_site_rules(load_config(str(engine_config(Path(d), "rules", sites))))
    batch, _ = read_replay_files([str(inp)])
    frame = batch.frame
    bounds = _chunk_bounds(frame.get_column("ts_ms").to_numpy(), chunk)  # as run_replay cuts them
    parts = [ReadingBatch(frame.slice(off, end - off)) for off, end in bounds]
    now = [int(p.frame["ts_ms"].max()) for p in parts]
    c_names = time.process_time()
    names = None if hash_names else _replay_names(frame)
    c_names = time.process_time() - c_names
    codes = [None if names is None else names.slice(off, end) for off, end in bounds]

    def one_run(inline: bool = False) -> tuple[float, list[float], int, int]:
        eng = RuleEngine(site_rules)
        if inline:  # cProfile sees one thread: keep the windowed kinds on it
            eng.overlap_min_points = 1 << 62
        per, n_ev, n_sig = [], 0, 0
        c0 = time.process_time()
        clock = -(2**62)
        for part, t, nc in zip(parts, now, codes):
            clock = max(clock, t)  # the replay's event clock
            c = time.process_time()
            res = eng.evaluate(part, clock, nc)
            sig = eng.tick(clock)
            per.append(time.process_time() - c)
            n_ev += res.evaluated
            n_sig += len(res.signals) + len(sig)
        return time.process_time() - c0, per, n_ev, n_sig

    best, per_min, n_ev, n_sig = float("inf"), np.full(len(parts), np.inf), 0, 0
    load_before = os.getloadavg()
    for _ in range(repeats):
        cpu, per, n_ev, n_sig = one_run()
        best = min(best, cpu)
        per_min = np.minimum(per_min, per)
    res: dict[str, Any] = {
        "readings": frame.height, "evaluated": n_ev, "signals": n_sig, "chunks": len(parts),
        "repeats": repeats, "cpu_s_best": best, "cpu_s_min_per_chunk": float(per_min.sum()),
        "readings_per_cpu_s": frame.height / best,
        "readings_per_cpu_s_min_per_chunk": frame.height / per_min.sum(),
        "names": "hashed per chunk" if hash_names else "codes", "names_coding_cpu_s": c_names,
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
    }
    if profile:
        import cProfile
        import io
        import pstats

        pr = cProfile.Profile(time.process_time)  # CPU time: other processes on the machine do not count
        pr.enable()
        one_run(inline=True)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(25)
        res["profile"] = s.getvalue()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 M readings instead of 10 M")
    ap.add_argument("--readings", type=int, default=None)
    ap.add_argument("--rules-only", action="store_true", help="the rule engine alone, CPU seconds, one core")
    ap.add_argument("--repeats", type=int, default=3, help="--rules-only: fresh engines, best taken")
    ap.add_argument("--profile", action="store_true", help="--rules-only: one more run under cProfile")
    ap.add_argument("--hash-names", action="store_true", help="--rules-only: hash the names per chunk (live path)")
    ap.add_argument("--chunk", type=int, default=None, help="--rules-only: rows per chunk (default: run_replay's)")
    args = ap.parse_args(argv)
    if args.rules_only:
        os.environ.setdefault("POLARS_MAX_THREADS", "1")  # one core (polars is imported later)
        n = args.readings or (1_000_000 if args.quick else 10_000_000)
        r = rules_only(n, args.repeats, args.profile, chunk=args.chunk, hash_names=args.hash_names)
        print(f"rules only (shipped packs, {r['chunks']} chunks, best of {r['repeats']}): {n:,} readings, "
              f"{r['evaluated']:,} evaluated, {r['signals']:,} signals")
        print(f"  cpu {r['cpu_s_best']:.2f} s  {r['readings_per_cpu_s']:>12,.0f} readings/cpu-s   "
              f"(min per chunk: {r['cpu_s_min_per_chunk']:.2f} s, "
              f"{r['readings_per_cpu_s_min_per_chunk']:,.0f}/s)")
        if not args.hash_names:
            print(f"  names coded once for the file (not in the figure above): {r['names_coding_cpu_s']:.2f} cpu s")
        print(f"  load average before {r['load_avg_before']}, after {r['load_avg_after']}")
        if "profile" in r:
            print(r["profile"])
        path = write_json("replay_rules.json", {"benchmark": "replay_rules", **env_block(), **r})
        print(f"wrote {path}")
        return 0
    res = run(args.quick, args.readings)
    r, nr, lim = res["replay"], res["replay_no_readings"], res["limit"]
    n = res["readings"]
    print(f"replay of {n:,} readings ({res['input_mb']} MB Parquet, {res['sites']} sites of 4 plant types)")
    print(f"  replay (whole process)      {n / r['process_wall_s']:>12,.0f} r/s   {r['process_wall_s']:.2f} s "
          f"(read {r['read_seconds']} s; {r['signals']:,} signals; in-command {r['readings_per_second']:,} r/s)")
    print(f"  replay --no-readings        {n / nr['process_wall_s']:>12,.0f} r/s   {nr['process_wall_s']:.2f} s")
    print(f"  limit: DuckDB alone         {n / lim['process_wall_s']:>12,.0f} r/s   {lim['process_wall_s']:.2f} s "
          f"(INSERT+CHECKPOINT {lim['insert_s']:.2f} s)")
    print(f"  target >= 2 M readings/s: {'met' if res['figures'][0]['met'] else 'NOT met'}")
    path = write_json("replay.json", {"benchmark": "replay", "quick": args.quick, **env_block(), **res})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
