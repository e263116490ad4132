"""Micro-batch stage: sequencing a decoded batch (Sequencer.split + advance) against per-reading baselines.

The sequencer splits a batch into readings certainly new for their sensor (the rules evaluate these) and
readings that may repeat a stored one, then moves each sensor's high-water mark. Its cost is per sensor in
the batch: with 100-reading payloads from many sites, a 40 000-reading batch holds about one reading per
sensor, which is the expensive regime. Baselines in the same process:
- naive: one dict look-up and one update per reading, in a Python loop (what a per-reading engine does);
- dict per sensor: the sequencer's previous design (a group-by, then one dict look-up per sensor).

    python benchmarks/bench_batch.py [--quick] [--out results/batch.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from earlywarn.batch import Sequencer, _per_sensor
from earlywarn.model import ReadingBatch


def make_batch(n_sensors: int, per_sensor: int, t0_ms: int, sites: int = 500) -> ReadingBatch:
    site = np.array([f"site{i % sites:04d}" for i in range(n_sensors)])
    tag = np.array([f"TAG_{i // sites:05d}.PV" for i in range(n_sensors)])
    n = n_sensors * per_sensor
    return ReadingBatch(pl.DataFrame({
        "site": np.repeat(site, per_sensor),
        "tag": np.repeat(tag, per_sensor),
        "ts_ms": t0_ms + np.tile(np.arange(per_sensor, dtype=np.int64), n_sensors),
        "value": np.zeros(n),
        "quality": np.zeros(n, np.int8),
    }))


def naive(batches: list[ReadingBatch], marks: dict[tuple[str, str], int]) -> int:
    fresh = 0
    for b in batches:
        for site, tag, ts in b.frame.select("site", "tag", "ts_ms").iter_rows():
            key = (site, tag)
            prev = marks.get(key)
            if prev is None or ts > prev:
                marks[key] = ts
                fresh += 1
    return fresh


def dict_per_sensor(batches: list[ReadingBatch], marks: dict[tuple[str, str], int]) -> int:
    fresh = 0
    for b in batches:
        sensors = _per_sensor(b.frame)
        keys = list(zip(sensors.get_column("site").to_list(), sensors.get_column("tag").to_list(), strict=True))
        last = pl.Series([marks.get(k) for k in keys], dtype=pl.Int64)
        is_fresh = (sensors.get_column("min_ts") > last).fill_null(True)
        fresh += int(sensors.get_column("n").filter(is_fresh).sum())
        for k, ts in zip(keys, sensors.get_column("max_ts").to_list(), strict=True):
            prev = marks.get(k)
            if prev is None or ts > prev:
                marks[k] = ts
    return fresh


def ours(batches: list[ReadingBatch], seq: Sequencer) -> int:
    fresh = 0
    for b in batches:
        split = seq.split(b)
        fresh += len(split.fresh)
        seq.advance(split)
    return fresh


def _one(fn: Callable[..., int], warm: ReadingBatch, batches: list[ReadingBatch], readings: int) -> None:
    """Fresh state, warmed with every sensor, then the timed batches."""
    if fn is ours:
        seq = Sequencer()
        seq.advance(seq.split(warm))
        fresh = ours(batches, seq)
    else:
        marks: dict[tuple[str, str], int] = {}
        fn([warm], marks)
        fresh = fn(batches, marks)
    assert fresh == readings, (fn.__name__, fresh, readings)


def _best(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def run(quick: bool) -> list[dict]:
    shapes = [(40_000, 1), (4_000, 10)] if quick else [(40_000, 1), (100_000, 1), (4_000, 10), (400, 100)]
    n_batches, repeats = (3, 2) if quick else (5, 3)
    rows = []
    for n_sensors, per in shapes:
        warm = make_batch(n_sensors, per, 0)
        batches = [make_batch(n_sensors, per, 1_000 * (k + 1)) for k in range(n_batches)]
        readings = n_sensors * per * n_batches
        res = {}
        for name, fn in (("naive", naive), ("dict per sensor", dict_per_sensor), ("ours", ours)):
            # the warm-up batch (every sensor new) is inside each timing, the same for all three
            res[name] = _best(partial(_one, fn, warm, batches, readings), repeats)
        row = {
            "sensors": n_sensors, "readings_per_sensor": per, "readings": readings,
            **{f"{k}_ns_per_reading": v / (readings + n_sensors * per) * 1e9 for k, v in res.items()},
            "vs_naive": res["naive"] / res["ours"], "vs_dict_per_sensor": res["dict per sensor"] / res["ours"],
        }
        rows.append(row)
        print(f"{n_sensors:>7,} sensors x {per:>3} per batch: ours {row['ours_ns_per_reading']:6.0f} ns/reading, "
              f"dict per sensor {row['dict per sensor_ns_per_reading']:6.0f}, naive {row['naive_ns_per_reading']:6.0f}"
              f"  -> {row['vs_naive']:.1f}x naive, {row['vs_dict_per_sensor']:.1f}x dict per sensor")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import os

    print(f"micro-batch sequencing (CPU time, best of repeats), load {os.getloadavg()[0]:.1f}")
    rows = run(args.quick)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
