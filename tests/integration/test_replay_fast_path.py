"""run_replay's fast path (copies dropped up front, no per-chunk sequencing, commits overlapped with the
rules) stores the same readings, signals and alarms as feeding chunks to process_batch one by one.

Alarm timers (escalations, reminders) fire at their own due time in event time, so the chunk size changes
nothing: the runs below cut their chunks differently (between milliseconds, as run_replay does)."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scenarios"))
from scenario_kit import SEED, write_config

from earlywarn.app import build_engine
from earlywarn.config import load_config
from earlywarn.model import ReadingBatch
from earlywarn.pipeline import read_replay_files, run_replay
from simulators import run_scenario, write_replay

SCENARIO = "spark_burst"


def _tables(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            "readings": con.execute("SELECT site, tag, epoch_ms(ts), value, quality, late FROM readings "
                                    "ORDER BY ALL").fetchall(),
            "signals": con.execute("SELECT site, tag, rule_id, kind, epoch_ms(ts), value FROM signals "
                                   "ORDER BY ALL").fetchall(),
            "alarms": con.execute("SELECT alarm_id, state, epoch_ms(raised_at), epoch_ms(cleared_at), occurrences "
                                  "FROM alarms ORDER BY ALL").fetchall(),
            "events": con.execute("SELECT alarm_id, epoch_ms(ts), kind FROM alarm_events ORDER BY ALL").fetchall(),
        }
    finally:
        con.close()


def test_fast_replay_equals_chunk_by_chunk(tmp_path: Path) -> None:
    run = run_scenario(SCENARIO, seed=SEED)
    data = tmp_path / "in.parquet"
    write_replay(str(data), run.readings())
    # copies of some readings (a recording that holds a redelivery), shuffled: the reader sorts
    df = pl.read_parquet(data)
    dup = pl.concat([df, df.slice(100, 50), df.slice(300, 20)]).sample(fraction=1.0, shuffle=True, seed=1)
    dup.write_parquet(data)
    results = {}
    state = {}  # what a restart continues from: the rule-state snapshot and the sequencer's marks
    pairs = df.select("site", "tag").unique().rows()
    for name in ("fast", "chunked"):
        d = tmp_path / name
        d.mkdir()
        cfg = load_config(write_config(d, run.site, run.plant))
        engine = build_engine(cfg, replay=True)
        try:
            batch, rejects = read_replay_files([str(data)])
            n = max(df.height // 5, 1)
            if name == "fast":
                res = run_replay(engine, batch, rejects, chunk=n)
            else:
                # the copies are of early readings: they fall in the first chunk, which is 70 rows longer
                f = batch.frame
                ts = f.get_column("ts_ms").to_numpy()
                # other cuts than the fast run's (n // 3 rows, moved to the next millisecond boundary)
                step = n // 3
                cuts = sorted({0, *(int(np.searchsorted(ts, ts[c], side="left")) for c in range(70, f.height, step))})
                stored = dups = 0
                for k, off in enumerate(cuts):
                    end = cuts[k + 1] if k + 1 < len(cuts) else f.height
                    r = engine.process_batch(ReadingBatch(f.slice(off, end - off)), rejects if off == 0 else ())
                    stored += r.stored
                    dups += r.duplicates
                engine.checkpoint()
            state[name] = (engine.rules.snapshot(), {k: engine.sequencer.last_ts_ms(*k) for k in pairs})
        finally:
            engine.store.close()
        results[name] = _tables(d / "ew.duckdb")
        if name == "fast":
            assert res.readings + res.duplicates >= df.height
            assert res.duplicates == 70 and res.stored == df.height
        else:
            assert dups == 70 and stored == df.height
    assert results["fast"]["signals"], "the scenario raises something"
    assert results["fast"] == results["chunked"]
    assert state["fast"][1] == state["chunked"][1]
    assert all(v is not None for v in state["fast"][1].values())
    assert state["fast"][0] == state["chunked"][0]  # byte for byte: same sensors in the same order


def test_replay_escalates_at_the_due_time_whatever_the_chunk_size(tmp_path: Path) -> None:
    """Nobody acknowledges during a replay: a red alarm escalates at raised + ack deadline exactly, in a
    chunk of 200 readings as in one chunk of the whole recording."""
    run = run_scenario(SCENARIO, seed=SEED)
    data = tmp_path / "in.parquet"
    write_replay(str(data), run.readings())
    results = {}
    for chunk in (200, 10_000_000):
        d = tmp_path / f"c{chunk}"
        d.mkdir()
        cfg = load_config(write_config(d, run.site, run.plant))
        engine = build_engine(cfg, replay=True)
        try:
            batch, rejects = read_replay_files([str(data)])
            run_replay(engine, batch, rejects, chunk=chunk)
        finally:
            engine.store.close()
        con = duckdb.connect(str(d / "ew.duckdb"), read_only=True)
        try:
            results[chunk] = con.execute(
                "SELECT e.alarm_id, epoch_ms(e.ts), e.kind, e.detail, a.severity, epoch_ms(a.raised_at) "
                "FROM alarm_events e JOIN alarms a USING (alarm_id) ORDER BY ALL"
            ).fetchall()
        finally:
            con.close()
        ack_ms = {sev.value: dl.ack_ms for sev, dl in cfg.alarms.deadlines.items()}
    assert results[200] == results[10_000_000]
    escalations = [r for r in results[200] if r[2] == "escalated"]
    assert escalations, "the scenario leaves an alarm unacknowledged past its deadline"
    first = {}
    for alarm_id, ts, _, _, severity, raised in escalations:
        first.setdefault(alarm_id, (ts, severity, raised))
    for ts, severity, raised in first.values():
        assert ts == raised + ack_ms[severity]  # the first escalation: at the ack deadline, not a chunk end

