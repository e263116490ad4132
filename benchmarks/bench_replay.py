"""`earlywarn replay` of a large Parquet file, end to end (read -> rules -> alarms -> store), readings/s.

    python benchmarks/bench_replay.py [--quick] [--readings N]

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
"""

from __future__ import annotations

import argparse
import json
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 M readings instead of 10 M")
    ap.add_argument("--readings", type=int, default=None)
    args = ap.parse_args(argv)
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
