"""The store's background thread: rule-state blobs handed over by the engine, folds and checkpoints."""

from __future__ import annotations

from pathlib import Path

from waiting import wait_until

from earlywarn.clock import ManualClock
from earlywarn.model import ReadingBatch
from earlywarn.store import CommitBatch, Store

T0_MS = 1_764_316_800_000
EMPTY = ReadingBatch.empty()


def _readings(i: int, n: int = 100) -> ReadingBatch:
    return ReadingBatch.from_columns(
        [f"S{k % 3}" for k in range(n)], [f"t{k % 7}" for k in range(n)],
        [T0_MS + i * 10_000 + k for k in range(n)], [float(k) for k in range(n)], [0] * n,
    )


def test_state_handed_over_is_written_with_its_batch(tmp_path: Path) -> None:
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=10) as s:
        r1 = s.commit(CommitBatch(fresh=_readings(1), maybe_dup=EMPTY))
        s.commit(CommitBatch(fresh=_readings(2), maybe_dup=EMPTY))
        s.save_state_later("rules", b"after-1", r1.batch_seq)
        assert s.flush_background()
        assert s.load_state("rules") == (b"after-1", r1.batch_seq)
        # a state committed with a batch is newer than anything pending: the pending one never wins
        r3 = s.commit(CommitBatch(fresh=_readings(3), maybe_dup=EMPTY, state={"rules": b"at-3"}))
        s.save_state_later("rules", b"after-1-again", r1.batch_seq)
        assert s.flush_background()
        assert s.load_state("rules") == (b"at-3", r3.batch_seq)
    with Store.open(tmp_path / "ew.duckdb") as s:
        assert s.load_state("rules") == (b"at-3", r3.batch_seq)


def test_state_of_an_uncommitted_batch_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "ew.duckdb") as s:
        try:
            s.save_state_later("rules", b"x", s.batch_seq + 1)
        except ValueError:
            pass
        else:
            raise AssertionError("state ahead of the store accepted")


def test_pending_state_is_written_at_close(tmp_path: Path) -> None:
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=0) as s:
        r = s.commit(CommitBatch(fresh=_readings(1), maybe_dup=EMPTY))
        s.save_state_later("rules", b"late", r.batch_seq)
    with Store.open(tmp_path / "ew.duckdb") as s:
        assert s.load_state("rules") == (b"late", r.batch_seq)


def test_background_checkpoints_keep_the_wal_small_and_the_marks_right(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    clock = ManualClock(T0_MS)  # the checkpoint interval runs on the store's clock, not on wall time
    with Store.open(path, checkpoint_interval_ms=1, clock=clock) as s:
        for i in range(1, 30):
            s.commit(CommitBatch(fresh=_readings(i, 2_000), maybe_dup=EMPTY))
            clock.advance(5)
        s.flush_background()

        def folded() -> bool:  # each empty commit finds a checkpoint due and wakes the background thread
            upto = s.sql("SELECT coalesce(max(value), 0) FROM store_meta WHERE key = 'sensor_last_ts_upto'")[0][0]
            if upto >= 20:
                return True
            s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, now_ms=clock.advance(5)))
            return False

        wait_until(folded, 20, "a background fold", interval_s=0.05)
        want = {(r[0], r[1]): r[2] for r in s.sql("SELECT site, tag, epoch_ms(max(ts)) FROM readings GROUP BY ALL")}
        assert s.last_ts_by_sensor() == want
        assert s.count("readings") == 29 * 2_000
    # the WAL left at close was checkpointed; a fresh open reads everything back
    with Store.open(path) as s:
        assert s.count("readings") == 29 * 2_000
        assert s.last_ts_by_sensor() == want
