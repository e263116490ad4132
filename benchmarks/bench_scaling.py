"""Scaling of the rule engine: readings/s, peak memory and rule-state bytes as sensors and rules grow.

    python benchmarks/bench_scaling.py [--quick]

Two sweeps, each point in its own fresh process (so peak RSS belongs to that point alone):
- sensors 1 k -> 10 k -> 100 k -> 1 M (quick: up to 100 k), 10 tags per site, 10 rules per plant (one per
  tag: 9 threshold rules with deadband and on/off delays, 1 rate rule over 10 s);
- rules per plant 10 -> 100 -> 1 000 (quick: up to 100) on 10 000 sensors (100 sites x 100 tags); rule j
  watches tag j mod 100 with its own limit, every tenth rule a rate rule.
Every sensor reads once per second (random walks crossing their limits now and then, seeded); a batch
holds whole seconds of all sensors, at least 100 000 readings; one warm-up batch registers the sensors
(timed apart), further untimed batches complete WARM_S seconds of data (the rate rule's window filled,
the start-up burst of raises of the sensors that begin above their limit over), then at least 1 M
readings (quick: 300 k) are evaluated (timed: `RuleEngine.evaluate` only, batches built before). Without
that, a point whose batches are 1 s long (100 k sensors and more) timed the start-up burst (4x the
signals per reading of the other points) and a rate rule still without references.

Reported per point: readings/s (wall and CPU), sensor-rule evaluations/s, peak RSS and its growth over
the point's own baseline, `len(RuleEngine.snapshot())` and the tracemalloc'd size of the engine built and
warmed (both divided by sensor-rule pairs; target <= 200 bytes). The exponent is the log-log slope of
CPU time per second-of-data against sensors (or rules): 1.0 is linear. Plots: scaling.png.
Writes benchmarks/results/scaling.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # one core: the figure the targets speak of

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS, Figure, env_block, write_json

T0_MS = 1_767_225_600_000
MIN_BATCH = 100_000
MIN_TIMED = 1_000_000
WARM_S = 20  # seconds of data evaluated before the timed part: > rate window (10 s) + on/off delays


def _pack(n_rules: int, n_tags: int) -> list[Any]:
    from earlywarn.model import Severity
    from earlywarn.rules.types import RuleKind, RuleSpec

    rules = []
    for j in range(n_rules):
        tag = f"t{j % n_tags:04d}"
        if j % 10 == 9:
            rules.append(RuleSpec(id=f"roc{j}", kind=RuleKind.RATE, plant="bench", severity=Severity.YELLOW, tag=tag,
                                  op=">", limit=30.0 + j % 7, deadband=5.0, window_ms=10_000))
        else:
            rules.append(RuleSpec(id=f"hi{j}", kind=RuleKind.THRESHOLD, plant="bench", severity=Severity.ORANGE,
                                  tag=tag, op=">", limit=75.0 + (j // n_tags) % 20, deadband=2.0, on_delay_ms=3000,
                                  off_delay_ms=2000))
    return rules


def point(n_sensors: int, n_tags: int, n_rules: int, min_timed: int = MIN_TIMED, seed: int = 7) -> dict[str, Any]:
    """One measurement, in this (fresh) process."""
    import tracemalloc

    import numpy as np
    import polars as pl
    from common import peak_rss_mb, rss_mb

    from earlywarn.model import READING_SCHEMA, ReadingBatch
    from earlywarn.rules.engine import RuleEngine

    n_sites = n_sensors // n_tags
    secs = max(1, MIN_BATCH // n_sensors)
    batch_n = secs * n_sensors
    n_batches = max(2, math.ceil(min_timed / batch_n))
    n_warm = max(1, math.ceil(WARM_S / secs))  # the first registers the sensors
    rng = np.random.default_rng(seed)
    sites = np.repeat(np.array([f"s{i:06d}" for i in range(n_sites)], dtype=object), n_tags)
    tags = np.tile(np.array([f"t{i:04d}" for i in range(n_tags)], dtype=object), n_sites)
    site_col = pl.Series("site", np.tile(sites, secs), dtype=pl.String)
    tag_col = pl.Series("tag", np.tile(tags, secs), dtype=pl.String)
    walk = [rng.uniform(40, 90, n_sensors)]

    def make(b: int) -> ReadingBatch:  # batches in order b = 0, 1, 2, ... (the walks continue)
        steps = rng.normal(0, 1.5, (secs, n_sensors))
        vals = np.clip(walk[0] + np.cumsum(steps, axis=0), 0, 100)
        walk[0] = vals[-1]
        ts = T0_MS + (b * secs + np.arange(secs))[:, None] * 1000 + rng.integers(0, 200, (secs, n_sensors))
        frame = pl.DataFrame({"site": site_col, "tag": tag_col, "ts_ms": ts.ravel(), "value": vals.ravel(),
                              "quality": np.zeros(batch_n, np.int8)}, schema=READING_SCHEMA)
        return ReadingBatch(frame)

    # the first n_warm batches are the warm-up: the later warm-up batches are made while warming up (not
    # held, so that they do not count in the peak RSS); the timed ones are made before the clock starts
    batches = [make(0)]
    pack = _pack(n_rules, n_tags)
    site_rules = {f"s{i:06d}": pack for i in range(n_sites)}
    rules_per_sensor = n_rules / n_tags
    base_rss = rss_mb()

    # state size as Python sees it: the engine built and warmed, under tracemalloc (numpy reports to it)
    tracemalloc.start()
    eng = RuleEngine(site_rules)
    eng.evaluate(batches[0], int(batches[0].frame["ts_ms"].max()))
    engine_bytes, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del eng
    eng = RuleEngine(site_rules)
    w0 = time.perf_counter()
    eng.evaluate(batches[0], int(batches[0].frame["ts_ms"].max()))  # registers every sensor: not timed below
    warm_s = time.perf_counter() - w0
    for b in range(1, n_warm):
        wb = make(b)
        eng.evaluate(wb, int(wb.frame["ts_ms"].max()))
    wb = None
    before = rss_mb()
    batches = [make(b) for b in range(n_warm, n_warm + n_batches)]
    base_rss += rss_mb() - before  # the timed batches are input, not growth (as when they were made first)
    warm_rss = rss_mb()

    n = n_sig = 0
    c0, w0 = time.process_time(), time.perf_counter()
    for bt in batches:
        res = eng.evaluate(bt, int(bt.frame["ts_ms"].max()))
        n += res.evaluated
        n_sig += len(res.signals)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    snap = eng.snapshot()
    pairs = n_sensors * rules_per_sensor
    return {
        "sensors": n_sensors, "tags_per_site": n_tags, "rules_per_plant": n_rules, "sites": n_sites,
        "rules_per_sensor": rules_per_sensor, "sensor_rules": pairs, "batch_readings": batch_n,
        "batches": n_batches, "warmup_batches": n_warm, "readings": n, "signals": n_sig, "wall_s": wall, "cpu_s": cpu,
        "readings_per_s": n / wall, "readings_per_cpu_s": n / cpu,
        "sensor_rule_evals_per_cpu_s": n * rules_per_sensor / cpu,
        "cpu_s_per_data_second": cpu / (n_batches * secs),
        "first_batch_s": warm_s, "base_rss_mb": base_rss, "warm_rss_mb": warm_rss,
        "peak_rss_mb": peak_rss_mb(),
        "snapshot_bytes": len(snap), "snapshot_bytes_per_sensor_rule": len(snap) / pairs,
        "engine_traced_bytes": engine_bytes, "engine_traced_bytes_per_sensor_rule": engine_bytes / pairs,
        "load_avg": os.getloadavg(),
    }


def _run_point(n_sensors: int, n_tags: int, n_rules: int, min_timed: int, timeout_s: float) -> dict[str, Any] | None:
    """One point in a fresh process; None when it does not finish within `timeout_s` (said in the output)."""
    try:
        p = subprocess.run([sys.executable, __file__, "--point", str(n_sensors), str(n_tags), str(n_rules),
                            str(min_timed)], capture_output=True, text=True, check=False, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"  point {n_sensors:,} sensors / {n_rules} rules: no result within {timeout_s:.0f} s", flush=True)
        return None
    if p.returncode != 0:
        msg = f"point {n_sensors}/{n_tags}/{n_rules} failed: {p.stderr[-2000:]}"
        raise RuntimeError(msg)
    return json.loads(p.stdout.strip().splitlines()[-1])


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def plot(sensors: list[dict[str, Any]], rules: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[bench]'): no plot", file=sys.stderr)
        return None
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    for col, (rows, key, label) in enumerate(((sensors, "sensors", "sensors"),
                                               (rules, "rules_per_plant", "rules per plant (10 k sensors)"))):
        x = [r[key] for r in rows]
        a = ax[0][col]
        a.loglog(x, [r["readings_per_cpu_s"] for r in rows], "o-", label="readings / CPU s")
        a.loglog(x, [r["sensor_rule_evals_per_cpu_s"] for r in rows], "s--", label="sensor-rule evals / CPU s")
        a.axhline(10e6, color="r", ls=":", label="target 10 M readings/s")
        a.set_xlabel(label)
        a.set_title("throughput")
        a.legend(fontsize=8)
        a.grid(True, which="both", alpha=0.3)
        b = ax[1][col]
        b.loglog(x, [r["peak_rss_mb"] for r in rows], "o-", label="peak RSS MB")
        b.loglog(x, [r["snapshot_bytes_per_sensor_rule"] for r in rows], "s--", label="snapshot B / sensor-rule")
        b.loglog(x, [r["engine_traced_bytes_per_sensor_rule"] for r in rows], "^--",
                 label="engine heap B / sensor-rule")
        b.axhline(200, color="r", ls=":", label="target 200 B")
        b.set_xlabel(label)
        b.set_title("memory")
        b.legend(fontsize=8)
        b.grid(True, which="both", alpha=0.3)
    fig.suptitle("earlywarn rule engine scaling (one core, POLARS_MAX_THREADS=1)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(quick: bool, *, smoke: bool = False) -> dict[str, Any]:
    """`smoke`: the suite's --quick sizes (python -m benchmarks --quick must finish in 2 minutes)."""
    # smoke (the suite's --quick): 30 k instead of 100 k sensors, the first batch's registration of
    # 100 k sensors alone takes tens of seconds on this machine (see the report on _register)
    sensor_points = [1_000, 10_000, 30_000] if smoke else [1_000, 10_000, 100_000] + ([] if quick else [1_000_000])
    min_timed = 100_000 if smoke else 300_000 if quick else MIN_TIMED
    rule_points = [10, 100] + ([] if quick else [1_000])
    timeout_s = 120 if quick else 600
    sensors: list[dict[str, Any]] = []
    unfinished: list[dict[str, Any]] = []
    for n in sensor_points:
        pt = _run_point(n, 10, 10, min_timed, timeout_s)
        if pt is None:
            unfinished.append({"sensors": n, "rules_per_plant": 10, "timeout_s": timeout_s})
            continue
        sensors.append(pt)
        print(f"  sensors {n:>9,}: {sensors[-1]['readings_per_cpu_s']:>12,.0f} readings/cpu-s, "
              f"peak {sensors[-1]['peak_rss_mb']:.0f} MB", flush=True)
    rules: list[dict[str, Any]] = []
    for r in rule_points:
        pt = _run_point(10_000, 100, r, min_timed, timeout_s)
        if pt is None:
            unfinished.append({"sensors": 10_000, "rules_per_plant": r, "timeout_s": timeout_s})
            continue
        rules.append(pt)
        print(f"  rules {r:>5}: {rules[-1]['readings_per_cpu_s']:>12,.0f} readings/cpu-s, "
              f"{rules[-1]['sensor_rule_evals_per_cpu_s']:>12,.0f} sensor-rule evals/cpu-s", flush=True)
    exp_sensors = slope([p["sensors"] for p in sensors], [p["cpu_s_per_data_second"] for p in sensors])
    exp_rules = slope([p["rules_per_plant"] for p in rules], [p["cpu_s_per_data_second"] for p in rules])
    exp_mem = slope([p["sensors"] for p in sensors],
                    [max(p["peak_rss_mb"] - p["base_rss_mb"], 1e-3) for p in sensors])
    exp_first = slope([p["sensors"] for p in sensors], [p["first_batch_s"] for p in sensors])
    big = sensors[-1]
    state = max(big["snapshot_bytes_per_sensor_rule"], big["engine_traced_bytes_per_sensor_rule"])
    png = plot(sensors, rules, RESULTS / "scaling.png")
    figs = [
        Figure("scaling", "cost exponent vs sensors (CPU s per data-second)", exp_sensors, "log-log slope",
               target=1.05, higher_is_better=False, note="1.0 = linear").as_dict(),
        Figure("scaling", "first batch (registers every sensor) exponent vs sensors", exp_first, "log-log slope",
               target=1.05, higher_is_better=False, note="1.0 = linear").as_dict(),
        Figure("scaling", "cost exponent vs rules per plant", exp_rules, "log-log slope", target=1.05,
               higher_is_better=False, note="1.0 = linear in rules").as_dict(),
        Figure("scaling", f"rule state per sensor-rule at {big['sensors']:,} sensors", state, "bytes",
               target=200, higher_is_better=False,
               note=f"snapshot {big['snapshot_bytes_per_sensor_rule']:.0f} B, engine heap "
                    f"{big['engine_traced_bytes_per_sensor_rule']:.0f} B").as_dict(),
    ]
    return {"sensors_sweep": sensors, "rules_sweep": rules, "unfinished": unfinished,
            "exponent_first_batch_vs_sensors": exp_first, "exponent_sensors": exp_sensors,
            "exponent_rules": exp_rules, "exponent_peak_rss_growth_vs_sensors": exp_mem,
            "plot": str(png) if png else None, "figures": figs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sensors up to 100 k, rules up to 100")
    ap.add_argument("--point", nargs=4, type=int, help=argparse.SUPPRESS)  # SENSORS TAGS RULES MIN_TIMED
    args = ap.parse_args(argv)
    if args.point:
        print(json.dumps(point(*args.point)))
        return 0
    res = run(args.quick)
    print(f"\n{'sweep':<7}{'sensors':>10}{'rules/plant':>12}{'readings/cpu-s':>16}{'peak RSS MB':>13}"
          f"{'snap B/sr':>11}{'heap B/sr':>11}")
    for p in res["sensors_sweep"] + res["rules_sweep"]:
        print(f"{'':<7}{p['sensors']:>10,}{p['rules_per_plant']:>12}{p['readings_per_cpu_s']:>16,.0f}"
              f"{p['peak_rss_mb']:>13.0f}{p['snapshot_bytes_per_sensor_rule']:>11.1f}"
              f"{p['engine_traced_bytes_per_sensor_rule']:>11.1f}")
    for u in res["unfinished"]:
        print(f"unfinished within {u['timeout_s']} s: {u['sensors']:,} sensors, {u['rules_per_plant']} rules per plant")
    print(f"first batch (registration) exponent vs sensors {res['exponent_first_batch_vs_sensors']:.3f}")
    print(f"exponent vs sensors {res['exponent_sensors']:.3f}, vs rules {res['exponent_rules']:.3f}, "
          f"peak-RSS growth vs sensors {res['exponent_peak_rss_growth_vs_sensors']:.3f}")
    path = write_json("scaling.json", {"benchmark": "scaling", "quick": args.quick, **env_block(), **res})
    print(f"wrote {path}" + (f" and {res['plot']}" if res["plot"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
