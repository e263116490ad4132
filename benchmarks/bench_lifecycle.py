"""Alarm-lifecycle benchmark: AlarmManager with 100 000 open alarms against a naive list-scan manager, same run.

    python benchmarks/bench_lifecycle.py [--quick]

Cases (seeded workload, built before any timing):
- open: 100 000 raise signals on fresh keys (new alarms: id hash, window / chatter / flood checks).
- signals: a stream over those 100 000 open alarms in event-time order, applied in pipeline-sized calls
  (`--call` signals each): about 40 % clears, 40 % reactivations of cleared alarms, 15 % repeated raises
  of active alarms (ignored), 5 % raises on new keys. Target: >= 50 000 signals/s.
- baseline: the same signals through a naive manager that keeps the open alarms in a list and scans it
  per signal (the same `lifecycle.step` decides), on a prefix of the stream (it is slow).
- tick: `tick(now)` with 100 000 open alarms of which ~1 % fall due per tick (heap of due times), against
  a naive tick that asks every open alarm whether a timer is due.

- api: actions through the HTTP API with 100 000 open alarms, as `earlywarn run` serves them: the starlette
  app on uvicorn over loopback, the engine thread of a real `Runner` committing each action to a DuckDB
  file before the reply (the 100 000 alarms were committed first and restored at start, like a restart).
  A client process (httpx, keep-alive) posts `ack` and `comment` on random open alarms, one request at a
  time per connection, with 1 and with 8 connections; actions/s and latency p50/p99 (`--no-api` skips it).

Results go to benchmarks/results/lifecycle.json. The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from earlywarn.alarms.lifecycle import Clear, Policy, Raise, first_due_input, open_alarm, run_timers, step
from earlywarn.alarms.manager import AlarmManager, alarm_id_for
from earlywarn.config import AlarmsConfig
from earlywarn.model import Alarm, Severity, Signal, SignalKind, Site

T0_MS = 1_767_225_600_000
RESULTS = Path(__file__).resolve().parent / "results" / "lifecycle.json"
SEVERITIES = (Severity.RED, Severity.ORANGE, Severity.YELLOW, Severity.BLUE)


# ---------------------------------------------------------------------------------------------
# workload


def make_sites(n_sites: int) -> dict[str, Site]:
    return {f"S{i:04d}": Site(f"S{i:04d}", f"site {i}", "hazchem", f"D{i % 17}") for i in range(n_sites)}


OPEN_SPACING_MS = 50  # 100 000 alarms raised over 83 minutes


def open_signals(n_alarms: int, n_sites: int, t0_ms: int) -> list[Signal]:
    """One raise per key: n_alarms keys spread over the sites, OPEN_SPACING_MS apart."""
    per_site = n_alarms // n_sites
    return [
        Signal(
            f"S{i % n_sites:04d}",
            f"T{i // n_sites:04d}",
            f"R{i % 7}",
            SEVERITIES[i % 4],
            SignalKind.RAISE,
            t0_ms + i * OPEN_SPACING_MS,
            1.0 + (i % per_site) * 0.001,
            "high",
        )
        for i in range(n_alarms)
    ]


def stream(keys: Sequence[Signal], n: int, seed: int, t0_ms: int, n_sites: int) -> list[Signal]:
    """n signals over the open keys, consistent with each key's state, in event-time order."""
    rng = random.Random(seed)
    active = [True] * len(keys)
    out: list[Signal] = []
    ts = t0_ms
    fresh = 0
    for _ in range(n):
        ts += 1
        r = rng.random()
        if r < 0.05:
            fresh += 1
            out.append(
                Signal(
                    f"S{fresh % n_sites:04d}",
                    f"N{fresh:06d}",
                    "R9",
                    Severity.YELLOW,
                    SignalKind.RAISE,
                    ts,
                    2.0,
                )
            )
            continue
        i = rng.randrange(len(keys))
        k = keys[i]
        if active[i]:
            kind = SignalKind.RAISE if r < 0.20 else SignalKind.CLEAR
        else:
            kind = SignalKind.RAISE
        active[i] = kind is SignalKind.RAISE
        out.append(Signal(k.site, k.tag, k.rule_id, k.severity, kind, ts, rng.uniform(0.0, 10.0)))
    return out


# ---------------------------------------------------------------------------------------------
# the naive baseline: same decisions, list scans instead of indexes


class NaiveManager:
    """Open alarms in a list; every signal scans it for its key. What a first draft would do."""

    def __init__(self, sites: dict[str, Site], config: AlarmsConfig, alarms: list[Alarm]) -> None:
        self.sites = sites
        self.policy = Policy.from_config(config)
        self.alarms = list(alarms)

    def apply_signals(self, signals: Sequence[Signal], now_ms: int) -> int:
        n_events = 0
        for s in signals:
            idx = next(
                (
                    j
                    for j, a in enumerate(self.alarms)
                    if (a.site, a.rule_id, a.tag) == (s.site, s.rule_id, s.tag)
                ),
                None,
            )
            if idx is None:
                if s.kind is SignalKind.RAISE:
                    site = self.sites.get(s.site)
                    out = open_alarm(
                        alarm_id_for(s.site, s.rule_id, s.tag, s.ts_ms),
                        site=s.site,
                        plant=site.plant if site else "",
                        district=site.district if site else "",
                        tag=s.tag,
                        rule_id=s.rule_id,
                        severity=s.severity,
                        raise_=Raise(s.ts_ms, s.value),
                        policy=self.policy,
                    )
                    self.alarms.append(out.alarm)
                    n_events += len(out.events)
                continue
            inp = Raise(s.ts_ms, s.value) if s.kind is SignalKind.RAISE else Clear(s.ts_ms, s.value)
            out = step(self.alarms[idx], inp, now_ms, self.policy)
            self.alarms[idx] = out.alarm
            n_events += len(out.events)
        return n_events

    def tick(self, now_ms: int) -> int:
        n_events = 0
        for j, a in enumerate(self.alarms):
            if first_due_input(a, now_ms, self.policy) is not None:
                new, events, _ = run_timers(a, now_ms, self.policy)
                self.alarms[j] = new
                n_events += len(events)
        return n_events


# ---------------------------------------------------------------------------------------------
# timing


CPU_S: list[float] = []  # process CPU seconds of each timed() call, in order


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    """Wall seconds of fn(*args) (gc off); its CPU seconds go to CPU_S.

    The machine is shared: under load the wall time includes waiting for a core, the CPU time does not.
    Both are reported; ratios come from the same process either way.
    """
    gc.collect()
    gc.disable()
    try:
        c = time.process_time()
        t = time.perf_counter()
        r = fn(*args)
        wall = time.perf_counter() - t
        CPU_S.append(time.process_time() - c)
        return wall, r
    finally:
        gc.enable()


def run(quick: bool, call: int, seed: int) -> dict[str, Any]:
    n_alarms = 100_000
    n_sites = 500
    n_signals = 100_000 if quick else 400_000
    n_baseline = 300 if quick else 1_000
    config = AlarmsConfig()
    sites = make_sites(n_sites)
    opens = open_signals(n_alarms, n_sites, T0_MS)
    t_stream0 = T0_MS + n_alarms * OPEN_SPACING_MS + 1
    sigs = stream(opens, n_signals, seed, t_stream0, n_sites)
    results: dict[str, Any] = {}

    # open 100 000 alarms
    m = AlarmManager(sites, config)

    def open_all() -> None:
        for i in range(0, len(opens), call):
            m.apply_signals(opens[i : i + call], opens[min(i + call, len(opens)) - 1].ts_ms)

    dt, _ = timed(open_all)
    assert len(m) == n_alarms
    results["open"] = {
        "signals": n_alarms,
        "seconds": dt,
        "per_s": n_alarms / dt,
        "cpu_per_s": n_alarms / CPU_S[-1],
    }
    snapshot = m.open_alarms()

    # signals over 100 000 open alarms
    def apply_all() -> int:
        n = 0
        for i in range(0, len(sigs), call):
            chunk = sigs[i : i + call]
            n += len(m.apply_signals(chunk, chunk[-1].ts_ms).events)
        return n

    dt, n_events = timed(apply_all)
    results["signals"] = {
        "signals": len(sigs),
        "events": n_events,
        "seconds": dt,
        "per_s": len(sigs) / dt,
        "cpu_per_s": len(sigs) / CPU_S[-1],
        "open_after": len(m),
        "stats": dict(sorted(m.stats.items())),
    }

    # naive baseline on a prefix, from the same 100 000 open alarms
    naive = NaiveManager(sites, config, snapshot)
    prefix = sigs[:n_baseline]

    def naive_all() -> int:
        return naive.apply_signals(prefix, prefix[-1].ts_ms)

    dt_naive, _ = timed(naive_all)
    results["baseline_list_scan"] = {
        "signals": len(prefix),
        "seconds": dt_naive,
        "per_s": len(prefix) / dt_naive,
        "cpu_per_s": len(prefix) / CPU_S[-1],
    }

    # tick: ~1 % of the alarms due per tick. Alarms were raised OPEN_SPACING_MS apart from T0 and every
    # one is due 5 min later (a reminder; red ones also escalate); 50 s steps bring ~1 000 due per tick.
    m2 = AlarmManager(sites, config, open_alarms=snapshot)
    naive2 = NaiveManager(sites, config, snapshot)
    n_ticks = 5 if quick else 20
    start = T0_MS + 5 * 60_000
    steps = [start + k * 50_000 for k in range(1, n_ticks + 1)]

    def ticks(mgr: Any) -> int:
        return sum(len(r.events) if hasattr(r, "events") else r for r in (mgr.tick(t) for t in steps))

    dt_tick, ev_tick = timed(ticks, m2)
    dt_tick_naive, ev_tick_naive = timed(ticks, naive2)
    assert ev_tick == ev_tick_naive, (ev_tick, ev_tick_naive)
    dt_idle, _ = timed(lambda: [m2.tick(steps[-1]) for _ in range(100)])
    results["tick"] = {
        "open_alarms": n_alarms,
        "ticks": n_ticks,
        "events": ev_tick,
        "step_ms": 50_000,
        "ms_per_tick": dt_tick / n_ticks * 1e3,
        "baseline_ms_per_tick": dt_tick_naive / n_ticks * 1e3,
        "idle_ms_per_tick": dt_idle / 100 * 1e3,
    }
    return results


# ---------------------------------------------------------------------------------------------
# actions through the HTTP API (a real server on loopback)


def _api_client(url: str, ids: list[str], conns: int, seconds: float, seed: int, out: Any) -> None:
    """Client process: `conns` keep-alive connections, each posting one action at a time for `seconds`."""
    import threading

    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        mine: list[float] = []
        got: dict[int, int] = {}
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.perf_counter() < deadline:
                aid = ids[rng.randrange(len(ids))]
                if rng.random() < 0.5:
                    path, body = f"/api/alarms/{aid}/ack", {"note": ""}
                else:
                    path, body = f"/api/alarms/{aid}/comment", {"note": f"bench {k}"}
                t = time.perf_counter()
                r = c.post(path, json=body)
                mine.append(time.perf_counter() - t)
                got[r.status_code] = got.get(r.status_code, 0) + 1
        with lock:
            lat.extend(mine)
            for code, n in got.items():
                codes[code] = codes.get(code, 0) + n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put({"requests": len(lat), "seconds": time.perf_counter() - t0, "latencies": lat, "codes": codes})


class _NoIngest:
    """The ingest stage of a Runner with no broker: the API case measures actions only."""

    connected = True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def ack(self, messages: Any) -> int:
        return 0


def run_api(quick: bool, seed: int, n_alarms: int = 100_000) -> dict[str, Any]:
    """Actions/s through the HTTP API of a running engine with `n_alarms` open alarms."""
    import multiprocessing as mp
    import queue
    import socket
    import tempfile

    import numpy as np

    from earlywarn.api import serve_in_thread
    from earlywarn.app import build_engine
    from earlywarn.config import load_config
    from earlywarn.metrics import Metrics
    from earlywarn.pipeline import Runner
    from earlywarn.store import CommitBatch, Store

    n_sites = 500
    seconds = 5.0 if quick else 15.0
    sites = make_sites(n_sites)
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    res: dict[str, Any] = {"open_alarms": n_alarms, "seconds_per_case": seconds}
    with tempfile.TemporaryDirectory(prefix="bench_lifecycle_api_") as d:
        tmp = Path(d)
        (tmp / "sites.toml").write_text("".join(
            f'[[site]]\nid = "{s.id}"\nplant = "{s.plant}"\ndistrict = "{s.district}"\n' for s in sites.values()))
        (tmp / "ew.toml").write_text(
            '[store]\npath = "ew.duckdb"\n[rules]\nsites = "sites.toml"\n[metrics]\nlisten = ""\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\n[notify]\nlog = false\n[broker]\nurl = "mqtt://127.0.0.1:1"\n')
        cfg = load_config(tmp / "ew.toml")
        # 100 000 alarms raised over the last minute (no deadline falls due during the run), committed,
        # then restored by the engine at start
        now = int(time.time() * 1000)
        opens = [Signal(f"S{i % n_sites:04d}", f"T{i // n_sites:04d}", f"R{i % 7}", SEVERITIES[i % 4],
                        SignalKind.RAISE, now - 60_000 + i * 60_000 // n_alarms, 1.0, "high") for i in range(n_alarms)]
        seedm = AlarmManager(sites, cfg.alarms)
        ch = seedm.apply_signals(opens, now)
        t = time.perf_counter()
        with Store.open(tmp / "ew.duckdb", deadlines=cfg.alarms.deadlines) as st:
            st.commit(CommitBatch(fresh=_empty(), maybe_dup=_empty(), alarms=tuple(ch.alarms),
                                  events=tuple(ch.events), now_ms=now))
        res["seed_commit_s"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics = Metrics()
        engine = build_engine(cfg, metrics=metrics)
        res["engine_start_s"] = time.perf_counter() - t  # restores the open alarms from the store
        ids = [a.alarm_id for a in engine.alarms.open_alarms()]
        assert len(ids) == n_alarms, len(ids)
        runner = Runner(cfg, engine=engine, metrics=metrics, ingest=_NoIngest(), inbox=queue.SimpleQueue())
        runner.start()
        server = serve_in_thread(cfg, runner)
        url = f"http://127.0.0.1:{server.port}"
        ctx = mp.get_context("spawn")
        cases = []
        try:
            for conns in (1, 8):
                q = ctx.Queue()
                p = ctx.Process(target=_api_client, args=(url, ids, conns, seconds, seed, q), daemon=True)
                p.start()
                r = q.get(timeout=seconds + 120)
                p.join(30)
                lat = np.array(r["latencies"]) * 1e3
                cases.append({
                    "connections": conns, "requests": r["requests"], "seconds": r["seconds"],
                    "actions_per_s": r["requests"] / r["seconds"], "codes": r["codes"],
                    "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                })
        finally:
            server.stop()
            runner.stop()
            engine.store.close()
        res["cases"] = cases
        res["open_after"] = len(engine.alarms.open_alarms())
    return res


def _empty() -> Any:
    from earlywarn.model import ReadingBatch

    return ReadingBatch.empty()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller stream (CI)")
    ap.add_argument("--call", type=int, default=5_000, help="signals per apply_signals call")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-api", action="store_true", help="skip actions through the HTTP API")
    args = ap.parse_args(argv)
    res = run(args.quick, args.call, args.seed)
    if not args.no_api:
        res["api"] = run_api(args.quick, args.seed)
    s, b, o, t = res["signals"], res["baseline_list_scan"], res["open"], res["tick"]
    rows = [
        (
            "open 100k alarms (new-alarm raises)",
            f"{o['per_s']:,.0f} signals/s",
            f"cpu-time rate {o['cpu_per_s']:,.0f}/s",
        ),
        (
            "signals over 100k open alarms",
            f"{s['per_s']:,.0f} signals/s",
            f"x{s['per_s'] / b['per_s']:,.0f} vs baseline; cpu-time rate {s['cpu_per_s']:,.0f}/s",
        ),
        (
            "baseline: list scan per signal",
            f"{b['per_s']:,.0f} signals/s",
            f"({b['signals']} signals; cpu-time rate {b['cpu_per_s']:,.0f}/s)",
        ),
        (
            "tick, ~1k due of 100k",
            f"{t['ms_per_tick']:.2f} ms",
            f"x{t['baseline_ms_per_tick'] / t['ms_per_tick']:,.0f} vs baseline",
        ),
        ("baseline tick: scan all", f"{t['baseline_ms_per_tick']:.2f} ms", ""),
        ("tick, nothing due", f"{t['idle_ms_per_tick'] * 1e3:.1f} us", ""),
    ]
    for c in res.get("api", {}).get("cases", []):
        rows.append((
            f"API actions, 100k open, {c['connections']} conn.",
            f"{c['actions_per_s']:,.0f} actions/s",
            f"p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms; {c['requests']} requests, status {c['codes']}",
        ))
    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  {'rate':>22}  note")
    for name, rate, note in rows:
        print(f"{name:<{w}}  {rate:>22}  {note}")
    target = 50_000
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"target >= {target:,} signals/s with 100k open: wall {'met' if s['per_s'] >= target else 'NOT met'}, "
        f"cpu-time {'met' if s['cpu_per_s'] >= target else 'NOT met'} (load average {load:.1f}, {os.cpu_count()} cpus)"
    )
    res["meta"] = {
        "load_average_1m": load,
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "call": args.call,
        "seed": args.seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "target_signals_per_s": target,
        "target_met_wall": s["per_s"] >= target,
        "target_met_cpu": s["cpu_per_s"] >= target,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
