"""Benchmark of the DuckDB store (src/earlywarn/store.py) against naive row-by-row baselines in the same run.

    python benchmarks/bench_store.py [--quick] [--fixed-only | --live-only] [--out benchmarks/results/store.json]

Cases (seeded workload, built before the timed sections; DuckDB files in a temporary directory):
- fresh: `Store.commit` of 50 000-reading batches (5 000 sensors x 10 readings), columnar Arrow append, one
  transaction with its commit-log row; per-batch median / p95 and the sustained rate including DuckDB's
  automatic checkpoints and the final one at close, and per CPU second (all threads: what a shared
  machine's load changes least). The same stream with DuckDB's default row groups (122 880 rows) shows why
  the store uses 16 384 (store.ROW_GROUP_SIZE). Baseline: the same readings with `executemany` INSERT, row
  by row, one transaction.
- maybe_dup: the anti-join that drops redeliveries, with 10 M readings stored (1 M with --quick): the last
  1 000 or 50 000 readings redelivered, 1 000 late readings from the middle of history, 1 000 candidates
  split between the first and the last batch. Baseline: per reading, a point SELECT then an INSERT.
- small tables: 500 alarm events, one Arrow INSERT vs `executemany`.
- fixed cost per commit (`--fixed-only` runs just this): many small commits as a live engine makes them
  (one per step): empty; 5 alarms + 5 events + 5 signals + 2 notices (alarms upserted over 3 000 stored);
  50 alarms; a flood step (7 alarms raised with their events and signals, 21 notice rows); 500 and 4 500
  fresh readings. Per-commit median and p90, and the parts of a small commit timed
  alone on the same connection (BEGIN + commit-log row + COMMIT, the alarm upsert, one small append).
- restart: `last_ts_by_sensor` (folded marks) vs max(ts) GROUP BY over all readings; `readings_since`.
- live commits (`--live-only` runs just this): the commits of a live engine under load (e2e drain: 50 of 40 000
  readings, `--live-size`), the background thread checkpointing every 10 commits (`--live-checkpoint-every`),
  against bare `INSERT ... SELECT` of the same Arrow tables on a plain DuckDB file (same row groups, a
  CHECKPOINT at the same cadence) and against one INSERT of all of them, alternated in this process: CPU us
  per reading (all threads) and the ratios. Uses bench_e2e's readings when their cached file exists.

The machine is shared and has few cores: read the ratios, which compare runs of the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

from earlywarn.clock import ManualClock
from earlywarn.model import (
    QUALITY_LABELS,
    READING_SCHEMA,
    Alarm,
    AlarmEvent,
    AlarmState,
    EventKind,
    NoticeRecord,
    ReadingBatch,
    Severity,
    Signal,
    SignalKind,
)
from earlywarn.store import ROW_GROUP_SIZE, CommitBatch, Store

T0_MS = 1_764_316_800_000
SITES, TAGS = 200, 25
SENSORS = SITES * TAGS
BATCH = 50_000
EMPTY = ReadingBatch.empty()


# ---------------------------------------------------------------------------------------------
# workload


class Workload:
    """Batch i: every sensor reads BATCH / SENSORS times, one second apart, from T0 + i * step."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.per_sensor = BATCH // SENSORS
        site = [f"SZ-{s:04d}" for s in range(SITES) for _ in range(TAGS)]
        tag = [f"tag_{t:02d}" for _ in range(SITES) for t in range(TAGS)]
        self.keys = pl.DataFrame({"site": site * self.per_sensor, "tag": tag * self.per_sensor})
        self.step_ms = self.per_sensor * 1000
        self.offset_ms = np.repeat(np.arange(self.per_sensor, dtype=np.int64) * 1000, SENSORS)

    def batch(self, i: int) -> ReadingBatch:
        frame = self.keys.with_columns(
            ts_ms=pl.Series(T0_MS + i * self.step_ms + self.offset_ms, dtype=pl.Int64),
            value=pl.Series(self.rng.normal(0.3, 0.05, BATCH)),
            quality=pl.Series(
                self.rng.choice(np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 2], dtype=np.int8), BATCH)
            ),
        )
        return ReadingBatch(frame.select(list(READING_SCHEMA)))


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# cases


def _commit_stream(path: Path, batches: list[ReadingBatch], row_group_size: int) -> dict[str, Any]:
    """Commit the batches (after 2 warm-up ones) and close; wall and CPU time (all threads) of it."""
    store = Store.open(
        path, clock=ManualClock(T0_MS), checkpoint_interval_ms=0, row_group_size=row_group_size
    )
    for b in batches[:2]:  # warm-up
        store.commit(CommitBatch(fresh=b, maybe_dup=EMPTY))
    times = []
    t_all, cpu_all = time.perf_counter(), time.process_time()
    for b in batches[2:]:
        times.append(_timed(lambda b=b: store.commit(CommitBatch(fresh=b, maybe_dup=EMPTY))))
    store.close()  # its final checkpoint is part of the cost
    total, cpu = time.perf_counter() - t_all, time.process_time() - cpu_all
    n = BATCH * (len(batches) - 2)
    median = statistics.median(times)
    return {
        "row_group_size": row_group_size,
        "median_ms": _ms(median),
        "p95_ms": _ms(float(np.percentile(times, 95))),
        "max_ms": _ms(max(times)),
        "readings_per_s_median": round(BATCH / median),
        "readings_per_s_sustained": round(n / total),  # incl. checkpoints and the final one at close
        "readings_per_cpu_s": round(n / cpu),  # what the machine's load does not change much
    }


def bench_fresh(tmp: Path, w: Workload, n_batches: int, naive_rows: int) -> dict[str, Any]:
    batches = [w.batch(i) for i in range(n_batches + 2)]
    store_default = _commit_stream(tmp / "fresh_default_rg.duckdb", batches, 122_880)  # DuckDB's default
    store = _commit_stream(tmp / "fresh.duckdb", batches, ROW_GROUP_SIZE)

    # baseline: the same table, one INSERT per reading through executemany, in one transaction
    con = duckdb.connect(str(tmp / "naive.duckdb"))
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE readings (site VARCHAR NOT NULL, tag VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, "
        "value DOUBLE, quality VARCHAR NOT NULL, batch_seq BIGINT NOT NULL)"
    )
    rows = [
        (s, t, ts, v, QUALITY_LABELS[q], 1) for s, t, ts, v, q in batches[0].frame.head(naive_rows).rows()
    ]
    t0 = time.perf_counter()
    con.begin()
    con.executemany("INSERT INTO readings VALUES (?, ?, make_timestamptz(?::BIGINT * 1000), ?, ?, ?)", rows)
    con.commit()
    naive_s = time.perf_counter() - t0
    con.close()

    naive = naive_rows / naive_s
    return {
        "batches": n_batches,
        "batch_readings": BATCH,
        **store,
        "default_row_groups": store_default,
        "naive_rows": naive_rows,
        "naive_readings_per_s": round(naive),
        "ratio_median_vs_naive": round(store["readings_per_s_median"] / naive, 1),
        "ratio_sustained_vs_naive": round(store["readings_per_s_sustained"] / naive, 1),
        "ratio_sustained_vs_default_row_groups": round(
            store["readings_per_s_sustained"] / store_default["readings_per_s_sustained"], 2
        ),
        "ratio_cpu_vs_default_row_groups": round(
            store["readings_per_cpu_s"] / store_default["readings_per_cpu_s"], 2
        ),
    }


def bench_maybe_dup(tmp: Path, w: Workload, history: int, reps: int) -> dict[str, Any]:
    n_hist = history // BATCH
    store = Store.open(tmp / "dup.duckdb", clock=ManualClock(T0_MS), checkpoint_interval_ms=0)
    t_fill = time.perf_counter()
    for i in range(n_hist):
        store.commit(CommitBatch(fresh=w.batch(i), maybe_dup=EMPTY))
    fill_s = time.perf_counter() - t_fill
    store.checkpoint()
    last, first, middle = w.batch(n_hist - 1).frame, w.batch(0).frame, w.batch(n_hist // 2).frame
    out: dict[str, Any] = {
        "history_readings": store.count("readings"),
        "fill_readings_per_s": round(history / fill_s),
    }

    def shifted(frame: pl.DataFrame, k: int) -> ReadingBatch:  # k-th new late slice: never stored before
        return ReadingBatch(frame.with_columns(pl.col("ts_ms") + 1 + k))

    cases: dict[str, Callable[[int], ReadingBatch]] = {
        "redeliver_last_1k": lambda k: ReadingBatch(last.tail(1000)),
        "redeliver_last_50k": lambda k: ReadingBatch(last),
        "late_middle_1k": lambda k: shifted(middle.head(1000), k),
        "two_ranges_1k": lambda k: ReadingBatch(pl.concat([first.head(500), last.tail(500)])),
    }
    # an empty commit: the fixed cost (BEGIN, commit-log row, COMMIT) to read the others against
    cases_ms: dict[str, Any] = {
        "empty_commit": _ms(
            statistics.median(
                _timed(lambda: store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY))) for _ in range(reps)
            )
        ),
    }
    for name, make in cases.items():
        times, result = [], None
        for k in range(reps):
            mb = make(k)
            t = time.perf_counter()
            result = store.commit(CommitBatch(fresh=EMPTY, maybe_dup=mb))
            times.append(time.perf_counter() - t)
        assert result is not None
        cases_ms[name] = {
            "median_ms": _ms(statistics.median(times)),
            "late": result.late,
            "duplicates": result.duplicates,
        }
    out["cases"] = cases_ms
    later = [w.batch(n_hist + 1000 + i) for i in range(reps)]  # built outside the timed part
    fresh_times = [_timed(lambda b=b: store.commit(CommitBatch(fresh=b, maybe_dup=EMPTY))) for b in later]
    out["fresh_50k_at_history_median_ms"] = _ms(statistics.median(fresh_times))

    # baseline: check each candidate with a point query, insert the new ones, row by row
    cand = last.tail(1000).rows()
    con = store._con
    t0 = time.perf_counter()
    con.begin()
    new = 0
    for site, tag, ts, value, q in cand:
        hit = con.execute(
            "SELECT count(*) FROM readings "
            "WHERE site = ? AND tag = ? AND ts = make_timestamptz(?::BIGINT * 1000)",
            [site, tag, ts],
        ).fetchone()
        if not (hit and hit[0]):
            new += 1
            con.execute(
                "INSERT INTO readings VALUES (?, ?, make_timestamptz(?::BIGINT * 1000), ?, ?, 0)",
                [site, tag, ts, value, QUALITY_LABELS[q]],
            )
    con.rollback()
    naive_s = time.perf_counter() - t0
    out["naive_redeliver_last_1k_ms"] = _ms(naive_s)
    out["ratio_redeliver_last_1k_vs_naive"] = round(
        naive_s * 1e3 / cases_ms["redeliver_last_1k"]["median_ms"], 1
    )

    # restart queries at this history
    out["last_ts_by_sensor_ms"] = _ms(statistics.median(_timed(store.last_ts_by_sensor) for _ in range(3)))
    out["last_ts_group_by_all_readings_ms"] = _ms(
        statistics.median(
            _timed(lambda: store.sql("SELECT site, tag, epoch_ms(max(ts)) FROM readings GROUP BY ALL"))
            for _ in range(3)
        )
    )
    since = store.batch_seq - 10
    out["readings_since_last_10_batches_ms"] = _ms(_timed(lambda: store.readings_since(since)))
    store.close()
    t_open = time.perf_counter()
    Store.open(tmp / "dup.duckdb").close()
    out["reopen_ms"] = _ms(time.perf_counter() - t_open)
    return out


def bench_small(tmp: Path, n: int, reps: int) -> dict[str, Any]:
    events = [AlarmEvent(f"a{i % 50}", T0_MS + i, EventKind.RAISED, "engine", "x") for i in range(n)]
    store = Store.open(tmp / "small.duckdb", clock=ManualClock(T0_MS), checkpoint_interval_ms=0)
    con = store._con
    arrow_t, many_t = [], []
    for _ in range(reps):
        con.begin()
        arrow_t.append(_timed(lambda: store._insert_events(events)))
        con.rollback()
        rows = [(e.alarm_id, e.ts_ms, e.kind.value, e.actor, e.detail) for e in events]
        con.begin()
        many_t.append(
            _timed(
                lambda rows=rows: con.executemany(
                    "INSERT INTO alarm_events VALUES (?, make_timestamptz(?::BIGINT * 1000), ?, ?, ?)", rows
                )
            )
        )
        con.rollback()
    store.close()
    a, m = statistics.median(arrow_t), statistics.median(many_t)
    return {"rows": n, "arrow_ms": _ms(a), "executemany_ms": _ms(m), "ratio": round(m / a, 1)}


def _alarm(i: int, k: int) -> Alarm:
    return Alarm(
        alarm_id=f"a{i}",
        site=f"SZ-{i % SITES:04d}",
        plant="aluminum",
        district="wujiang",
        tag=f"tag_{i % TAGS:02d}",
        rule_id="r_ll",
        severity=Severity.RED,
        state=AlarmState.ACTIVE_UNACK,
        raised_at_ms=T0_MS,
        last_activation_ms=T0_MS + k,
        value=0.1,
        peak_value=0.1,
        occurrences=k + 1,
    )


def _flood_commit(k: int, n: int = 7) -> CommitBatch:
    """A step of a live engine during a flood (10 000 alarms a minute, ~25 commits a second): n alarms raised,
    their events and signals, and the notice rows of earlier ones (mqtt, webhook, log each), no readings."""
    alarms = [_alarm(10_000 + k * n + j, 0) for j in range(n)]
    return CommitBatch(
        fresh=EMPTY,
        maybe_dup=EMPTY,
        signals=[Signal(a.site, a.tag, a.rule_id, a.severity, SignalKind.RAISE, T0_MS + k, 0.1, "m") for a in alarms],
        alarms=alarms,
        events=[AlarmEvent(a.alarm_id, T0_MS + k, EventKind.RAISED, "engine", "x") for a in alarms],
        notices=[
            NoticeRecord(f"n{k}.{j}", a.alarm_id, ch, "ops", "plant", "raised", T0_MS + k, "delivered")
            for j, a in enumerate(alarms)
            for ch in ("mqtt", "webhook", "log")
        ],
    )


def _small_commit(k: int, n_alarms: int) -> CommitBatch:
    """A step of a live engine during alarms: a few signals, changes of stored alarms (their events: cleared),
    and notices, no readings."""
    ids = [(k * n_alarms + j) % 3000 for j in range(n_alarms)]
    return CommitBatch(
        fresh=EMPTY,
        maybe_dup=EMPTY,
        signals=[
            Signal(
                f"SZ-{i % SITES:04d}", "tag_00", "r_ll", Severity.RED, SignalKind.RAISE, T0_MS + k, 0.1, "m"
            )
            for i in ids[:5]
        ],
        alarms=[_alarm(i, k) for i in ids],
        events=[AlarmEvent(f"a{i}", T0_MS + k, EventKind.CLEARED, "engine", "x") for i in ids[:5]],
        notices=[
            NoticeRecord(f"n{k}.{j}", f"a{ids[j]}", "mqtt", "ops", "plant", "raised", T0_MS + k, "delivered")
            for j in range(2)
        ],
    )


def _live_readings(n: int, k: int) -> ReadingBatch:
    """n readings of a 100 ms step: n sensors, one reading each, at step k."""
    site = [f"SZ-{i % SITES:04d}" for i in range(n)]
    tag = [f"tag_{(i // SITES) % TAGS:02d}" for i in range(n)]
    ts = [T0_MS + k * 100 + i // SENSORS for i in range(n)]
    return ReadingBatch.from_columns(site, tag, ts, [0.3] * n, [0] * n)


def bench_fixed(tmp: Path, reps: int) -> dict[str, Any]:
    """Per-commit cost of the small commits a live engine makes every step (checkpoints off: timed apart)."""
    store = Store.open(tmp / "fixed.duckdb", clock=ManualClock(T0_MS), checkpoint_interval_ms=0)
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm(i, 0) for i in range(3000)]))
    store.checkpoint()
    cases: dict[str, Callable[[int], CommitBatch]] = {
        "empty": lambda k: CommitBatch(fresh=EMPTY, maybe_dup=EMPTY),
        "5_alarms_5_events_5_signals_2_notices": lambda k: _small_commit(k, 5),
        "50_alarms_5_events_5_signals_2_notices": lambda k: _small_commit(k, 50),
        "flood_7_raised_7_events_7_signals_21_notices": lambda k: _flood_commit(k),
        "500_readings": lambda k: CommitBatch(fresh=_live_readings(500, k), maybe_dup=EMPTY),
        "4500_readings": lambda k: CommitBatch(fresh=_live_readings(4500, k), maybe_dup=EMPTY),
    }
    out: dict[str, Any] = {}
    step = 0
    for name, make in cases.items():
        batches = [make(step + k) for k in range(reps)]  # built outside the timed part
        step += reps
        cpu0 = time.process_time()
        times = [_timed(lambda cb=cb: store.commit(cb)) for cb in batches]
        cpu = (time.process_time() - cpu0) / reps  # all threads: what the machine's load changes least
        out[name] = {
            "median_ms": _ms(statistics.median(times)),
            "p90_ms": _ms(float(np.percentile(times, 90))),
            "cpu_ms": _ms(cpu),
        }
    # parts, timed alone on the writer connection (rolled back)
    con = store._con
    parts: dict[str, list[float]] = {
        "begin_commitlog_commit": [],
        "alarms_5_upsert": [],
        "events_5_append": [],
    }
    for k in range(reps):
        t = time.perf_counter()
        con.begin()
        con.execute("INSERT INTO store_commits VALUES (?, now(), 0, 0, 0, 0, 0, 0, 0, 0, 0)", [10**9 + k])
        con.commit()
        parts["begin_commitlog_commit"].append(time.perf_counter() - t)
        cb = _small_commit(step + k, 5)
        con.begin()
        parts["alarms_5_upsert"].append(_timed(lambda cb=cb: store._upsert_alarms(cb.alarms, T0_MS)))
        parts["events_5_append"].append(_timed(lambda cb=cb: store._insert_events(cb.events)))
        con.rollback()
    out["parts_median_ms"] = {name: _ms(statistics.median(v)) for name, v in parts.items()}
    store.close()
    return out


def _live_stream(n_commits: int, per_commit: int, seed: int = 11) -> tuple[list[ReadingBatch], str]:
    """Commits as a live engine makes them under load: `per_commit` readings each, in time order.

    The readings of the e2e benchmark (bench_replay's simulated plants of all four types, whose values
    compress as real ones do) when its cached file is there (`python benchmarks/bench_e2e.py` or
    `bench_replay.py` builds it); else 3 400 sensors reading once a second, values a random walk (they
    compress less: every figure is higher, the ratios are what to compare)."""
    n = n_commits * per_commit
    cached = sorted(Path(__file__).parent.joinpath("results", "cache").glob("replay-*-s20261128.parquet"))
    for path in cached:
        df = pl.read_parquet(path)
        if df.height >= n:
            codes = {label: i for i, label in enumerate(QUALITY_LABELS)}
            df = df.head(n).select(
                "site", "tag", pl.col("ts").alias("ts_ms"), "value",
                pl.col("quality").replace_strict(codes, return_dtype=pl.Int8).alias("quality"))
            return [ReadingBatch(df.slice(i * per_commit, per_commit)) for i in range(n_commits)], path.name
    rng = np.random.default_rng(seed)
    n_sensors = 3_400
    n = n_commits * per_commit
    sensor = np.arange(n) % n_sensors
    site = [f"SZ-{s // 17:04d}" for s in range(n_sensors)]
    tag = [f"tag_{s % 17:02d}" for s in range(n_sensors)]
    walk = rng.normal(0, 0.01, n).reshape(-1, n_sensors) if n % n_sensors == 0 else rng.normal(0, 0.01, n)
    frame = pl.DataFrame({
        "site": pl.Series(site, dtype=pl.String).gather(sensor),
        "tag": pl.Series(tag, dtype=pl.String).gather(sensor),
        "ts_ms": pl.Series(T0_MS + (np.arange(n) // n_sensors) * 1000, dtype=pl.Int64),
        "value": pl.Series(0.3 + np.cumsum(walk.ravel()) / np.sqrt(n / n_sensors)),
        "quality": pl.Series(rng.choice(np.array([0] * 98 + [1, 2], dtype=np.int8), n)),
    })
    return [ReadingBatch(frame.slice(i * per_commit, per_commit)) for i in range(n_commits)], "synthetic"


_BARE_SELECT = (
    "SELECT site, tag, make_timestamptz(ts_ms * 1000) AS ts, value, CASE quality "
    + " ".join(f"WHEN {i} THEN '{label}'" for i, label in enumerate(QUALITY_LABELS))
    + " END AS quality"
)


def _bare_stream(path: Path, batches: list[ReadingBatch], checkpoint_every: int, one_insert: bool = False) -> float:
    """CPU s (all threads) of the same readings appended by bare `INSERT ... SELECT` from each Arrow table, one
    transaction each, CHECKPOINT every `checkpoint_every` commits and at the end, on a plain DuckDB file with
    the store's row-group size and nothing else (no other table, no commit log). `one_insert`: all of them in
    one INSERT (what a replay's large chunks approach)."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{path}' AS b (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
    con.execute("USE b")
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE readings (site VARCHAR NOT NULL, tag VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, "
        "value DOUBLE, quality VARCHAR NOT NULL, batch_seq BIGINT NOT NULL, late BOOLEAN DEFAULT false)"
    )
    tables = [b.frame.to_arrow() for b in batches]
    if one_insert:
        import pyarrow as pa

        tables = [pa.concat_tables(tables)]
    cpu0 = time.process_time()
    for i, _t in enumerate(tables):
        con.begin()
        con.execute(f"INSERT INTO readings SELECT *, {i}, false FROM ({_BARE_SELECT} FROM _t)")
        con.commit()
        if (i + 1) % checkpoint_every == 0:
            con.execute("CHECKPOINT")
    con.execute("CHECKPOINT")
    cpu = time.process_time() - cpu0
    con.close()
    return cpu


def _store_stream(path: Path, batches: list[ReadingBatch], checkpoint_every: int) -> dict[str, float]:
    """CPU s (all threads) and per-commit wall of `Store.commit` of the batches, live settings: the background
    thread checkpoints every `checkpoint_every` commits (the store's clock passes the checkpoint interval);
    the end waits for it and checkpoints once more (the bare stream ends with a CHECKPOINT too)."""
    clock = ManualClock(T0_MS)
    store = Store.open(path, clock=clock, checkpoint_interval_ms=10_000, memory_limit="1GB")
    times = []
    cpu0 = time.process_time()
    for i, b in enumerate(batches):
        if (i + 1) % checkpoint_every == 0:
            clock.advance(10_000)
        times.append(_timed(lambda b=b: store.commit(CommitBatch(fresh=b, maybe_dup=EMPTY))))
    store.flush_background()
    deadline = time.monotonic() + 30
    while (store._bg_busy or store._bg_checkpoint_due) and time.monotonic() < deadline:
        time.sleep(0.005)  # a checkpoint asked for after the last commit
    store.checkpoint()
    cpu = time.process_time() - cpu0
    store.close()
    return {"cpu_s": cpu, "median_ms": _ms(statistics.median(times)), "p95_ms": _ms(float(np.percentile(times, 95)))}


def bench_live(tmp: Path, n_commits: int, per_commit: int, checkpoint_every: int, reps: int) -> dict[str, Any]:
    """The live engine's readings commits (e2e drain: 40 000 readings a step, a background checkpoint every few
    commits) against bare `INSERT ... SELECT` of the same Arrow tables, alternated in this process."""
    batches, source = _live_stream(n_commits, per_commit)
    n = n_commits * per_commit
    runs: dict[str, list[float]] = {"store": [], "bare": [], "bare_one_insert": []}
    walls: list[dict[str, float]] = []
    for r in range(reps):
        st = _store_stream(tmp / f"live_store_{r}.duckdb", batches, checkpoint_every)
        walls.append(st)
        runs["store"].append(st["cpu_s"])
        runs["bare"].append(_bare_stream(tmp / f"live_bare_{r}.duckdb", batches, checkpoint_every))
        runs["bare_one_insert"].append(_bare_stream(tmp / f"live_one_{r}.duckdb", batches, checkpoint_every, True))
    us = {k: round(statistics.median(v) / n * 1e6, 3) for k, v in runs.items()}
    return {
        "readings": source, "commits": n_commits, "readings_per_commit": per_commit,
        "checkpoint_every_commits": checkpoint_every,
        "reps": reps, "us_per_reading_cpu": us,
        "ratio_store_vs_bare": round(us["store"] / us["bare"], 2),
        "ratio_store_vs_one_insert": round(us["store"] / us["bare_one_insert"], 2),
        "store_commit_median_ms": statistics.median(w["median_ms"] for w in walls),
        "store_commit_p95_ms": statistics.median(w["p95_ms"] for w in walls),
    }


def _print_live(live: dict[str, Any]) -> None:
    us = live["us_per_reading_cpu"]
    print(f"live commits: {live['commits']} x {live['readings_per_commit']:,} readings ({live['readings']}), "
          f"a checkpoint every "
          f"{live['checkpoint_every_commits']} commits, median of {live['reps']} (CPU us per reading, all threads)")
    print(f"  Store.commit {us['store']}  bare INSERT per commit {us['bare']}  one bare INSERT "
          f"{us['bare_one_insert']}  -> store / bare {live['ratio_store_vs_bare']}x, store / one insert "
          f"{live['ratio_store_vs_one_insert']}x; commit median {live['store_commit_median_ms']} ms, "
          f"p95 {live['store_commit_p95_ms']} ms")


# ---------------------------------------------------------------------------------------------


def _print_fixed(fixed: dict[str, Any]) -> None:
    print("fixed cost per commit: median / p90 wall, mean CPU (all threads)")
    for name, c in fixed.items():
        if name != "parts_median_ms":
            print(f"  {name:46} {c['median_ms']:>8} / {c['p90_ms']} ms, CPU {c['cpu_ms']} ms")
    print("  parts: " + ", ".join(f"{k} {v} ms" for k, v in fixed["parts_median_ms"].items()))


def _print_table(quick: bool, fresh: dict[str, Any], dup: dict[str, Any], small: dict[str, Any]) -> None:
    def row(label: str, value: str, ratio: str = "") -> None:
        print(f"{label:48} {value:>16}  {ratio}")

    mode = "quick" if quick else "full"
    print(f"\nstore benchmark ({mode}), duckdb {duckdb.__version__}, {os.cpu_count()} cpus")
    row("case", "value", "vs naive")
    row(
        "fresh 50k commit, median",
        f"{fresh['readings_per_s_median']:,} r/s",
        f"{fresh['ratio_median_vs_naive']}x",
    )
    row(
        "fresh 50k commit, sustained (incl. checkpoints)",
        f"{fresh['readings_per_s_sustained']:,} r/s",
        f"{fresh['ratio_sustained_vs_naive']}x",
    )
    row("  per batch median / p95 / max", f"{fresh['median_ms']} / {fresh['p95_ms']} / {fresh['max_ms']} ms")
    row("  per CPU second (all threads)", f"{fresh['readings_per_cpu_s']:,} r/s")
    d = fresh["default_row_groups"]
    row(
        "  DuckDB default row groups (122 880): sustained",
        f"{d['readings_per_s_sustained']:,} r/s",
        f"median {d['readings_per_s_median']:,}, per CPU s {d['readings_per_cpu_s']:,}, p95 {d['p95_ms']} ms",
    )
    row(
        "  16k row groups vs default: sustained / CPU",
        f"{fresh['ratio_sustained_vs_default_row_groups']}x / {fresh['ratio_cpu_vs_default_row_groups']}x",
    )
    row("naive executemany, row by row", f"{fresh['naive_readings_per_s']:,} r/s")
    print(f"maybe_dup with {dup['history_readings']:,} readings stored:")
    for name, c in dup["cases"].items():
        if isinstance(c, float):
            row(f"  {name}", f"{c} ms")
            continue
        ratio = f"{dup['ratio_redeliver_last_1k_vs_naive']}x  " if name == "redeliver_last_1k" else ""
        row(f"  {name}", f"{c['median_ms']} ms", f"{ratio}late={c['late']} dup={c['duplicates']}")
    row("  naive point-check + insert, last 1k", f"{dup['naive_redeliver_last_1k_ms']} ms")
    row("  fresh 50k commit at this history", f"{dup['fresh_50k_at_history_median_ms']} ms")
    row("  last_ts_by_sensor (folded marks)", f"{dup['last_ts_by_sensor_ms']} ms")
    row("  max(ts) GROUP BY over all readings", f"{dup['last_ts_group_by_all_readings_ms']} ms")
    row("  readings_since (last 10 batches)", f"{dup['readings_since_last_10_batches_ms']} ms")
    row("  reopen", f"{dup['reopen_ms']} ms")
    row(
        f"small table, {small['rows']} alarm events: arrow / executemany",
        f"{small['arrow_ms']} / {small['executemany_ms']} ms",
        f"{small['ratio']}x",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 M readings of history, fewer batches")
    ap.add_argument("--fixed-only", action="store_true", help="only the fixed cost per commit")
    ap.add_argument("--reps", type=int, default=60, help="commits per fixed-cost case")
    ap.add_argument("--live-only", action="store_true",
                    help="only the live commits case (commits of --live-size readings vs bare INSERT)")
    ap.add_argument("--live-size", type=int, default=40_000, help="readings per live commit (e2e drain: 40 000)")
    ap.add_argument("--live-commits", type=int, default=50, help="live commits per run")
    ap.add_argument("--live-checkpoint-every", type=int, default=10,
                    help="commits between background checkpoints in the live case")
    ap.add_argument("--live-reps", type=int, default=3, help="alternated runs of the live case")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "store.json"))
    args = ap.parse_args(argv)
    quick = args.quick
    w = Workload()
    with tempfile.TemporaryDirectory(prefix="bench_store_") as d:
        tmp = Path(d)
        if args.live_only:
            live = bench_live(tmp, args.live_commits, args.live_size, args.live_checkpoint_every, args.live_reps)
            print(f"\nstore benchmark, duckdb {duckdb.__version__}, load {os.getloadavg()[0]:.2f}")
            _print_live(live)
            return 0
        fixed = bench_fixed(tmp, args.reps)
        if args.fixed_only:
            print(f"\nstore benchmark, duckdb {duckdb.__version__}, load {os.getloadavg()[0]:.2f}")
            _print_fixed(fixed)
            return 0
        fresh = bench_fresh(tmp, w, n_batches=10 if quick else 40, naive_rows=5_000 if quick else 10_000)
        dup = bench_maybe_dup(tmp, w, history=1_000_000 if quick else 10_000_000, reps=3 if quick else 7)
        small = bench_small(tmp, n=500, reps=5)
        live = bench_live(tmp, 20 if quick else args.live_commits, args.live_size, args.live_checkpoint_every,
                          1 if quick else args.live_reps)

    _print_table(quick, fresh, dup, small)
    _print_fixed(fixed)
    _print_live(live)

    result = {
        "benchmark": "store",
        "mode": "quick" if quick else "full",
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "env": {
            "duckdb": duckdb.__version__,
            "polars": pl.__version__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        },
        "fresh": fresh,
        "maybe_dup": dup,
        "small_tables": small,
        "fixed_per_commit": fixed,
        "live_commits": live,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
