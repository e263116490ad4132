"""DuckDB's row-group merges at checkpoint ("vacuum") are capped (store.MAX_VACUUM_TASKS): partial reading
row groups are not all rewritten at every checkpoint, yet the alarms table, where every change deletes the
stored row and appends the new state, still gives back the rows it deleted."""

from __future__ import annotations

from pathlib import Path

from test_store_background import EMPTY, T0_MS, _readings  # this directory is on sys.path

from earlywarn.clock import ManualClock
from earlywarn.model import Alarm, AlarmState, Severity
from earlywarn.store import MAX_VACUUM_TASKS, CommitBatch, Store


def _alarm(i: int, k: int) -> Alarm:
    return Alarm(alarm_id=f"a{i}", site=f"SZ-{i % 50:04d}", plant="aluminum", district="d", tag=f"t{i % 7}",
                 rule_id="r", severity=Severity.RED, state=AlarmState.ACTIVE_UNACK, raised_at_ms=T0_MS,
                 last_activation_ms=T0_MS + k, value=0.1, peak_value=0.1, occurrences=k + 1)


def _stored_rows(s: Store, table: str) -> int:
    """Rows the table's row groups hold, deleted ones included (what a scan reads)."""
    return int(s.sql(f"SELECT coalesce(sum(count), 0) FROM (SELECT DISTINCT row_group_id, count "
                     f"FROM pragma_storage_info('{table}'))")[0][0])


def test_the_cap_is_set_on_the_writer_and_again_after_a_reopen(tmp_path: Path) -> None:
    assert 0 < MAX_VACUUM_TASKS < 100  # 0 would stop compacting deleted alarm rows; DuckDB's default is 100
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=0, clock=ManualClock(T0_MS)) as s:
        setting = "SELECT current_setting('max_vacuum_tasks')"
        assert s.sql(setting) == [(MAX_VACUUM_TASKS,)]
        s.reopen_rows, s.reopen_min_interval_s = 1, 0.0
        s.commit(CommitBatch(fresh=_readings(0, 100), maybe_dup=EMPTY))
        assert not s._maybe_reopen()  # sets the baseline
        s.commit(CommitBatch(fresh=_readings(1, 100), maybe_dup=EMPTY))
        assert s._maybe_reopen()
        assert s.sql(setting) == [(MAX_VACUUM_TASKS,)]


def test_deleted_alarm_rows_are_given_back_by_the_capped_vacuum(tmp_path: Path) -> None:
    with Store.open(tmp_path / "ew.duckdb", checkpoint_interval_ms=0, clock=ManualClock(T0_MS)) as s:
        for k in range(120):
            # each commit raises 100 alarms and changes those of the two commits before (then they stay as they
            # are, like closed alarms): every stored row group keeps some rows and had most of them deleted
            changed = [_alarm((k - j) * 100 + i, j) for j in range(min(k, 2) + 1) for i in range(100)]
            s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=changed))
            if k % 10 == 9:
                s.checkpoint()
        live = s.count("alarms")
        assert live == 12_000
        # without any vacuum the row groups keep every row written (35 700 measured), with it 12 200
        assert _stored_rows(s, "alarms") <= 1.5 * live
