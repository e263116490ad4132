"""The cheaper per-commit paths of the store: alarms by DELETE + append, small tables appended as Arrow
relations in the table's column order (and a named INSERT when a table has columns the store does not
write)."""

from __future__ import annotations

from pathlib import Path

from earlywarn.clock import ManualClock
from earlywarn.model import Alarm, AlarmEvent, AlarmState, EventKind, ReadingBatch, Severity
from earlywarn.store import CommitBatch, Store

T0_MS = 1_764_316_800_000
EMPTY = ReadingBatch.empty()


def _alarm(alarm_id: str, occurrences: int, state: AlarmState = AlarmState.ACTIVE_UNACK) -> Alarm:
    return Alarm(alarm_id, "S1", "dust", "d", "t1", "r", Severity.RED, state, T0_MS,
                 occurrences=occurrences, last_activation_ms=T0_MS)


def test_alarm_upsert_replaces_within_and_across_commits_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    s = Store.open(path, clock=ManualClock(T0_MS), checkpoint_interval_ms=0)
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a1", 1), _alarm("a2", 1)]))
    s.checkpoint()  # a1, a2 in the file; the next changes only in the WAL
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[_alarm("a1", 2), _alarm("a1", 3)]))
    s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY,
                         alarms=[_alarm("a1", 4, AlarmState.CLOSED), _alarm("a3", 1)]))
    want = {"a1": 4, "a2": 1, "a3": 1}
    assert dict(s.sql("SELECT alarm_id, occurrences FROM alarms")) == want
    s._con.close()  # crash: no checkpoint at close, the WAL is replayed  # noqa: SLF001
    with Store.open(path, clock=ManualClock(T0_MS)) as r:
        assert dict(r.sql("SELECT alarm_id, occurrences FROM alarms")) == want
        got = r.get_alarm("a1")
        assert got is not None and got.state is AlarmState.CLOSED
        assert r.count("alarms") == 3


def test_a_table_with_a_column_added_by_hand_still_takes_rows(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    with Store.open(path, clock=ManualClock(T0_MS), checkpoint_interval_ms=0) as s:
        s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=[AlarmEvent("a1", T0_MS, EventKind.RAISED)]))
        s.sql("ALTER TABLE alarm_events ADD COLUMN analyst_note VARCHAR")  # after the column cache filled
        ev = AlarmEvent("a1", T0_MS + 1, EventKind.CLEARED)
        try:
            s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=[ev]))
        except Exception:  # noqa: BLE001 - the stale cache may fail once; the retry must succeed
            s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=[ev]))
        assert s.sql("SELECT kind, analyst_note FROM alarm_events ORDER BY ts") == [
            ("raised", None), ("cleared", None)
        ]
