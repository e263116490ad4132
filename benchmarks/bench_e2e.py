"""The whole path through a real mosquitto at QoS 1, every plant pack active; and publish -> alarm latency.

    python benchmarks/bench_e2e.py [--quick]

Workload (seeded, built before any timing): the readings of simulated plants of all four types
(240 sites, `simulators.simulate_sites` via bench_replay's cached file, so the shipped rule packs
evaluate their real tags), cut per site into 100-reading batch payloads and into single-reading payloads,
timestamps moved to start at the run's wall time. The engine is `earlywarn.app.start_runner` (ingest in
its own process, the shipped packs, a fresh DuckDB file) and is timed until the last reading is stored.

Throughput, same broker, same messages, in the same run (drain: the broker holds everything for a
persistent session before the subscriber connects; live: an unpaced publisher process while connected):
- engine: readings stored per second;
- bare paho: a paho subscriber that only counts and acknowledges on receipt (what the client library can
  take: benchmarks/bench_ingest.py's `Bare`);
- mosquitto_sub -q 1 -C N > /dev/null: what the broker alone delivers to a C client.
Targets: >= 1 M readings/s for batch payloads and >= 0.8 x bare paho (batch and single, drain and live).

Latency: a publisher process paced at 10 %, 50 % and 90 % of the engine's live batch rate sends the same
background traffic plus, every 50 ms, a probe: one reading on a probe site (a hazchem site whose
`tank_level_hh` has on_delay 0) above its limit, stamped with its publish wall time. The engine's
`store.commit` is wrapped (in this process, not in src/) to note the wall time at which the transaction
holding each probe site's new alarm row returned: latency = that time - the probe's publish time, i.e.
publish -> alarm row committed in DuckDB (visible to every reader). Probes that raise nothing are counted.
Target: p99 <= 250 ms at 50 %. Writes benchmarks/results/e2e.json.

`--snapshot-cost`: the rule-state snapshot of the engine after the last 1 M readings of the same workload,
no broker: the time of its consistent copy (`RuleEngine.snapshot_parts`, on the engine thread in a live run),
of packing it (`EngineState.pack`, on the packer thread) and of both (`snapshot`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import Figure, engine_config, env_block, mosquitto, mosquitto_sub_binary, write_json

PROBE_RULE = "tank_level_hh"  # hazchem: tank_level_pct > 90 (deadband 2); on_delay set to 0 for probe sites
PROBE_TAG = "tank_level_pct"
PROBE_EVERY_S = 0.05
TOPIC_FILTER = "ew/+/telemetry/#"


# ---------------------------------------------------------------------------------------------
# workload


def build_messages(n_readings: int, per_msg: int, start_ms: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """`(topic, payload)` in event-time order and the sites; each message holds one site's next readings."""
    import msgspec
    import polars as pl
    from bench_replay import workload

    path, sites = workload(max(n_readings, 1_000_000))
    # the tail: the auto-scheduled fault scenarios start after the plants settle, so the end of the span holds
    # alarms (rules that raise and clear), not only quiet readings
    df = pl.read_parquet(path).tail(n_readings)
    df = df.with_columns((pl.col("ts") - pl.col("ts").min() + start_ms).alias("ts"))
    df = df.with_columns((pl.int_range(pl.len()).over("site") // per_msg).alias("chunk"))
    enc = msgspec.json.Encoder()
    msgs: list[tuple[int, str, bytes]] = []
    for (site, _chunk), g in df.group_by(["site", "chunk"], maintain_order=True):
        tags, tss, vals = g["tag"].to_list(), g["ts"].to_list(), g["value"].to_list()
        topic = f"ew/{site}/telemetry"
        if per_msg == 1:
            payload = enc.encode({"tag": tags[0], "ts": tss[0], "value": vals[0]})
        else:
            payload = enc.encode({"ts": tss[0], "readings": [
                {"tag": t, "ts": s, "value": v} for t, s, v in zip(tags, tss, vals, strict=True)]})
        msgs.append((tss[0], topic, payload))
    msgs.sort(key=lambda m: m[0])
    return [(t, p) for _, t, p in msgs], sites


def probe_overrides(n: int) -> str:
    return "".join(f'[[site]]\nid = "PRB-{i:04d}"\nplant = "hazchem"\ndistrict = "bench"\n'
                   f'[site.overrides.{PROBE_RULE}]\non_delay = "0s"\n' for i in range(n))


# ---------------------------------------------------------------------------------------------
# subscribers: engine, mosquitto_sub (bare paho comes from bench_ingest)


def _engine_cfg(tmp: Path, broker: Any, name: str, sites: list[tuple[str, str]], n_probes: int = 0) -> Any:
    from earlywarn.config import load_config

    # notify.log off: the log channel prints every notice to stdout, which would bury the benchmark's output
    path = engine_config(tmp, name, sites, broker_url=broker.url, mode="process", extra="[notify]\nlog = false\n")
    if n_probes:
        sf = tmp / f"{name}-sites.toml"
        sf.write_text(sf.read_text() + probe_overrides(n_probes))
    return load_config(path)


def _since_connack_s(r: Any) -> float:
    """Seconds since the engine's MQTT client got its CONNACK (0 when the ingest does not say)."""
    connack_ms = getattr(r.ingest, "connack_ms", None)
    return max(0.0, time.time() - connack_ms / 1000) if connack_ms else 0.0


def _stored(r: Any) -> float:
    return r.metrics.registry.get_sample_value("earlywarn_store_readings_total") or 0.0


def _stored_reader(r: Any) -> Any:
    """The engine's stored-readings count, cheaply: run_engine polls it every 2 ms from the engine's own process,
    and `registry.get_sample_value` (every metric collected) cost ~0.6 CPU s per million readings there."""
    from bench_ingest import _stored_counter

    return _stored_counter(r)


def run_engine(broker: Any, tmp: Path, msgs: list[tuple[str, bytes]], n_readings: int, live: bool, name: str,
               sites: list[tuple[str, str]]) -> dict[str, Any]:
    from bench_ingest import prefill_while_away, publish

    from earlywarn.app import start_runner

    cfg = _engine_cfg(tmp, broker, name, sites)
    if not live:  # the first connection creates the persistent session; then the broker fills up
        prefill_while_away(lambda: start_runner(cfg), broker, msgs)
    t_start = time.perf_counter()
    r = start_runner(cfg)
    acct = _CpuAccount(r)
    trace: list[dict[str, float]] = []
    r.engine.trace = trace  # the engine thread's per-step timings: where its wall time goes
    r.ingest.wait_connected(20)
    # from the connection on, like the bare subscriber (its clock starts at connect()): the engine's start
    # (spawning the MQTT process, opening the store, building the rule engine) is reported apart. The
    # engine is `connected` at its SUBACK, but a persistent session's messages flow from the CONNACK on.
    t0 = time.perf_counter() - _since_connack_s(r)
    startup_s = t0 - t_start
    if live:
        time.sleep(0.3)
        p, _ = publish(broker.host, broker.port, msgs)
    first = None
    deadline = time.monotonic() + 600
    stored = _stored_reader(r)
    while (n := stored()) < n_readings:
        if first is None and n > 0:
            first = time.perf_counter()
        if r.error is not None or time.monotonic() > deadline:
            raise RuntimeError(f"engine failed or stalled at {n} of {n_readings}: {r.error}")
        time.sleep(0.002)
    t_end = time.perf_counter()
    cpu = acct.done(n_readings)
    cpu["engine_thread_wall_s"] = {k: round(sum(t.get(k, 0.0) for t in trace), 3) for k in STAGES}
    if live:
        p.join()
    signals = sum(s.value for m in r.metrics.registry.collect() if m.name == "earlywarn_rules_signals"
                  for s in m.samples if s.name.endswith("_total"))
    reg = r.metrics.registry
    # where the engine thread's time went: micro-batches, their size, rules and commit time (the engine's
    # own histograms), against the wall time of the run
    breakdown = {k: reg.get_sample_value(f"earlywarn_{m}") or 0.0 for k, m in (
        ("batches", "batch_readings_count"), ("batch_readings_sum", "batch_readings_sum"),
        ("batch_s", "batch_duration_seconds_sum"), ("rules_s", "rules_duration_seconds_sum"),
        ("write_s", "store_write_duration_seconds_sum"))}
    breakdown["mean_batch_readings"] = breakdown["batch_readings_sum"] / max(breakdown["batches"], 1)
    r.stop()
    r.engine.store.close()
    start = (first or t0) if live else t0
    return {"readings_s": n_readings / (t_end - start), "seconds": t_end - start, "startup_s": startup_s,
            "signals": signals, **breakdown, "cpu": cpu}


class _CpuAccount:
    """CPU seconds of the engine's parts from its start to the last reading stored, per thread (Linux).

    The engine's commit duration metric is wall time on the committer thread, which on a machine whose
    cores are all busy also counts waiting for a core and for the GIL. This says what the commits cost in
    CPU: the committer thread's own CPU (store.commit is wrapped, in this process, to learn the thread),
    DuckDB's worker threads and the store's background thread (the threads neither the engine's nor the
    committer's nor this one's), the engine thread, and the MQTT child process.
    """

    def __init__(self, r: Any) -> None:
        import psutil

        self.proc = psutil.Process()
        self.r = r
        self.engine_tid = r._thread.native_id
        self.committer: set[int] = set()
        self.commit_wall = self.commit_thread_cpu = 0.0
        self.commits = 0
        store = r.engine.store
        orig = store.commit

        def commit(cb: Any, **kw: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return orig(cb, **kw)
            finally:
                self.commit_thread_cpu += time.thread_time() - c
                self.commit_wall += time.perf_counter() - t
                self.commits += 1
                self.committer.add(threading.get_native_id())

        store.commit = commit
        self.t0 = self._threads()
        self.child0 = self._children()

    def _threads(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in self.proc.threads()}

    def _children(self) -> float:
        total = 0.0
        for c in self.proc.children(recursive=True):
            try:
                ct = c.cpu_times()
                total += ct.user + ct.system
            except Exception:  # noqa: BLE001, S112 - a child that ended: not counted
                continue
        return total

    def done(self, n_readings: int) -> dict[str, Any]:
        t1 = self._threads()
        d = {tid: t1[tid] - self.t0.get(tid, 0.0) for tid in t1}
        # the engine thread commits too (an idle step's actions): the committer is the other one
        committer = self.committer - {self.engine_tid}
        names = {t.native_id: t.name for t in threading.enumerate()}
        by_name: dict[str, float] = {}
        for tid, v in d.items():
            if tid == self.engine_tid:
                name = "engine"
            elif tid in committer:
                name = "committer"
            elif tid in names:
                name = names[tid].split("_")[0]  # a pool's threads together
            else:  # not a Python thread: DuckDB's workers, or a native pool (polars: its /proc comm)
                try:
                    comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
                except OSError:
                    comm = "?"
                name = "native:" + comm.rstrip("0123456789-_")
            by_name[name] = by_name.get(name, 0.0) + v
        per_m = 1e6 / n_readings
        return {"process_s": sum(d.values()), "threads_s": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
                "mqtt_child_s": self._children() - self.child0, "commits": self.commits,
                "commit_wall_s": self.commit_wall, "commit_thread_cpu_s": self.commit_thread_cpu,
                "commit_wall_us_per_reading": self.commit_wall * per_m,
                "commit_thread_cpu_us_per_reading": self.commit_thread_cpu * per_m}


def run_mosquitto_sub(broker: Any, msgs: list[tuple[str, bytes]], per: int, live: bool, name: str) -> float | None:
    """Readings/s the broker delivers to `mosquitto_sub -q 1` writing to /dev/null."""
    from bench_ingest import publish

    exe = mosquitto_sub_binary()
    if exe is None:
        return None
    base = [exe, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", TOPIC_FILTER, "-i", f"sub-{name}"]
    n = len(msgs)
    if not live:
        # a persistent session (-c) created, left, filled, then drained: -C N exits after N messages
        subprocess.run([*base, "-c", "-W", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        p, done = publish(broker.host, broker.port, msgs)
        done.wait()
        p.join()
        t0 = time.perf_counter()
        subprocess.run([*base, "-c", "-C", str(n)], stdout=subprocess.DEVNULL, check=True, timeout=600)
        return n * per / (time.perf_counter() - t0)
    sub = subprocess.Popen([*base, "-C", str(n)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    t0 = time.perf_counter()
    p, _ = publish(broker.host, broker.port, msgs)
    sub.wait(timeout=600)
    dt = time.perf_counter() - t0  # includes the publisher's start: a conservative (low) broker figure
    p.join()
    return n * per / dt


# ---------------------------------------------------------------------------------------------
# latency


def _paced_publisher(host: str, port: int, msgs: list[tuple[str, bytes, int]], rate: float, n_probes: int,
                     probe0: int, out: Any) -> None:
    """Background messages paced at `rate` readings/s, and a probe every PROBE_EVERY_S; reports probe times."""
    from simulators.publish import MqttPublisher, TokenBucket

    pub = MqttPublisher(host, port, qos=1, client_id_prefix=f"bench-lat-{os.getpid()}").connect()
    bucket = TokenBucket(rate, max(100.0, rate * 0.02))
    sent: dict[str, int] = {}
    start = time.monotonic()
    k = 0
    i = 0
    while k < n_probes:
        if time.monotonic() >= start + k * PROBE_EVERY_S:
            site = f"PRB-{probe0 + k:04d}"
            now_ms = int(time.time() * 1000)
            pub.publish(f"ew/{site}/telemetry", b'{"tag":"%s","ts":%d,"value":99.0}' % (PROBE_TAG.encode(), now_ms))
            sent[site] = now_ms
            k += 1
            continue
        topic, payload, n = msgs[i % len(msgs)]
        bucket.take(n)
        pub.publish(topic, payload)
        i += 1
    seconds = time.monotonic() - start
    pub.flush(30)
    pub.close()
    out.put({"sent": sent, "background_messages": i, "seconds": seconds})


def run_latency(broker: Any, tmp: Path, msgs: list[tuple[str, bytes]], per: int, rate: float, n_probes: int,
                probe0: int, name: str, sites: list[tuple[str, str]], total_probes: int) -> dict[str, Any]:
    import numpy as np

    from earlywarn.app import start_runner

    cfg = _engine_cfg(tmp, broker, name, sites, n_probes=total_probes)
    r = start_runner(cfg)
    r.ingest.wait_connected(20)
    trace: list[dict[str, float]] = []
    r.engine.trace = trace  # the engine thread's per-step timings (see tail_breakdown)
    store = r.engine.store
    seen: dict[str, tuple[int, float]] = {}  # probe site -> (received_ms in the MQTT process, step began)
    # older engines (before the pipelined runner) step through process_messages
    step_method = "begin_messages" if hasattr(r.engine, "begin_messages") else "process_messages"
    begin = getattr(r.engine, step_method)

    def begin_messages(msgs: Any, actions: Any = (), **kw: Any) -> Any:
        t = time.time()
        for m in msgs:
            if m.topic.startswith("ew/PRB-"):
                seen.setdefault(m.topic.split("/")[1], (m.received_ms, t))
        return begin(msgs, actions, **kw)

    setattr(r.engine, step_method, begin_messages)
    maint = _TimedLock(store._maint_lock)  # background checkpoints hold it: when they ran, and how long
    store._maint_lock = maint
    orig = store.commit
    committed: dict[str, float] = {}
    committed_step: dict[str, int] = {}  # probe site -> index in trace of the step that committed it

    def commit(cb: Any, **kw: Any) -> Any:  # the committer thread calls this; the row is visible once it returns
        res = orig(cb, **kw)
        t = time.time()
        for a in cb.alarms:
            if a.site.startswith("PRB-") and a.site not in committed:
                committed[a.site] = t
                committed_step[a.site] = len(trace)  # this step's entry is appended after the commit
        return res

    store.commit = commit
    time.sleep(0.5)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    items = [(t, p, per) for t, p in msgs]
    p = ctx.Process(target=_paced_publisher, args=(broker.host, broker.port, items, rate, n_probes, probe0, q),
                    daemon=True)
    p.start()
    rep = q.get(timeout=300)
    p.join(30)
    deadline = time.monotonic() + 10
    while len(committed) < n_probes and time.monotonic() < deadline:
        time.sleep(0.01)
    stored = _stored(r)
    if r.error is not None:
        raise RuntimeError(f"engine thread failed: {r.error!r}")
    r.stop()
    store.close()
    lat = np.array([(committed[s] * 1000 - t) for s, t in rep["sent"].items() if s in committed])
    achieved = rep["background_messages"] * per / rep["seconds"]
    tail = tail_breakdown(trace, rep["sent"], committed, committed_step)
    tail["maintenance"] = maint.summary(trace)
    # each probe's latency in three parts: publish -> received by the MQTT process (broker, publisher),
    # received -> its step began (pipe, inbox, engine busy), step began -> alarm row committed
    parts = np.array([(seen[s][0] - t, seen[s][1] * 1000 - seen[s][0],
                       committed[s] * 1000 - seen[s][1] * 1000)
                      for s, t in rep["sent"].items() if s in committed and s in seen])
    if len(parts):
        tail["parts_ms"] = {name: {"p50": float(np.percentile(parts[:, i], 50)),
                                   "p99": float(np.percentile(parts[:, i], 99))}
                            for i, name in enumerate(("upstream", "queued", "engine"))}
        worst = np.argsort(parts.sum(axis=1))[-3:]
        tail["parts_worst_ms"] = [[round(float(x), 1) for x in parts[i]] for i in worst]
    return {
        "tail": tail,
        "requested_readings_s": rate, "achieved_readings_s": achieved, "probes": n_probes,
        "probes_with_alarm": len(lat), "stored": stored,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "max_ms": float(lat.max()) if len(lat) else None,
    }


class _TimedLock:
    """A lock that notes when it was held (the store's maintenance lock: background checkpoints)."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.held: list[tuple[float, float]] = []

    def __enter__(self) -> Any:
        self._lock.acquire()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.held.append((self._t, time.perf_counter()))
        self._lock.release()

    def summary(self, trace: list[dict[str, float]]) -> dict[str, Any]:
        """Checkpoint count and durations; of the commits over 100 ms, how many overlapped one."""
        import numpy as np

        d = np.array([(b - a) * 1e3 for a, b in self.held]) if self.held else np.zeros(1)
        slow = [t for t in trace if t.get("commit", 0) > 0.1 and "commit_at" in t]
        overl = sum(1 for t in slow if any(a < t["commit_at"] + t["commit"] and b > t["commit_at"]
                                             for a, b in self.held))
        return {"checkpoints": len(self.held), "p50_ms": float(np.percentile(d, 50)),
                "max_ms": float(d.max()), "sum_ms": float(d.sum()), "slow_commits": len(slow),
                "slow_commits_overlapping": overl}


STAGES = ("collect", "decode", "sequence", "rules", "alarms", "commit", "commit_wait", "snapshot", "notify",
          "ack")


def tail_breakdown(trace: list[dict[str, float]], sent: dict[str, int], committed: dict[str, float],
                   committed_step: dict[str, int]) -> dict[str, Any]:
    """Where the engine thread's time went: per stage p50/p99/max over the steps, and the slowest probes with
    the stages of the step that committed them and of the step before (a probe waits through both)."""
    import numpy as np

    steps = [t for t in trace if "collect" in t]
    out: dict[str, Any] = {"steps": len(steps)}
    if not steps:
        return out
    per_stage = {}
    for k in (*STAGES, "readings", "backlog", "alarm_rows"):
        a = np.array([t.get(k, 0.0) for t in steps])
        scale = 1.0 if k in ("readings", "backlog", "alarm_rows") else 1e3
        per_stage[k] = {"p50": float(np.percentile(a, 50)) * scale,
                        "p99": float(np.percentile(a, 99)) * scale,
                        "max": float(a.max()) * scale, "sum": float(a.sum()) * scale}
    out["per_stage"] = per_stage
    lat = sorted(((committed[s] * 1000 - t, s) for s, t in sent.items() if s in committed), reverse=True)
    worst = []
    for ms, s in lat[: max(3, len(lat) // 100)]:
        i = committed_step[s]
        rows = {}
        for label, j in (("step", i), ("prev", i - 1)):
            if 0 <= j < len(trace):
                t = trace[j]
                rows[label] = {k: round(t.get(k, 0.0) * 1e3, 1) for k in STAGES} | {
                    "readings": t.get("readings", 0), "backlog": t.get("backlog", 0)}
        worst.append({"latency_ms": round(ms, 1), "site": s, **rows})
    out["worst"] = worst
    return out


def print_tail(tail: dict[str, Any]) -> None:
    ps = tail.get("per_stage")
    if not ps:
        return
    print(f"    {tail['steps']} steps; per stage p50 / p99 / max / sum (ms; readings, backlog in units):")
    for k, v in ps.items():
        print(f"      {k:10} {v['p50']:9.1f} {v['p99']:9.1f} {v['max']:9.1f} {v['sum']:10.0f}")
    if "parts_ms" in tail:
        print(f"    probe latency parts (upstream, queued, engine): {tail['parts_ms']}; "
              f"worst {tail['parts_worst_ms']}")
    if "maintenance" in tail:
        print(f"    background checkpoints: {tail['maintenance']}")
    for w in tail["worst"]:
        print(f"    probe {w['site']} {w['latency_ms']} ms")
        for label in ("prev", "step"):
            if label in w:
                print(f"      {label:5} " + " ".join(f"{k}={v}" for k, v in w[label].items()))


# ---------------------------------------------------------------------------------------------


def latency_brokers(tmp: Path, n: int, shared: bool) -> Iterator[Any]:
    """A fresh mosquitto for each of `n` latency levels (each stopped before the next starts).

    `shared`: one broker for all levels, as before. It keeps each finished level's engine session (persistent,
    still subscribed) and queues every later message for it without bound (max_queued_messages 0), so by the
    last level the broker stores each message for every earlier session, and the probes' publish -> received
    time grew level by level (measured p99 37, 90, 282, 438 ms over four levels): the last level's tail was
    mostly the broker's, not the engine's."""
    if shared:
        with mosquitto(tmp / "b-latency") as broker:
            for _ in range(n):
                yield broker
        return
    for k in range(n):
        with mosquitto(tmp / f"b-latency{k}") as broker:
            yield broker


def run_latency_only(rates: tuple[float, ...], probes: int, shared_broker: bool = False) -> dict[str, Any]:
    """Only the latency levels (no throughput part), at the given readings/s."""
    start_ms = int(time.time() * 1000)
    msgs, sites = build_messages(2_000_000, 100, start_ms)
    lat_rows = []
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as d:
        tmp = Path(d)
        for k, broker in enumerate(latency_brokers(tmp, len(rates), shared_broker)):
            rate = rates[k]
            lr = run_latency(broker, tmp, msgs, 100, rate, probes, k * probes, f"ew-lat{k}", sites,
                             len(rates) * probes)
            lr["fraction"] = None
            lat_rows.append(lr)
            print(f"  latency at {rate:,.0f} r/s asked ({lr['achieved_readings_s']:,.0f} r/s): p50 "
                  f"{lr['p50_ms']:.0f} ms, p99 {lr['p99_ms']:.0f} ms, max {lr['max_ms']:.0f} ms, "
                  f"{lr['probes_with_alarm']}/{lr['probes']} probes raised", flush=True)
            print_tail(lr["tail"])
    return {"latency": lat_rows}


def run(quick: bool, *, smoke: bool = False, latency_at: tuple[float, ...] = (),
        shared_broker: bool = False, batch_only: bool = False) -> dict[str, Any]:
    """`smoke`: the suite's --quick sizes (python -m benchmarks --quick must finish in 2 minutes).
    `batch_only`: the batch-payload throughput cases only (no single payloads, no latency levels)."""
    from bench_ingest import run_bare

    n_batch = 100_000 if smoke else 300_000 if quick else 2_000_000
    n_single = 3_000 if smoke else 10_000 if quick else 50_000
    probes_per_level = 20 if smoke else 40 if quick else 200
    start_ms = int(time.time() * 1000)
    shapes = {}
    for shape, per, n in (("batch100", 100, n_batch), ("single", 1, n_single))[:1 if batch_only else 2]:
        msgs, sites = build_messages(n, per, start_ms)
        shapes[shape] = (per, n, msgs)
    rows: list[dict[str, Any]] = []
    figs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as d:
        tmp = Path(d)
        for shape, (per, n, msgs) in shapes.items():
            for live in (False, True):
                label = f"{shape}-{'live' if live else 'drain'}"
                with mosquitto(tmp / f"b-{label}") as broker:
                    bare = run_bare(broker, msgs, per, live, label)
                    sub = run_mosquitto_sub(broker, msgs, per, live, label)
                    eng = run_engine(broker, tmp, msgs, n, live, f"ew-{label}", sites)
                row = {"case": label, "readings": n, "messages": len(msgs), "engine_readings_s": eng["readings_s"],
                       "bare_paho_readings_s": bare, "mosquitto_sub_readings_s": sub, "signals": eng["signals"],
                       "ratio_vs_bare": eng["readings_s"] / bare, "engine": eng,
                       "ratio_vs_mosquitto_sub": eng["readings_s"] / sub if sub else None}
                rows.append(row)
                print(f"  {label:15} engine {eng['readings_s']:>11,.0f} r/s  bare paho {bare:>11,.0f}  "
                      f"mosquitto_sub {sub or 0:>11,.0f}  ratio {row['ratio_vs_bare']:.2f}  "
                      f"signals {eng['signals']:.0f}; {eng['batches']:.0f} batches of {eng['mean_batch_readings']:,.0f}, "
                      f"steps {eng['batch_s']:.2f} s (rules {eng['rules_s']:.2f}, "
                      f"commit {eng['write_s']:.2f}, overlapping the next step's evaluation) "
                      f"of {eng['seconds']:.2f} s", flush=True)
                c = eng["cpu"]
                threads = ", ".join(f"{k} {v:.2f}" for k, v in c["threads_s"].items() if v >= 0.005)
                wall = ", ".join(f"{k} {v:.2f}" for k, v in c["engine_thread_wall_s"].items() if k != "commit")
                print(f"  {'':15} engine thread wall s: {wall} (commit {c['engine_thread_wall_s']['commit']:.2f} "
                      f"on the committer thread)", flush=True)
                print(f"  {'':15} CPU s: process {c['process_s']:.2f} ({threads}), MQTT process "
                      f"{c['mqtt_child_s']:.2f}; {c['commits']} commits: wall {c['commit_wall_s']:.2f} s "
                      f"({c['commit_wall_us_per_reading']:.2f} us/reading), committing thread's CPU in them "
                      f"{c['commit_thread_cpu_s']:.2f} s ({c['commit_thread_cpu_us_per_reading']:.2f} us/reading)",
                      flush=True)
                figs.append(Figure("e2e", f"{label} through mosquitto, QoS 1", eng["readings_s"], "readings/s",
                                   baseline=bare, baseline_label="bare paho subscriber", target_ratio=0.8,
                                   target=1e6 if shape == "batch100" else None,
                                   note=f"mosquitto_sub {sub or 0:,.0f} r/s").as_dict())
        sustainable = next(r["engine_readings_s"] for r in rows if r["case"] == "batch100-live")
        if batch_only:
            return {"throughput": rows, "sustainable_readings_s": sustainable, "latency": [], "figures": figs}
        per, _, msgs = shapes["batch100"]
        lat_rows = []
        # fractions of the sustainable rate, then any fixed rates asked for (issue 4 names 100 000 r/s)
        levels = [(frac, frac * sustainable) for frac in (0.1, 0.5, 0.9)] + [(None, r) for r in latency_at]
        n_levels = len(levels)
        for k, broker in enumerate(latency_brokers(tmp, n_levels, shared_broker)):
            frac, rate = levels[k]
            lr = run_latency(broker, tmp, msgs, per, rate, probes_per_level,
                             k * probes_per_level, f"ew-lat{k}", sites, n_levels * probes_per_level)
            lr["fraction"] = frac
            lat_rows.append(lr)
            where = f"{frac:.0%}" if frac is not None else f"{rate:,.0f} r/s asked"
            print(f"  latency at {where} ({lr['achieved_readings_s']:,.0f} r/s): p50 {lr['p50_ms']} ms, "
                  f"p99 {lr['p99_ms']} ms, {lr['probes_with_alarm']}/{lr['probes']} probes raised",
                  flush=True)
            print_tail(lr["tail"])
            if frac is None:
                continue
            if lr["p99_ms"] is not None:
                figs.append(Figure("e2e", f"p99 publish -> alarm row at {frac:.0%} of sustainable",
                                   lr["p99_ms"], "ms", target=250 if frac == 0.5 else None,
                                   higher_is_better=False, note=f"p50 {lr['p50_ms']:.0f} ms").as_dict())
    return {"throughput": rows, "sustainable_readings_s": sustainable, "latency": lat_rows, "figures": figs}


def run_snapshot_cost(n_readings: int = 1_000_000, repeats: int = 15) -> dict[str, Any]:
    """Snapshot timings of a RuleEngine that evaluated the workload's last `n_readings` in 10 k chunks."""
    import statistics

    import polars as pl
    from bench_replay import workload

    from earlywarn.config import load_config
    from earlywarn.model import QUALITY_LABELS, ReadingBatch
    from earlywarn.pipeline import load_site_rules
    from earlywarn.rules.engine import RuleEngine
    from earlywarn.rules.state import EngineState

    path, sites = workload(max(n_readings, 1_000_000))
    df = pl.read_parquet(path).tail(n_readings)
    with tempfile.TemporaryDirectory(prefix="bench_e2e_") as d:
        _, site_rules = load_site_rules(load_config(engine_config(Path(d), "snap", sites)))
    eng = RuleEngine(site_rules)
    for k in range(0, len(df), 10_000):
        c = df.slice(k, 10_000)
        q = c["quality"].replace_strict(list(QUALITY_LABELS), list(range(len(QUALITY_LABELS)))).to_list()
        eng.evaluate(ReadingBatch.from_columns(c["site"].to_list(), c["tag"].to_list(), c["ts"].to_list(),
                                               c["value"].to_list(), q), int(c["ts"].max()))
    split = hasattr(eng, "snapshot_parts")  # engines before it: snapshot() only (for before / after)
    times: dict[str, list[float]] = {"snapshot_parts": [], "pack": [], "snapshot": []} if split else {
        "snapshot": []}
    blob = b""
    for _ in range(repeats):
        if not split:
            t = time.perf_counter()
            blob = eng.snapshot()
            times["snapshot"].append(time.perf_counter() - t)
            continue
        t = time.perf_counter()
        parts = eng.snapshot_parts()
        times["snapshot_parts"].append(time.perf_counter() - t)
        t = time.perf_counter()
        EngineState.pack(*parts)
        times["pack"].append(time.perf_counter() - t)
        t = time.perf_counter()
        blob = eng.snapshot()
        times["snapshot"].append(time.perf_counter() - t)
    out: dict[str, Any] = {"readings": n_readings, "sensors": eng._st.n_sensors, "bytes": len(blob)}
    for k, v in times.items():
        out[k] = {"median_ms": statistics.median(v) * 1e3, "min_ms": min(v) * 1e3, "max_ms": max(v) * 1e3}
        print(f"  {k:15} median {out[k]['median_ms']:6.1f} ms, min {out[k]['min_ms']:6.1f}, "
              f"max {out[k]['max_ms']:6.1f} ({repeats} runs)")
    print(f"  {out['sensors']} sensors, {len(blob):,} bytes")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 k batch readings, 10 k single, 40 probes per level")
    ap.add_argument("--latency-at", type=float, nargs="*", default=[], help="also measure latency at these readings/s")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the latency levels of --latency-at (no throughput part), with the stage tail")
    ap.add_argument("--shared-broker", action="store_true",
                    help="all latency levels on one broker (as before: earlier sessions load later levels)")
    ap.add_argument("--probes", type=int, default=200, help="probes per level with --latency-only")
    ap.add_argument("--snapshot-cost", action="store_true",
                    help="only the rule-state snapshot's cost after 1 M readings (no broker)")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the batch-payload throughput cases (drain and live), no latency levels")
    args = ap.parse_args(argv)
    if args.snapshot_cost:
        res = run_snapshot_cost()
        path = write_json("e2e-snapshot.json", {"benchmark": "e2e-snapshot", **env_block(), **res})
        print(f"wrote {path}")
        return 0
    if args.latency_only:
        res = run_latency_only(tuple(args.latency_at) or (100_000.0,), args.probes, args.shared_broker)
        path = write_json("e2e-latency.json", {"benchmark": "e2e-latency", **env_block(), **res})
        print(f"wrote {path}")
        return 0
    res = run(args.quick, latency_at=tuple(args.latency_at), shared_broker=args.shared_broker,
              batch_only=args.throughput_only)
    path = write_json("e2e-throughput.json" if args.throughput_only else "e2e.json", {"benchmark": "e2e", "quick": args.quick, **env_block(), **res})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
