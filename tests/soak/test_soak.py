"""Issue 9, soak: a steady telemetry stream with every transport fault of the simulators (jitter, duplicates,
out-of-order, malformed extras, gateway outages with a backlog flush) plus late data, into an engine
subprocess, for a while.

Afterwards: every published reading is stored exactly once; the signals equal those of `earlywarn replay`
of the readings the live engine evaluated (same rules, same engine; readings that arrived after a later
reading of their sensor are stored with `late = true` and, by design, not evaluated); the engine's RSS and
its queue depth stayed bounded.

A short version (~20 s) runs in the default suite; the full one runs with `pytest tests/soak --soak
[--soak-seconds 1800]` or `EARLYWARN_SOAK_SECONDS=1800 pytest tests/soak`.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pytest
from enginekit import SITES, EngineProc, new_metrics_port, wait_until, write_config
from publish import T0_MS, Publisher

from simulators.payload import Message
from simulators.transport import TransportFaults, apply

pytestmark = pytest.mark.integration

TAGS = [f"tag_{i}" for i in range(10)]
TICK_S = 0.5


@dataclass
class Figures:
    seconds: float
    rate: float  # readings per second offered (distinct readings)
    readings: int  # distinct good readings published
    messages: int  # messages published, faults included
    duplicates: int
    out_of_order: int
    malformed: int
    held_late: int
    outage_ticks: int
    stored: int
    lost: int
    duplicated: int
    late_stored: int
    live_signals: int
    replay_signals: int
    rss_start_kb: int
    rss_end_kb: int
    rss_max_kb: int
    queue_max: float
    duck_kb: list[int]  # DuckDB's buffer manager at each RSS sample (earlywarn_store_memory_bytes)


def value(site_i: int, tag_i: int, ts: int) -> float:
    # tag_1 swings across its limit (50) every few seconds, tag_0 now and then over 99: raises and clears
    x = ts / 200.0
    base = 50 + 30 * math.sin(x / (2 + site_i) + tag_i)
    return round(base + (60 if tag_i == 0 and int(x) % 17 == 0 else 0), 3)


class Stream:
    """Per tick and site: single-reading messages and 20-reading batches, then the simulators' transport
    faults, then some messages held back two ticks (late data)."""

    def __init__(self, rate: float, seed: int = 1) -> None:
        self.per_tick = max(len(SITES) * len(TAGS), int(rate * TICK_S))
        self.rng = random.Random(seed)
        # every fault of the simulators' transport: FIFO jitter, duplicates, out-of-order, malformed extras;
        # gateway outages are emulated per tick below (the transport's outage windows are absolute times)
        self.faults = TransportFaults(jitter_max_s=3.0, duplicate_rate=0.01, out_of_order_rate=0.01,
                                      malformed_rate=0.005)
        self.backlog: dict[str, list[tuple[str, bytes]]] = {}
        self.outage_ticks = 0
        self.tick = 0
        self.held: list[tuple[int, tuple[str, bytes]]] = []
        # published keys, compact (a 30-minute soak publishes tens of millions): site and tag as indexes
        self.key_site, self.key_tag, self.key_ts = array("b"), array("b"), array("q")
        self.n_messages = self.duplicates = self.out_of_order = self.malformed = self.held_late = 0

    def next_messages(self) -> list[tuple[str, bytes]]:
        k = self.tick
        self.tick += 1
        t0 = T0_MS + k * int(TICK_S * 1000)
        per_site = self.per_tick // len(SITES)
        out: list[tuple[str, bytes]] = []
        for si, site in enumerate(SITES):
            # distinct (tag, ts) inside the tick: ts steps of 1 ms, tags round-robin
            rows = [(TAGS[j % len(TAGS)], t0 + j // len(TAGS)) for j in range(per_site)]
            self.key_site.extend([si] * len(rows))
            self.key_tag.extend(int(t[4:]) for t, _ in rows)
            self.key_ts.extend(ts for _, ts in rows)
            msgs: list[Message] = []
            j = 0
            while j < len(rows):
                if self.rng.random() < 0.5:
                    t, ts = rows[j]
                    p = json.dumps({"tag": t, "ts": ts, "value": value(si, int(t[4:]), ts)}, separators=(",", ":"))
                    msgs.append(Message(ts, f"ew/{site}/telemetry", p.encode()))
                    j += 1
                else:
                    chunk = rows[j : j + 20]
                    p = json.dumps({"ts": chunk[0][1], "readings": [
                        {"tag": t, "ts": ts, "value": value(si, int(t[4:]), ts)} for t, ts in chunk]},
                        separators=(",", ":"))
                    msgs.append(Message(chunk[0][1], f"ew/{site}/telemetry/gw1", p.encode()))
                    j += len(chunk)
            faulty, log = apply(msgs, self.faults, site=site, seed=k)
            self.duplicates += log.duplicates
            self.out_of_order += log.out_of_order
            self.malformed += len(log.malformed)
            # a gateway outage of 3 s every 20 s, staggered per site: its queue holds everything, then
            # flushes in order before live data (product.md / domain.md: backlog after an outage)
            if (k + 9 * si) % int(20 / TICK_S) < int(3 / TICK_S):
                self.backlog.setdefault(site, []).extend((m.topic, m.payload) for m in faulty)
                self.outage_ticks += 1
                continue
            out.extend(self.backlog.pop(site, []))
            for m in faulty:
                if self.rng.random() < 0.005:
                    self.held.append((k + 2, (m.topic, m.payload)))  # late: after newer readings of its sensors
                    self.held_late += 1
                else:
                    out.append((m.topic, m.payload))
        due = [m for when, m in self.held if when <= k]
        self.held = [(when, m) for when, m in self.held if when > k]
        out.extend(due)
        self.n_messages += len(out)
        return out

    def flush_held(self) -> list[tuple[str, bytes]]:
        out = [m for _, m in self.held] + [m for ms in self.backlog.values() for m in ms]
        self.held, self.backlog = [], {}
        self.n_messages += len(out)
        return out


def _sql(db: Path, q: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(q).fetchall()
    finally:
        con.close()


def run_soak(tmp_path: Path, broker, seconds: float, rate: float) -> tuple[Figures, list[int]]:
    port = new_metrics_port()
    # a small DuckDB buffer pool so that a run of minutes reaches its plateau (the default, 1GB, bounds a
    # deployment's memory too, but a short soak never fills it and would look like growth)
    cfg = write_config(tmp_path / "engine", broker.url, client_id="ew-soak", metrics_port=port,
                       store_extra='memory_limit = "64MB"\n')
    eng = EngineProc(cfg, tmp_path / "engine.log", port).start()
    eng.wait_connected()
    pub = Publisher(broker.host, broker.port, client_id="pub-soak")
    stream = Stream(rate)
    rss: list[int] = [eng.rss_kb()]
    duck: list[int] = [0]  # DuckDB's buffer manager (earlywarn_store_memory_bytes), kB, sampled with rss
    queue_max = 0.0
    start = time.monotonic()
    try:
        next_tick = start
        while time.monotonic() - start < seconds:
            pub.publish_many(stream.next_messages())
            next_tick += TICK_S
            queue_max = max(queue_max, eng.metric("earlywarn_ingest_queue_messages"))
            if stream.tick % max(1, int(5 / TICK_S)) == 0:
                rss.append(eng.rss_kb())
                duck.append(int(max(0.0, eng.metric("earlywarn_store_memory_bytes")) // 1024))
            assert eng.proc is not None and eng.proc.poll() is None, eng.log_text()[-3000:]
            time.sleep(max(0.0, next_tick - time.monotonic()))  # pacing of the steady stream
        pub.publish_many(stream.flush_held())
        pub.wait_all_acked(timeout_s=300)
        n = len(stream.key_ts)
        wait_until(lambda: eng.metric("earlywarn_store_readings_total") >= n, 300, f"{n} readings stored")
        wait_until(lambda: eng.metric("earlywarn_ingest_queue_messages") == 0, 60, "queue drained")
        rss.append(eng.rss_kb())
        duck.append(int(max(0.0, eng.metric("earlywarn_store_memory_bytes")) // 1024))
    finally:
        pub.close()
        rc = eng.stop()
    elapsed = time.monotonic() - start
    assert rc == 0, eng.log_text()[-3000:]
    db = tmp_path / "engine" / "ew.duckdb"

    # exactly once, by SQL: the published keys against the stored ones
    keys = pl.DataFrame({
        "site": pl.Series(stream.key_site, dtype=pl.Int8).replace_strict(dict(enumerate(SITES)), return_dtype=pl.String),
        "tag": pl.Series(stream.key_tag, dtype=pl.Int8).replace_strict(dict(enumerate(TAGS)), return_dtype=pl.String),
        "ts_ms": pl.Series(stream.key_ts, dtype=pl.Int64),
    })
    keys_path = tmp_path / "published.parquet"
    keys.write_parquet(keys_path)
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored, = con.execute("SELECT count(*) FROM readings").fetchone()
        lost, = con.execute(
            f"SELECT count(*) FROM read_parquet('{keys_path}') p ANTI JOIN readings r "
            "ON r.site = p.site AND r.tag = p.tag AND epoch_ms(r.ts) = p.ts_ms").fetchone()
        duplicated, = con.execute(
            "SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) c FROM readings GROUP BY site, tag, ts)").fetchone()
        extra, = con.execute(
            f"SELECT count(*) FROM readings r ANTI JOIN read_parquet('{keys_path}') p "
            "ON r.site = p.site AND r.tag = p.tag AND epoch_ms(r.ts) = p.ts_ms").fetchone()
        late_stored, = con.execute("SELECT count(*) FROM readings WHERE late").fetchone()
        live_signals = con.execute("SELECT count(*) FROM signals").fetchone()[0]
        evaluated = tmp_path / "evaluated.parquet"
        con.execute(
            "COPY (SELECT site, tag, epoch_ms(ts) AS ts, value, quality FROM readings WHERE NOT late ORDER BY ts) "
            f"TO '{evaluated}' (FORMAT parquet)")
    finally:
        con.close()
    assert extra == 0

    # the same readings through `earlywarn replay` with the same rules, into a store of its own
    rcfg = write_config(tmp_path / "replay", broker.url, client_id="unused")
    r = subprocess.run([sys.executable, "-m", "earlywarn", "replay", "--config", str(rcfg), str(evaluated)],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    cols = "site, tag, rule_id, severity, kind, epoch_ms(ts) AS ts, value"
    live = _sql(db, f"SELECT {cols} FROM signals ORDER BY ALL")
    replayed = _sql(tmp_path / "replay" / "ew.duckdb", f"SELECT {cols} FROM signals ORDER BY ALL")
    assert live == replayed, (len(live), len(replayed), sorted(set(live) ^ set(replayed))[:10])

    return Figures(
        seconds=round(elapsed, 1), rate=round(len(stream.key_ts) / seconds), readings=len(stream.key_ts),
        messages=stream.n_messages, duplicates=stream.duplicates, out_of_order=stream.out_of_order,
        malformed=stream.malformed, held_late=stream.held_late, outage_ticks=stream.outage_ticks,
        stored=int(stored), lost=int(lost),
        duplicated=int(duplicated), late_stored=int(late_stored), live_signals=int(live_signals),
        replay_signals=len(replayed), rss_start_kb=rss[0], rss_end_kb=rss[-1], rss_max_kb=max(rss),
        queue_max=queue_max, duck_kb=duck,
    ), rss


def check(fig: Figures, rss: list[int]) -> None:
    print("soak figures:", json.dumps({k: v for k, v in fig.__dict__.items() if k != "duck_kb"}))
    print("soak RSS samples (kB, every 5 s):", rss[:: max(1, len(rss) // 40)])
    print("soak DuckDB buffer samples (kB):", fig.duck_kb[:: max(1, len(fig.duck_kb) // 40)])
    q = max(1, len(rss) // 4)
    print("soak RSS by quarter, max MB:", [round(max(rss[i * q : (i + 1) * q] or [0]) / 1024) for i in range(4)],
          "; RSS minus DuckDB's buffer, max MB:",
          [round(max([r - d for r, d in zip(rss[i * q : (i + 1) * q], fig.duck_kb[i * q : (i + 1) * q])] or [0]) / 1024)
           for i in range(4)])
    assert fig.lost == 0 and fig.duplicated == 0 and fig.stored == fig.readings
    assert fig.live_signals > 0 and fig.live_signals == fig.replay_signals
    assert fig.late_stored > 0  # the late data did arrive late, and was kept
    # bounded memory: after warm-up (the first quarter) RSS may wobble, not climb without bound
    warm = max(rss[: max(2, len(rss) // 4)])
    assert fig.rss_max_kb <= warm + 150 * 1024, rss
    # DuckDB's buffer stays under the engine's store.memory_limit (64MB here)
    assert max(fig.duck_kb) <= 64 * 1024, fig.duck_kb
    if fig.seconds >= 300:
        # a long run must plateau: the last quarter no higher than the second quarter, give or take the
        # sawtooth of the store's reopens (every 4 M rows; DuckDB's buffer refills between them), both for
        # the whole process and for what is not DuckDB's buffer. The 30-minute run of 2026-11-28 (157 ->
        # 370 MB, ~7 MB/min, linear) fails both by far; the runs of 2026-11-29 after the store reopens its
        # connection: +6 and +6 MB (see the issue).
        q = len(rss) // 4
        assert max(rss[-q:]) <= max(rss[q : 2 * q]) + 32 * 1024, rss
        rest = [r - d for r, d in zip(rss, fig.duck_kb)]
        assert max(rest[-q:]) <= max(rest[q : 2 * q]) + 24 * 1024, rest
    # bounded queue: the engine keeps up with the stream; its queue never holds more than a few seconds of it
    assert fig.queue_max <= 50_000


def test_soak_short(tmp_path: Path, mosquitto) -> None:
    fig, rss = run_soak(tmp_path, mosquitto, seconds=float(os.environ.get("EARLYWARN_SOAK_SHORT_SECONDS", "15")),
                        rate=2_000)
    check(fig, rss)


@pytest.mark.soak
def test_soak_full(tmp_path: Path, mosquitto, request: pytest.FixtureRequest) -> None:
    env = os.environ.get("EARLYWARN_SOAK_SECONDS")
    opt = request.config.getoption("--soak", default=False)
    if not (env or opt):
        pytest.skip("the full soak runs with --soak (pytest tests/soak --soak) or EARLYWARN_SOAK_SECONDS")
    seconds = float(env) if env else float(request.config.getoption("--soak-seconds"))
    rate = float(os.environ.get("EARLYWARN_SOAK_RATE", "5000"))
    fig, rss = run_soak(tmp_path, mosquitto, seconds=seconds, rate=rate)
    check(fig, rss)
