"""Scaling of the rule engine: readings/s, peak memory and rule-state bytes as sensors and rules grow.

    python benchmarks/bench_scaling.py [--quick]

Sweeps, each point in its own fresh process (so peak RSS belongs to that point alone), on sites of 10 tags
with 10 rules per plant (one per tag: 9 threshold rules with deadband and on/off delays, 1 rate rule over
10 s) unless said:
- sensors 1 k -> 10 k -> 100 k -> 1 M (quick: up to 100 k), one data-second per batch (each batch holds
  one reading of every sensor: what the live engine sees of 1 Hz sensors when it commits once a second);
- the same sensors with a fixed batch size of at least 100 000 readings (the older sweep: readings per
  sensor per batch fall from 100 to 1 along it, so it mixes two things);
- readings per batch 10 k -> 100 k -> 1 M on 10 000 sensors (1, 10, 100 data-seconds per batch);
- rules per plant 10 -> 100 -> 1 000 (quick: up to 100) on 10 000 sensors (100 sites x 100 tags); rule j
  watches tag j mod 100 with its own limit, every tenth rule a rate rule.
Every sensor reads once per second (random walks crossing their limits now and then, seeded); one warm-up
batch registers the sensors (timed apart), further untimed batches complete WARM_S seconds of data (the
rate rule's window filled, the start-up burst of raises of the sensors that begin above their limit over),
then at least 1 M readings (quick: 300 k) are evaluated (timed: `RuleEngine.evaluate` only, batches built
before). Without that, a point whose batches are 1 s long timed the start-up burst (4x the signals per
reading of the other points) and a rate rule still without references.

Reported per point: readings/s (wall and CPU), sensor-rule evaluations/s, peak RSS and its growth over
the point's own baseline, `len(RuleEngine.snapshot())` and the tracemalloc'd size of the engine built and
warmed (both divided by sensor-rule pairs; target <= 200 bytes). An exponent is the log-log slope of CPU
time per data-second against sensors (or rules), or of CPU time per batch against readings per batch: 1.0
is linear. The sensor and readings sweeps are also fitted with one model, CPU per batch = c0 + a *
readings + b * sensors (per-batch, per-reading and per-sensor work), and its worst relative residual
says whether cost is linear in both. Plots: scaling.png.
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


def point(n_sensors: int, n_tags: int, n_rules: int, min_timed: int = MIN_TIMED, batch_s: int = 0,
          seed: int = 7) -> dict[str, Any]:
    """One measurement, in this (fresh) process. Each batch holds `batch_s` seconds of data of every sensor
    (0: as many seconds as make MIN_BATCH readings)."""
    import tracemalloc

    import numpy as np
    import polars as pl
    from common import peak_rss_mb, rss_mb

    from earlywarn.model import READING_SCHEMA, ReadingBatch
    from earlywarn.rules.engine import RuleEngine

    n_sites = n_sensors // n_tags
    secs = batch_s or max(1, MIN_BATCH // n_sensors)
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
        "batch_data_s": secs, "batches": n_batches, "warmup_batches": n_warm, "readings": n, "signals": n_sig,
        "wall_s": wall, "cpu_s": cpu, "cpu_s_per_batch": cpu / n_batches,
        "readings_per_s": n / wall, "readings_per_cpu_s": n / cpu,
        "sensor_rule_evals_per_cpu_s": n * rules_per_sensor / cpu,
        "cpu_s_per_data_second": cpu / (n_batches * secs),
        "first_batch_s": warm_s, "base_rss_mb": base_rss, "warm_rss_mb": warm_rss,
        "peak_rss_mb": peak_rss_mb(),
        "snapshot_bytes": len(snap), "snapshot_bytes_per_sensor_rule": len(snap) / pairs,
        "engine_traced_bytes": engine_bytes, "engine_traced_bytes_per_sensor_rule": engine_bytes / pairs,
        "load_avg": os.getloadavg(),
    }


def _run_point(n_sensors: int, n_tags: int, n_rules: int, min_timed: int, timeout_s: float,
               batch_s: int = 0) -> dict[str, Any] | None:
    """One point in a fresh process; None when it does not finish within `timeout_s` (said in the output)."""
    try:
        p = subprocess.run([sys.executable, __file__, "--point", str(n_sensors), str(n_tags), str(n_rules),
                            str(min_timed), str(batch_s)], capture_output=True, text=True, check=False,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        print(f"  point {n_sensors:,} sensors / {n_rules} rules: no result within {timeout_s:.0f} s", flush=True)
        return None
    if p.returncode != 0:
        msg = f"point {n_sensors}/{n_tags}/{n_rules}/{batch_s}: failed: {p.stderr[-2000:]}"
        raise RuntimeError(msg)
    return json.loads(p.stdout.strip().splitlines()[-1])


def linear_cost_model(points: list[dict[str, Any]]) -> dict[str, float]:
    """Fit CPU s per batch = c0 + a * readings + b * sensors over `points` (same rules per sensor), by least
    squares on relative residuals (so the 1 k-reading batches count as much as the 1 M ones).

    The engine does per-reading work (kernels over the batch) and per-sensor work (gathering and scattering
    each sensor's state once per batch), plus a fixed cost per batch. If both grow linearly, this model fits
    every point within the noise; its worst relative residual says how well.
    """
    import numpy as np

    y = np.array([p["cpu_s_per_batch"] for p in points])
    x = np.array([[1.0, p["batch_readings"], p["sensors"]] for p in points]) / y[:, None]
    coef, *_ = np.linalg.lstsq(x, np.ones(len(points)), rcond=None)
    resid = x @ coef - 1.0
    return {"c0_ms_per_batch": coef[0] * 1e3, "a_ns_per_reading": coef[1] * 1e9, "b_ns_per_sensor": coef[2] * 1e9,
            "max_rel_residual": float(np.abs(resid).max()), "points": len(points)}


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
    """`smoke`: the suite's --quick sizes (python -m benchmarks --quick must finish in 2 minutes).

    Sweeps (10 tags per site and 10 rules per plant unless said):
    - sensors, *one data-second per batch*: each batch holds one reading of every sensor, as the live engine
      sees a fleet of 1 Hz sensors when it commits once a second. The headline exponent vs sensors.
    - sensors, *fixed batch size* (at least 100 000 readings per batch, the older sweep): at 1 k sensors a
      batch holds 100 readings per sensor, at 100 k one, so the per-sensor work per reading grows 100x along
      the sweep and its exponent mixes "more sensors" with "fewer readings per sensor per batch".
    - readings: 10 000 sensors, 1 -> 10 -> 100 data-seconds per batch; the exponent of CPU per batch vs
      readings per batch.
    - rules per plant on 10 000 sensors (100 tags per site).
    """
    # smoke (the suite's --quick): 30 k instead of 100 k sensors, the first batch's registration of
    # 100 k sensors alone takes tens of seconds on this machine (see the report on _register)
    sensor_points = [1_000, 10_000, 30_000] if smoke else [1_000, 10_000, 100_000] + ([] if quick else [1_000_000])
    min_timed = 100_000 if smoke else 300_000 if quick else MIN_TIMED
    rule_points = [10, 100] + ([] if quick else [1_000])
    reading_points = [1, 10] if smoke else [1, 10, 100]
    timeout_s = 120 if quick else 600
    unfinished: list[dict[str, Any]] = []

    def sweep(label: str, specs: list[tuple[int, int, int, int]], show: str) -> list[dict[str, Any]]:
        out = []
        for n, tags, rules, batch_s in specs:
            pt = _run_point(n, tags, rules, min_timed, timeout_s, batch_s)
            if pt is None:
                unfinished.append({"sweep": label, "sensors": n, "rules_per_plant": rules, "batch_data_s": batch_s,
                                   "timeout_s": timeout_s})
                continue
            out.append(pt)
            print(f"  {label:<16} {pt[show]:>10,} {show:<16}: {pt['readings_per_cpu_s']:>12,.0f} readings/cpu-s, "
                  f"{pt['cpu_s_per_batch'] * 1e3:>9.2f} ms/batch of {pt['batch_readings']:>9,}, "
                  f"peak {pt['peak_rss_mb']:.0f} MB", flush=True)
        return out

    per_second = sweep("sensors (1 s)", [(n, 10, 10, 1) for n in sensor_points], "sensors")
    sensors = sweep("sensors (fixed)", [(n, 10, 10, 0) for n in sensor_points], "sensors")
    readings = sweep("readings", [(10_000, 10, 10, k) for k in reading_points], "batch_readings")
    rules = sweep("rules", [(10_000, 100, r, 0) for r in rule_points], "rules_per_plant")

    exp_sensors = slope([p["sensors"] for p in per_second], [p["cpu_s_per_data_second"] for p in per_second])
    exp_sensors_fixed = slope([p["sensors"] for p in sensors], [p["cpu_s_per_data_second"] for p in sensors])
    exp_readings = slope([p["batch_readings"] for p in readings], [p["cpu_s_per_batch"] for p in readings])
    exp_rules = slope([p["rules_per_plant"] for p in rules], [p["cpu_s_per_data_second"] for p in rules])
    exp_mem = slope([p["sensors"] for p in sensors],
                    [max(p["peak_rss_mb"] - p["base_rss_mb"], 1e-3) for p in sensors])
    exp_first = slope([p["sensors"] for p in sensors], [p["first_batch_s"] for p in sensors])
    model = linear_cost_model(per_second + sensors + readings)
    big = sensors[-1]
    state = max(big["snapshot_bytes_per_sensor_rule"], big["engine_traced_bytes_per_sensor_rule"])
    png = plot(per_second, rules, RESULTS / "scaling.png")
    figs = [
        Figure("scaling", "cost exponent vs sensors, one data-second per batch (CPU s per data-second)",
               exp_sensors, "log-log slope", target=1.05, higher_is_better=False, note="1.0 = linear").as_dict(),
        Figure("scaling", "cost exponent vs readings per batch, 10 k sensors (CPU s per batch)", exp_readings,
               "log-log slope", target=1.05, higher_is_better=False, note="1.0 = linear").as_dict(),
        Figure("scaling", "cost exponent vs sensors, fixed batch size >= 100 k readings", exp_sensors_fixed,
               "log-log slope", note="readings per sensor per batch fall 100x along this sweep").as_dict(),
        Figure("scaling", "linear cost model c0 + a*readings + b*sensors: worst relative residual",
               model["max_rel_residual"], "fraction",
               note=f"a {model['a_ns_per_reading']:.0f} ns/reading, b {model['b_ns_per_sensor']:.0f} ns/sensor, "
                    f"c0 {model['c0_ms_per_batch']:.2f} ms/batch").as_dict(),
        Figure("scaling", "first batch (registers every sensor) exponent vs sensors", exp_first, "log-log slope",
               target=1.05, higher_is_better=False, note="1.0 = linear").as_dict(),
        Figure("scaling", "cost exponent vs rules per plant", exp_rules, "log-log slope", target=1.05,
               higher_is_better=False, note="1.0 = linear in rules").as_dict(),
        Figure("scaling", f"rule state per sensor-rule at {big['sensors']:,} sensors", state, "bytes",
               target=200, higher_is_better=False,
               note=f"snapshot {big['snapshot_bytes_per_sensor_rule']:.0f} B, engine heap "
                    f"{big['engine_traced_bytes_per_sensor_rule']:.0f} B").as_dict(),
    ]
    return {"sensors_sweep": per_second, "sensors_fixed_batch_sweep": sensors, "readings_sweep": readings,
            "rules_sweep": rules, "unfinished": unfinished, "cost_model": model,
            "exponent_first_batch_vs_sensors": exp_first, "exponent_sensors": exp_sensors,
            "exponent_sensors_fixed_batch": exp_sensors_fixed, "exponent_readings": exp_readings,
            "exponent_rules": exp_rules, "exponent_peak_rss_growth_vs_sensors": exp_mem,
            "plot": str(png) if png else None, "figures": figs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sensors up to 100 k, rules up to 100")
    ap.add_argument("--point", nargs=5, type=int, help=argparse.SUPPRESS)  # SENSORS TAGS RULES MIN_TIMED BATCH_S
    args = ap.parse_args(argv)
    if args.point:
        print(json.dumps(point(*args.point)))
        return 0
    res = run(args.quick)
    print(f"\n{'sweep':<7}{'sensors':>10}{'rules/plant':>12}{'readings/cpu-s':>16}{'peak RSS MB':>13}"
          f"{'snap B/sr':>11}{'heap B/sr':>11}")
    for p in res["sensors_sweep"] + res["sensors_fixed_batch_sweep"] + res["readings_sweep"] + res["rules_sweep"]:
        print(f"{'':<7}{p['sensors']:>10,}{p['rules_per_plant']:>12}{p['readings_per_cpu_s']:>16,.0f}"
              f"{p['peak_rss_mb']:>13.0f}{p['snapshot_bytes_per_sensor_rule']:>11.1f}"
              f"{p['engine_traced_bytes_per_sensor_rule']:>11.1f}")
    for u in res["unfinished"]:
        print(f"unfinished within {u['timeout_s']} s: {u['sensors']:,} sensors, {u['rules_per_plant']} rules per plant")
    print(f"first batch (registration) exponent vs sensors {res['exponent_first_batch_vs_sensors']:.3f}")
    m = res["cost_model"]
    print(f"cost model: {m['c0_ms_per_batch']:.2f} ms/batch + {m['a_ns_per_reading']:.0f} ns/reading + "
          f"{m['b_ns_per_sensor']:.0f} ns/sensor; worst relative residual {m['max_rel_residual']:.1%} "
          f"over {m['points']} points")
    print(f"exponent vs readings per batch {res['exponent_readings']:.3f}; vs sensors with a fixed batch size "
          f"{res['exponent_sensors_fixed_batch']:.3f}")
    print(f"exponent vs sensors (one data-second per batch) {res['exponent_sensors']:.3f}, "
          f"vs rules {res['exponent_rules']:.3f}, "
          f"peak-RSS growth vs sensors {res['exponent_peak_rss_growth_vs_sensors']:.3f}")
    path = write_json("scaling.json", {"benchmark": "scaling", "quick": args.quick, **env_block(), **res})
    print(f"wrote {path}" + (f" and {res['plot']}" if res["plot"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
