"""The store reopens its writer connection after the tables grew by `reopen_rows`, which gives back the
memory a DuckDB instance accumulates (row-group metadata, its source registry: it otherwise grows with every
commit for the life of the process), without losing a row, breaking a reader, or closing under one."""

from __future__ import annotations

import threading
from pathlib import Path

from test_store_background import EMPTY, T0_MS
from test_store_background import _readings as _background_readings  # this directory is on sys.path
from waiting import wait_until

from earlywarn.clock import ManualClock
from earlywarn.model import ReadingBatch
from earlywarn.store import CommitBatch, Store


def _readings(i: int, n: int = 5_000) -> ReadingBatch:  # the background tests' batches, larger by default
    return _background_readings(i, n)


def _duck_bytes(s: Store) -> int:
    return int(s.sql("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()")[0][0])


def test_reopen_keeps_every_row_and_the_readers_and_frees_duckdb_memory(tmp_path: Path) -> None:
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=0, clock=ManualClock(T0_MS),
                    memory_limit="64MB") as s:
        s.reopen_rows = 20_000
        s.reopen_min_interval_s = 0.0
        settings = "SELECT current_setting('memory_limit'), current_setting('TimeZone')"
        configured = s.sql(settings)
        for i in range(4):
            s.commit(CommitBatch(fresh=_readings(i), maybe_dup=EMPTY))
        assert not s._maybe_reopen()  # first look: the baseline is set, nothing to do yet
        for i in range(4, 9):
            s.commit(CommitBatch(fresh=_readings(i), maybe_dup=EMPTY))
        before = _duck_bytes(s)
        assert before > 0
        assert s._maybe_reopen()
        assert s.reopens == 1
        assert _duck_bytes(s) < before  # a new instance: the buffer cache (and the metadata with it) given back
        assert s.count("readings") == 9 * 5_000
        assert s.sql(settings) == configured  # the new connection is configured as the first one was
        # the store goes on: commits, reads, and a restart sees everything
        r = s.commit(CommitBatch(fresh=_readings(9), maybe_dup=EMPTY))
        assert r.inserted == 5_000
        assert s.count("readings") == 10 * 5_000
        assert not s._maybe_reopen()  # it re-arms from the new size
    with Store.open(tmp_path / "ew.duckdb") as s:
        assert s.count("readings") == 10 * 5_000
        assert s.sql("SELECT count(DISTINCT (site, tag, ts)) FROM readings")[0][0] == 10 * 5_000


def test_an_open_reader_postpones_the_reopen_and_new_readers_wait_for_it(tmp_path: Path, monkeypatch) -> None:
    import earlywarn.store as store_mod

    monkeypatch.setattr(store_mod, "REOPEN_WAIT_S", 0.05)
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=0, clock=ManualClock(T0_MS)) as s:
        s.reopen_rows = 1
        s.reopen_min_interval_s = 0.0
        s.commit(CommitBatch(fresh=_readings(0), maybe_dup=EMPTY))
        assert not s._maybe_reopen()  # baseline
        s.commit(CommitBatch(fresh=_readings(1), maybe_dup=EMPTY))
        reader = s.read_cursor()
        reader.begin()  # a report in the middle of its transaction
        assert reader.execute("SELECT count(*) FROM readings").fetchone()[0] == 10_000
        assert not s._maybe_reopen()  # postponed: detaching now would strand the reader's transaction
        assert s.reopens == 0
        s.commit(CommitBatch(fresh=_readings(2), maybe_dup=EMPTY))
        assert reader.execute("SELECT count(*) FROM readings").fetchone()[0] == 10_000  # its snapshot
        reader.commit()
        reader.close()
        assert s._maybe_reopen()
        # a reader dropped without close() is released when collected
        dropped = s.read_cursor()
        assert dropped.execute("SELECT count(*) FROM readings").fetchone()[0] == 15_000
        del dropped
        s.commit(CommitBatch(fresh=_readings(3), maybe_dup=EMPTY))
        assert s._maybe_reopen()
        assert s.reopens == 2


def test_reopen_runs_by_itself_after_background_checkpoints_while_readers_come_and_go(tmp_path: Path) -> None:
    clock = ManualClock(T0_MS)
    errors: list[BaseException] = []
    stop = threading.Event()
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=1, clock=clock) as s:
        s.reopen_rows = 15_000
        s.reopen_min_interval_s = 0.0

        def read_loop() -> None:  # an API thread running reports the whole time
            try:
                while not stop.is_set():
                    with s.read_cursor() as cur:
                        cur.execute("SELECT count(*), max(ts) FROM readings").fetchone()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)

        t = threading.Thread(target=read_loop)
        t.start()
        try:
            i = 0

            def one_more() -> bool:
                nonlocal i
                clock.advance(1_000)
                s.commit(CommitBatch(fresh=_readings(i), maybe_dup=EMPTY, now_ms=clock.now_ms()))
                i += 1
                return s.reopens >= 2

            wait_until(one_more, 60, "two reopens driven by background checkpoints", interval_s=0.01)
        finally:
            stop.set()
            t.join(10)
        assert not errors, errors
        assert s.count("readings") == i * 5_000
    with Store.open(tmp_path / "ew.duckdb") as s:
        assert s.count("readings") == i * 5_000


def test_a_fast_stream_reopens_at_most_once_per_min_interval(tmp_path: Path) -> None:
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=0, clock=ManualClock(T0_MS)) as s:
        s.reopen_rows = 1
        s.reopen_min_interval_s = 3600.0  # nothing in this test waits that long
        s.commit(CommitBatch(fresh=_readings(0), maybe_dup=EMPTY))
        assert not s._maybe_reopen()  # baseline
        for i in range(1, 4):
            s.commit(CommitBatch(fresh=_readings(i), maybe_dup=EMPTY))
            assert not s._maybe_reopen()  # grown enough, but the last (re)open was too recent
        assert s.reopens == 0
        s.reopen_min_interval_s = 0.0
        assert s._maybe_reopen()
