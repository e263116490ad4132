"""The cheaper per-commit paths of the store: alarms by DELETE + append (no DELETE for the alarms a batch
raised), small tables appended by column name from Arrow (a table with columns the store does not write
takes them too)."""

from __future__ import annotations

import time
from pathlib import Path

from waiting import wait_until

from earlywarn.clock import ManualClock
from earlywarn.model import Alarm, AlarmEvent, AlarmState, EventKind, ReadingBatch, Severity
from earlywarn.store import MAX_HELD_CHECKPOINT_COMMITS, CommitBatch, Store

T0_MS = 1_764_316_800_000
EMPTY = ReadingBatch.empty()


def _alarm(alarm_id: str, occurrences: int, state: AlarmState = AlarmState.ACTIVE_UNACK) -> Alarm:
    return Alarm(
        alarm_id,
        "S1",
        "dust",
        "d",
        "t1",
        "r",
        Severity.RED,
        state,
        T0_MS,
        occurrences=occurrences,
        last_activation_ms=T0_MS,
    )


def test_alarm_upsert_replaces_within_and_across_commits_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    s = Store.open(path, clock=ManualClock(T0_MS), checkpoint_interval_ms=0)
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a1", 1), _alarm("a2", 1)]))
    s.checkpoint()  # a1, a2 in the file; the next changes only in the WAL
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a1", 2), _alarm("a1", 3)]))
    s.commit(
        CommitBatch(
            fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a1", 4, AlarmState.CLOSED), _alarm("a3", 1)]
        )
    )
    want = {"a1": 4, "a2": 1, "a3": 1}
    assert dict(s.sql("SELECT alarm_id, occurrences FROM alarms")) == want
    s._con.close()  # crash: no checkpoint at close, the WAL is replayed
    with Store.open(path, clock=ManualClock(T0_MS)) as r:
        assert dict(r.sql("SELECT alarm_id, occurrences FROM alarms")) == want
        got = r.get_alarm("a1")
        assert got is not None and got.state is AlarmState.CLOSED
        assert r.count("alarms") == 3


def test_an_alarm_raised_again_under_a_stored_id_replaces_its_row_and_the_batch_is_stored_once(
    tmp_path: Path,
) -> None:
    """A batch's raised alarms are appended without a DELETE; one whose id is stored after all (say an import
    raising it again) makes the primary key refuse the append, and the whole batch is written again with the
    DELETE: one row per alarm, with the final state, and the batch's readings and events once."""
    path = tmp_path / "ew.duckdb"
    s = Store.open(path, clock=ManualClock(T0_MS), checkpoint_interval_ms=0)
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a1", 1)],
                         events=[AlarmEvent("a1", T0_MS, EventKind.RAISED)]))
    s.checkpoint()  # a1 in the file
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a2", 1)],
                         events=[AlarmEvent("a2", T0_MS, EventKind.RAISED)]))  # a2 in the WAL only
    raised_again = [AlarmEvent(a, T0_MS + 5, EventKind.RAISED) for a in ("a1", "a2", "a3")]
    res = s.commit(CommitBatch(fresh=_readings(1), maybe_dup=EMPTY, events=raised_again,
                               alarms=[_alarm("a1", 7), _alarm("a2", 8), _alarm("a3", 1)]))
    assert res.inserted == 200
    want = {"a1": 7, "a2": 8, "a3": 1}
    assert dict(s.sql("SELECT alarm_id, occurrences FROM alarms")) == want
    assert s.count("readings") == 200
    assert s.count("alarm_events") == 5
    assert s.sql("SELECT count(*), sum(alarms), sum(events) FROM store_commits WHERE batch_seq = ?",
                 [res.batch_seq]) == [(1, 3, 3)]
    s.close()
    with Store.open(path, clock=ManualClock(T0_MS)) as r:
        assert dict(r.sql("SELECT alarm_id, occurrences FROM alarms")) == want
        assert r.count("readings") == 200


def test_a_table_with_a_column_added_by_hand_still_takes_rows(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    with Store.open(path, clock=ManualClock(T0_MS), checkpoint_interval_ms=0) as s:
        s.commit(
            CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=[AlarmEvent("a1", T0_MS, EventKind.RAISED)])
        )
        s.sql("ALTER TABLE alarm_events ADD COLUMN analyst_note VARCHAR")  # after the column cache filled
        ev = AlarmEvent("a1", T0_MS + 1, EventKind.CLEARED)
        try:
            s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=[ev]))
        except Exception:  # noqa: BLE001 - the stale cache may fail once; the retry must succeed
            s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=[ev]))
        assert s.sql("SELECT kind, analyst_note FROM alarm_events ORDER BY ts") == [
            ("raised", None),
            ("cleared", None),
        ]


def _folded_upto(s: Store) -> int:
    row = s.sql("SELECT coalesce(max(value), 0) FROM store_meta WHERE key = 'sensor_last_ts_upto'")
    return int(row[0][0])


def _readings(i: int, n: int = 200) -> ReadingBatch:
    return ReadingBatch.from_columns(
        [f"S{k % 3}" for k in range(n)],
        [f"t{k % 7}" for k in range(n)],
        [T0_MS + i * 10_000 + k for k in range(n)],
        [float(k) for k in range(n)],
        [0] * n,
    )


def test_a_due_checkpoint_waits_while_more_commits_are_coming_within_a_bound(tmp_path: Path) -> None:
    """The background checkpoint (and its fold, which this test watches) is not started after a commit
    with another one queued; it is after the last of them, or after MAX_HELD_CHECKPOINT_COMMITS."""
    clock = ManualClock(T0_MS)
    with Store.open(tmp_path / "ew.duckdb", clock=clock, checkpoint_interval_ms=1_000) as s:
        s.commit(CommitBatch(fresh=_readings(1), maybe_dup=EMPTY))
        clock.advance(2_000)  # the interval has passed: every commit from now on finds a checkpoint due
        queued = [True]
        for i in range(2, 2 + MAX_HELD_CHECKPOINT_COMMITS):
            s.commit(CommitBatch(fresh=_readings(i), maybe_dup=EMPTY), more_coming=lambda: queued[0])
        time.sleep(0.3)
        assert _folded_upto(s) == 0, "a checkpoint ran while commits were queued"
        seq = s.commit(CommitBatch(fresh=_readings(50), maybe_dup=EMPTY), more_coming=True).batch_seq
        # the bound: checkpointed although more are coming
        wait_until(lambda: _folded_upto(s) >= seq, 20, "a checkpoint after the held ones (held for ever)",
                   interval_s=0.02)
        clock.advance(2_000)
        s.commit(CommitBatch(fresh=_readings(60), maybe_dup=EMPTY), more_coming=True)
        time.sleep(0.3)
        assert _folded_upto(s) == seq
        last = s.commit(CommitBatch(fresh=_readings(61), maybe_dup=EMPTY)).batch_seq  # the last queued
        wait_until(lambda: _folded_upto(s) >= last, 20, "a checkpoint after the queue drained", interval_s=0.02)
        assert s.count("readings") == (MAX_HELD_CHECKPOINT_COMMITS + 4) * 200
