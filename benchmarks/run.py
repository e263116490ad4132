"""The performance suite: every stage and the whole path, against same-run baselines and the targets.

    python -m benchmarks [--quick] [--only NAME ...] [--no-profile]

Benchmarks (in this order): decode, rules, lifecycle, store, notify, reports, ingest, e2e, replay, scaling.
Each one's workload is seeded (and cached in results/cache/ where building it is slow) and built outside
its timed part. The full mode runs each stage benchmark with its own full workload (the stage modules'
CLIs, in subprocesses, so one stage's memory and threads never colour the next); --quick is a smoke run
under two minutes: smaller workloads, in-process where a subprocess start would dominate, and the reports
benchmark without its (slow) naive baseline.

Prints one table (stage, figure, value, baseline, ratio, target, met?) and writes results/summary.json with
machine info (CPU count and model, load average before and after), versions and the git commit. Unless
--no-profile, the engine's work on the e2e batch payloads and a replay are profiled (cProfile), the top 10
functions written to results/profile-*.txt. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from common import RESULTS, Figure, env_block, fmt_rate, load_avg, write_json

ORDER = ("decode", "batch", "rules", "lifecycle", "store", "notify", "reports", "ingest", "e2e", "replay", "scaling")


def _sub(script: str, *args: str, out: Path | None = None, timeout_s: float = 3600) -> dict[str, Any]:
    """Run a stage benchmark's own CLI in a fresh process; return the JSON it wrote."""
    cmd = [sys.executable, str(HERE / script), *args]
    if out is not None:
        cmd += ["--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                       env={**os.environ, "PYTHONPATH": str(HERE)})
    if p.returncode != 0:
        msg = f"{script} failed ({p.returncode}): {p.stderr[-3000:]}"
        raise RuntimeError(msg)
    return {"stdout": p.stdout}


def _read(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


# ---------------------------------------------------------------------------------------------
# stages: each returns (figures, raw results)


def b_decode(quick: bool) -> tuple[list[Figure], Any]:
    if quick:  # in-process, a tenth of the stage benchmark's quick workload
        import bench_decode as bd

        wl = bd.build_workloads(20261128, 5_000, 200)
        known = {f"SZ-AL-{i:04d}" for i in range(20)}
        res = [bd.bench_decoders(n, wl[n], 10_000, 2, known) for n in ("single", "batch100")]
    else:
        _sub("bench_decode.py", out=RESULTS / "decode.json")
        res = _read("decode.json")["decoders"]
    figs = []
    for r in res:
        if r["workload"] not in ("single", "batch100"):
            continue
        figs.append(Figure("decode", f"{r['workload']} payloads", r["decoder_readings_per_s"], "readings/s",
                           baseline=r["naive_readings_per_s"], baseline_label="per-reading stdlib json",
                           target=1.5e6 if r["workload"] == "batch100" else None,
                           note=f"cpu rate {r['decoder_readings_per_cpu_s']:,.0f}/s"))
    return figs, res


def b_batch(quick: bool) -> tuple[list[Figure], Any]:
    import bench_batch as bb

    res = bb.run(quick)
    figs = [
        Figure("batch", f"sequencing {r['sensors']:,} sensors x {r['readings_per_sensor']} (per CPU s)",
               1e9 / r["ours_ns_per_reading"], "readings/s", baseline=1e9 / r["naive_ns_per_reading"],
               baseline_label="per-reading dict look-up")
        for r in res
    ]
    return figs, res


def b_rules(quick: bool) -> tuple[list[Figure], Any]:
    _sub("bench_rules.py", *(["--quick"] if quick else []))  # its own POLARS_MAX_THREADS=1 process
    doc = _read("rules.json")
    rows = doc["results"]
    base = rows[-1]
    figs = []
    for r in rows[:-1]:
        # the stage benchmark reports CPU-time rates (one core) in its newer form, wall rates in the older
        rate = r.get("readings_per_s_cpu", r.get("readings_per_s"))
        brate = base.get("readings_per_s_cpu", base.get("readings_per_s"))
        tgt = 10e6 if r["workload"] == "threshold" else 3e6
        figs.append(Figure("rules", f"{r['workload']} pack, 10 k sensors (per CPU s)", rate, "readings/s",
                           baseline=brate, baseline_label="scalar per-reading reference", target=tgt,
                           target_ratio=20))
    return figs, doc


def b_lifecycle(quick: bool) -> tuple[list[Figure], Any]:
    if quick:
        import bench_lifecycle as bl

        from earlywarn.alarms.manager import AlarmManager
        from earlywarn.config import AlarmsConfig

        n_alarms, n_sites, n_sig = 20_000, 500, 20_000
        sites = bl.make_sites(n_sites)
        opens = bl.open_signals(n_alarms, n_sites, bl.T0_MS)
        sigs = bl.stream(opens, n_sig, 7, bl.T0_MS + n_alarms * bl.OPEN_SPACING_MS + 1, n_sites)
        m = AlarmManager(sites, AlarmsConfig())
        for i in range(0, len(opens), 5000):
            m.apply_signals(opens[i:i + 5000], opens[min(i + 5000, len(opens)) - 1].ts_ms)
        naive = bl.NaiveManager(sites, AlarmsConfig(), m.open_alarms())
        t = time.perf_counter()
        for i in range(0, len(sigs), 5000):
            m.apply_signals(sigs[i:i + 5000], sigs[min(i + 5000, len(sigs)) - 1].ts_ms)
        fast = n_sig / (time.perf_counter() - t)
        prefix = sigs[:200]
        t = time.perf_counter()
        naive.apply_signals(prefix, prefix[-1].ts_ms)
        slow = len(prefix) / (time.perf_counter() - t)
        res = {"open_alarms": n_alarms, "signals_per_s": fast, "baseline_per_s": slow}
        label = f"signals over {n_alarms // 1000} k open alarms"
    else:
        _sub("bench_lifecycle.py", out=RESULTS / "lifecycle.json")
        res = _read("lifecycle.json")
        fast, slow = res["signals"]["per_s"], res["baseline_list_scan"]["per_s"]
        label = "signals over 100 k open alarms"
    return [Figure("lifecycle", label, fast, "signals/s", baseline=slow, baseline_label="list scan per signal",
                   target=50_000)], res


def b_store(quick: bool) -> tuple[list[Figure], Any]:
    if quick:
        import bench_store as bs

        with tempfile.TemporaryDirectory(prefix="bench_store_") as d:
            res = {"fresh": bs.bench_fresh(Path(d), bs.Workload(), n_batches=4, naive_rows=2_000)}
    else:
        _sub("bench_store.py", out=RESULTS / "store.json")
        res = _read("store.json")
    f = res["fresh"]
    return [Figure("store", "readings, 50 k per commit, sustained", f["readings_per_s_sustained"], "readings/s",
                   baseline=f["naive_readings_per_s"], baseline_label="executemany row by row",
                   note=f"median commit {f['median_ms']} ms")], res


def b_notify(quick: bool) -> tuple[list[Figure], Any]:
    _sub("bench_notify.py", *(["--quick"] if quick else []), out=RESULTS / "notify.json")
    doc = _read("notify.json")
    v = doc["variants"]
    g = v["grouped, group_wait 10 s"]
    n = v["naive one notice per alarm"]
    return [Figure("notify", "alarm flood, grouped (10 s)", g["alarms_per_s"], "alarms/s",
                   baseline=n["alarms_per_s"], baseline_label="one notice per alarm",
                   note=f"{doc['notice_reduction_vs_naive']:.1f}x fewer notices; processing p99 "
                        f"{g['processing_delay_p99_ms']:.1f} ms")], doc


def b_reports(quick: bool) -> tuple[list[Figure], Any]:
    args = ["--quick", "--keep", "--repeat", "1", "--no-baseline"] if quick else ["--keep"]
    try:
        _sub("bench_reports.py", *args)
    except RuntimeError as e:
        if "regenerate without --keep" not in str(e):
            raise
        _sub("bench_reports.py", *[a for a in args if a != "--keep"])
    doc = _read("reports.json")
    figs = []
    n = doc.get("history", {}).get("alarms", 0)
    for r in doc["results"]:
        if r.get("target_s") is None:
            continue
        figs.append(Figure("reports", f"{r['query']} at {n / 1e6:g} M alarms", r["median_s"], "s",
                           baseline=r.get("naive_s"), baseline_label="rows pulled into Python",
                           target=r["target_s"] if not quick else None, higher_is_better=False,
                           note="target applies at 10 M (full)" if quick else ""))
    return figs, doc


def b_ingest(quick: bool) -> tuple[list[Figure], Any]:
    if quick:  # one case in-process: the e2e benchmark covers the others with the real packs
        import bench_ingest as bi
        from common import mosquitto

        msgs = bi.workload(100_000, 100)
        with tempfile.TemporaryDirectory(prefix="bench_ingest_") as d, mosquitto(Path(d) / "b") as broker:
            bare = bi.run_bare(broker, msgs, 100, False, "q")
            eng = bi.run_engine(broker, Path(d), msgs, 100, False, "q", "process")
        rows = [{"case": "batch100-drain", "bare_readings_s": bare, "engine_readings_s": eng}]
    else:
        _sub("bench_ingest.py")
        rows = _read("ingest-w1000-process.json")["results"]
    figs = [Figure("ingest", f"{r['case']} (one rule), ingest -> store", r["engine_readings_s"], "readings/s",
                   baseline=r["bare_readings_s"], baseline_label="bare paho subscriber", target_ratio=0.8)
            for r in rows]
    return figs, rows


def b_e2e(quick: bool) -> tuple[list[Figure], Any]:
    import bench_e2e

    res = bench_e2e.run(quick, smoke=quick)
    write_json("e2e.json", {"benchmark": "e2e", "quick": quick, **env_block(), **res})
    return [Figure(**{k: v for k, v in f.items() if k not in ("ratio", "met")}) for f in res["figures"]], res


def b_replay(quick: bool) -> tuple[list[Figure], Any]:
    import bench_replay

    res = bench_replay.run(quick)
    write_json("replay.json", {"benchmark": "replay", "quick": quick, **env_block(), **res})
    return [Figure(**{k: v for k, v in f.items() if k not in ("ratio", "met")}) for f in res["figures"]], res


def b_scaling(quick: bool) -> tuple[list[Figure], Any]:
    import bench_scaling

    res = bench_scaling.run(quick, smoke=quick)
    write_json("scaling.json", {"benchmark": "scaling", "quick": quick, **env_block(), **res})
    return [Figure(**{k: v for k, v in f.items() if k not in ("ratio", "met")}) for f in res["figures"]], res


BENCHES: dict[str, Callable[[bool], tuple[list[Figure], Any]]] = {
    "decode": b_decode, "batch": b_batch, "rules": b_rules, "lifecycle": b_lifecycle, "store": b_store, "notify": b_notify,
    "reports": b_reports, "ingest": b_ingest, "e2e": b_e2e, "replay": b_replay, "scaling": b_scaling,
}


# ---------------------------------------------------------------------------------------------
# profiles


def _top10(prof: cProfile.Profile, title: str, path: Path, wall_s: float, n: int) -> Path:
    buf = io.StringIO()
    buf.write(f"{title}\n{n:,} readings in {wall_s:.2f} s wall ({n / wall_s:,.0f} readings/s under cProfile); "
              f"load average {load_avg()}\n\n-- top 10 by own time --\n")
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(10)
    buf.write("\n-- top 10 by cumulative time --\n")
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(10)
    path.write_text(buf.getvalue())
    return path


def _profile_live_engine(n: int, tmp: Path) -> tuple[cProfile.Profile, float, dict[str, float]]:
    """The e2e drain case (batch payloads, all packs, a real mosquitto) with cProfile on the engine thread.

    Built like `earlywarn.app.start_runner`, except that the engine thread's loop runs under cProfile
    (cProfile sees only the thread that enables it). Returns the profile, the wall time from start to the
    last reading stored, and the engine's batch metrics.
    """
    import queue
    import threading

    import bench_e2e
    from bench_ingest import prefill_while_away
    from common import mosquitto

    from earlywarn.app import build_engine
    from earlywarn.ingest import ProcessIngest
    from earlywarn.metrics import Metrics
    from earlywarn.pipeline import Runner, build_dispatcher

    msgs, sites = bench_e2e.build_messages(n, 100, int(time.time() * 1000))
    with mosquitto(tmp / "b-prof") as broker:
        cfg = bench_e2e._engine_cfg(tmp, broker, "ew-prof", sites)

        def runner(profile: cProfile.Profile | None) -> Any:
            metrics = Metrics()
            engine = build_engine(cfg, metrics=metrics)
            inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
            ingest = ProcessIngest(cfg.broker, inbox, metrics=metrics, clock=engine.clock)
            engine.dispatcher = build_dispatcher(cfg, engine=engine, publish=ingest.publish, metrics=metrics)
            r = Runner(cfg, engine=engine, metrics=metrics, ingest=ingest, inbox=inbox)
            if profile is not None:
                loop = r._loop

                def profiled() -> None:
                    profile.enable()
                    try:
                        loop()
                    finally:
                        profile.disable()

                r._thread = threading.Thread(target=profiled, name="earlywarn-engine", daemon=True)
            r.start()
            r.ingest.wait_connected(20)
            return r

        prefill_while_away(lambda: runner(None), broker, msgs)  # the persistent session, then the broker fills up
        prof = cProfile.Profile()
        t = time.perf_counter()
        r = runner(prof)
        while (r.metrics.registry.get_sample_value("earlywarn_store_readings_total") or 0) < n:
            if r.error is not None:
                raise RuntimeError(r.error)
            time.sleep(0.005)
        wall = time.perf_counter() - t
        reg = r.metrics.registry
        stats = {k: reg.get_sample_value(f"earlywarn_{k}") or 0.0 for k in (
            "batch_readings_count", "batch_readings_sum", "batch_duration_seconds_sum",
            "rules_duration_seconds_sum", "store_write_duration_seconds_sum")}
        r.stop()
        r.engine.store.close()
    return prof, wall, stats


def profiles(quick: bool) -> list[str]:
    """cProfile of (1) the live engine thread in the e2e drain case, (2) an in-process replay."""
    import bench_replay
    from common import engine_config

    from earlywarn.app import build_engine
    from earlywarn.config import load_config
    from earlywarn.pipeline import read_replay_files, run_replay

    out = []
    n = 100_000 if quick else 1_000_000
    sfx = "-quick" if quick else ""  # a smoke run does not overwrite the full run's profiles
    with tempfile.TemporaryDirectory(prefix="bench_prof_") as d:
        tmp = Path(d)
        prof, wall, st = _profile_live_engine(n, tmp)
        title = ("live engine thread (Runner loop: collect -> decode -> sequence -> rules -> alarms -> store -> ack), "
                 "e2e batch100 drain through mosquitto, all plant packs\n"
                 f"{st['batch_readings_count']:.0f} micro-batches, mean {st['batch_readings_sum'] / max(st['batch_readings_count'], 1):,.0f} "
                 f"readings; time in batches {st['batch_duration_seconds_sum']:.2f} s (rules "
                 f"{st['rules_duration_seconds_sum']:.2f} s, commit {st['store_write_duration_seconds_sum']:.2f} s)")
        out.append(str(_top10(prof, title, RESULTS / f"profile-engine{sfx}.txt", wall, n)))

        inp, rsites = bench_replay.workload(1_000_000)
        cfg = load_config(engine_config(tmp, "prof_replay", rsites))
        batch, rej = read_replay_files([str(inp)])
        eng = build_engine(cfg, replay=True)
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        run_replay(eng, batch, rej)
        prof.disable()
        wall = time.perf_counter() - t
        eng.store.close()
        out.append(str(_top10(prof, "replay (run_replay, 500 000-reading chunks) of the 1 M-reading Parquet file",
                              RESULTS / f"profile-replay{sfx}.txt", wall, len(batch))))
    return out


# ---------------------------------------------------------------------------------------------


def _fmt(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit in ("readings/s", "signals/s", "alarms/s"):
        return fmt_rate(x) + "/s"
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = f"{'stage':<10}{'figure':<52}{'value':>12} {'unit':<12}{'baseline':>11}{'ratio':>8}{'target':>11}  met?"
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        tgt = []
        if r["target"] is not None:
            tgt.append(("<=" if not r["higher_is_better"] else ">=") + _fmt(r["target"], r["unit"]))
        if r["target_ratio"] is not None:
            tgt.append(f"{r['target_ratio']:g}x")
        met = {True: "yes", False: "NO", None: ""}[r["met"]]
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        unit = r["unit"].replace("readings/s", "r/s")
        print(f"{r['stage']:<10}{r['figure'][:51]:<52}{_fmt(r['value'], r['unit']):>12} {unit:<12}"
              f"{_fmt(r['baseline'], r['unit']):>11}{ratio:>8}{' '.join(tgt):>11}  {met}")
    print("ratio: value / baseline (for times and latencies: baseline / value); baselines run in the same run")


def markdown(summary: dict[str, Any]) -> str:
    """The summary's figures as a Markdown table (for benchmarks/README.md)."""
    out = ["| stage | figure | value | baseline (same run) | ratio | target | met? |", "|---|---|---|---|---|---|---|"]
    for r in summary["figures"]:
        tgt = []
        if r["target"] is not None:
            tgt.append(("≤ " if not r["higher_is_better"] else "≥ ") + _fmt(r["target"], r["unit"]) +
                       ("" if r["unit"].endswith("/s") else f" {r['unit']}"))
        if r["target_ratio"] is not None:
            tgt.append(f"≥ {r['target_ratio']:g}× baseline")
        unit = "" if r["unit"].endswith("/s") else f" {r['unit']}"
        base = "-" if r["baseline"] is None else f"{_fmt(r['baseline'], r['unit'])}{unit} ({r['baseline_label']})"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        note = f" — {r['note']}" if r.get("note") else ""
        out.append(f"| {r['stage']} | {r['figure']}{note} | {_fmt(r['value'], r['unit'])}{unit} | {base} | {ratio} | "
                   f"{', '.join(tgt)} | {met} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run, under 2 minutes")
    ap.add_argument("--only", nargs="+", choices=ORDER, metavar="NAME", help=f"some of: {' '.join(ORDER)}")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile runs")
    ap.add_argument("--profile", action="store_true", help="profile even with --only")
    ap.add_argument("--markdown", type=Path, metavar="SUMMARY_JSON", help="print a summary as Markdown, run nothing")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = env_block()
    load_before = load_avg()
    t_all = time.perf_counter()
    names = [n for n in ORDER if not args.only or n in args.only]
    rows: list[dict[str, Any]] = []
    raw: dict[str, Any] = {}
    timings: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in names:
        print(f"[{time.perf_counter() - t_all:6.1f} s] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            figs, res = BENCHES[name](args.quick)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"  {name} FAILED: {errors[name][:500]}", flush=True)
            continue
        finally:
            timings[name] = round(time.perf_counter() - t, 1)
        raw[name] = res
        rows.extend(f.as_dict() for f in figs)
    prof_files: list[str] = []
    if not args.no_profile and (not args.only or args.profile):
        print(f"[{time.perf_counter() - t_all:6.1f} s] profiles ...", flush=True)
        t = time.perf_counter()
        try:
            prof_files = profiles(args.quick)
        except Exception as e:  # noqa: BLE001 - a failed profile must not lose the figures
            errors["profile"] = f"{type(e).__name__}: {e}"
        timings["profile"] = round(time.perf_counter() - t, 1)
    carried: dict[str, str] = {}
    prev_path = RESULTS / f"summary-{'quick' if args.quick else 'full'}.json"
    if args.only and prev_path.exists():
        # a partial run keeps the other stages' figures from the last run of the same mode, saying so
        prev = json.loads(prev_path.read_text())
        for r in prev.get("figures", []):
            if r["stage"] not in names:
                rows.append(r)
                carried[r["stage"]] = r.get("carried_from") or prev.get("when_utc", "?")
                r.setdefault("carried_from", carried[r["stage"]])
        for k, v in prev.get("details", {}).items():
            raw.setdefault(k, v)
        rows.sort(key=lambda r: ORDER.index(r["stage"]))
    print_table(rows)
    if carried:
        print(f"carried over from earlier runs (not measured now): {carried}")
    total = time.perf_counter() - t_all
    summary = {
        "suite": "earlywarn performance suite", "mode": "quick" if args.quick else "full", "only": args.only,
        **env, "load_avg_before": load_before, "load_avg_after": load_avg(), "seconds": round(total, 1),
        "seconds_by_benchmark": timings, "carried_over": carried, "figures": rows, "errors": errors, "profiles": prof_files,
        "details": raw,
    }
    path = write_json("summary.json", summary)
    write_json(f"summary-{summary['mode']}.json", summary)  # the last run of each mode, side by side
    print(f"\n{len(rows)} figures, {sum(1 for r in rows if r['met'] is True)} targets met, "
          f"{sum(1 for r in rows if r['met'] is False)} not; {total:.0f} s; load average {load_before} -> "
          f"{summary['load_avg_after']} on {env['machine']['cpu_count']} CPUs; wrote {path}")
    for e in errors.items():
        print(f"FAILED {e[0]}: {e[1][:300]}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
