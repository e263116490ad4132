"""The DuckDB store against a real database file in tmp_path: one batch = one transaction, duplicates,
UTC timestamps, alarm round-trips, restart queries, and a kill -9 in the middle of a stream of commits.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from earlywarn.clock import ManualClock
from earlywarn.config import DEFAULT_DEADLINES
from earlywarn.errors import StoreError
from earlywarn.model import (
    READING_SCHEMA,
    Alarm,
    AlarmEvent,
    AlarmState,
    Disposition,
    EventKind,
    NoticeRecord,
    Quality,
    ReadingBatch,
    Reject,
    Severity,
    Signal,
    SignalKind,
    Tier,
)
from earlywarn.store import ALARM_FIELDS, APPEND_MAX_ROWS, CommitBatch, MaintenanceWindow, NoticeRow, Store

T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z
EMPTY = ReadingBatch.empty()

CONTRACT = {  # product.md §8: the public tables and (at least) these columns
    "readings": {"site", "tag", "ts", "value", "quality"},
    "alarms": {
        "alarm_id",
        "site",
        "plant",
        "district",
        "tag",
        "rule_id",
        "severity",
        "state",
        "raised_at",
        "acked_at",
        "acked_by",
        "cleared_at",
        "closed_at",
        "closed_by",
        "disposition",
        "note",
        "occurrences",
        "peak_value",
        "escalation_tier",
    },
    "alarm_events": {"alarm_id", "ts", "kind", "actor", "detail"},
    "notices": {"notice_id", "alarm_id", "channel", "recipient", "tier", "sent_at", "outcome", "error"},
    "signals": {"site", "tag", "rule_id", "severity", "kind", "ts", "value"},
    "rejects": {"received_at", "topic", "reason", "payload"},
}


def readings(rows: list[tuple[str, str, int, float | None, int]]) -> ReadingBatch:
    """A ReadingBatch from (site, tag, ts_ms, value, quality) rows."""
    if not rows:
        return EMPTY
    site, tag, ts, value, q = (list(c) for c in zip(*rows, strict=True))
    return ReadingBatch.from_columns(site, tag, ts, value, q)


def alarm(alarm_id: str = "a1", **kw: object) -> Alarm:
    base: dict[str, object] = {
        "alarm_id": alarm_id,
        "site": "SZ-AL-0001",
        "plant": "aluminum",
        "district": "wujiang",
        "tag": "cw_pressure_mpa",
        "rule_id": "cw_pressure_ll",
        "severity": Severity.RED,
        "state": AlarmState.ACTIVE_UNACK,
        "raised_at_ms": T0_MS,
        "last_activation_ms": T0_MS,
        "value": 0.12,
        "peak_value": 0.11,
    }
    base.update(kw)
    return Alarm(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "ew.duckdb", clock=ManualClock(T0_MS + 60_000))
    yield s
    s.close()


def full_batch(k: int = 0) -> CommitBatch:
    """One of everything."""
    return CommitBatch(
        fresh=readings([("S1", "t1", T0_MS + k, 1.0, 0), ("S1", "t2", T0_MS + k, None, int(Quality.BAD))]),
        maybe_dup=EMPTY,
        rejects=[Reject(T0_MS, "ew/S1/telemetry", "bad_json", "{")],
        signals=[Signal("S1", "t1", "r1", Severity.RED, SignalKind.RAISE, T0_MS + k, 1.0, "msg", "d")],
        alarms=[alarm("a1")],
        events=[AlarmEvent("a1", T0_MS + k, EventKind.RAISED)],
        notices=[NoticeRecord("n1", "a1", "mqtt", "ops", "plant", "raised", T0_MS + k, "delivered")],
        state={"rules": b"\x00snapshot"},
    )


# ---------------------------------------------------------------------------------------------
# schema, open, reopen


def test_schema_has_the_public_tables_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    with Store.open(path) as s:
        assert s.batch_seq == 0
        for table, columns in CONTRACT.items():
            got = {
                r[0]
                for r in s.sql(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
                )
            }
            assert columns <= got, (table, columns - got)
        assert s.sql(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'readings' AND column_name = 'ts'"
        ) == [("TIMESTAMP WITH TIME ZONE",)]
        s.commit(full_batch())
        s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, state={"x": b"1"}))  # a batch without readings
    with Store.open(path) as s:  # the DDL is idempotent; the commit counter survives
        assert s.batch_seq == 2
        assert s.count("readings") == 2
        assert s.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY)).batch_seq == 3


def test_count_refuses_unknown_table(store: Store) -> None:
    with pytest.raises(ValueError, match="no table"):
        store.count("readings; DROP TABLE alarms")


# ---------------------------------------------------------------------------------------------
# one batch, one transaction


def test_commit_writes_every_table(store: Store) -> None:
    r = store.commit(full_batch())
    assert (r.batch_seq, r.inserted, r.late, r.duplicates) == (1, 2, 0, 0)
    for table in (
        "readings",
        "rejects",
        "signals",
        "alarms",
        "alarm_events",
        "notices",
        "engine_state",
        "store_commits",
    ):
        assert store.count(table) >= 1, table
    assert store.load_state("rules") == (b"\x00snapshot", 1)
    assert store.sql("SELECT quality, value FROM readings ORDER BY tag") == [("good", 1.0), ("bad", None)]
    assert store.sql("SELECT batch_seq FROM readings") == [(1,), (1,)]


def _nothing_of_batch_two(store: Store) -> None:
    assert store.batch_seq == 1
    assert store.count("readings") == 2
    assert store.count("signals") == 1
    assert store.count("alarm_events") == 1
    assert store.count("store_commits") == 1
    assert store.load_state("rules") == (b"\x00snapshot", 1)
    assert store.get_alarm("a2") is None
    assert store.last_ts_by_sensor() == {("S1", "t1"): T0_MS, ("S1", "t2"): T0_MS}


def test_failure_mid_commit_rolls_back_everything(store: Store) -> None:
    store.commit(full_batch())
    bad = dataclasses.replace(
        full_batch(1000),
        alarms=[alarm("a2")],
        # site=None breaks NOT NULL on signals.site *after* the readings went in
        signals=[Signal(None, "t1", "r1", Severity.RED, SignalKind.RAISE, T0_MS, 1.0)],  # type: ignore[arg-type]
        state={"rules": b"newer"},
    )
    with pytest.raises(StoreError, match="batch 2 not committed"):
        store.commit(bad)
    _nothing_of_batch_two(store)
    # the store stays usable and the retried (fixed) batch gets the next number
    r = store.commit(dataclasses.replace(bad, signals=()))
    assert r.batch_seq == 2 and r.inserted == 2
    assert store.load_state("rules") == (b"newer", 2)


def test_failure_in_the_last_statement_rolls_back(store: Store) -> None:
    store.commit(full_batch())
    # the engine_state upsert is the last write before the commit log: everything else is in by then
    bad = dataclasses.replace(full_batch(1000), state={"rules": None})  # type: ignore[dict-item]
    with pytest.raises(StoreError):
        store.commit(bad)
    _nothing_of_batch_two(store)


def test_unknown_quality_code_is_refused(store: Store) -> None:
    store.commit(full_batch())
    bad = dataclasses.replace(full_batch(1000), fresh=readings([("S1", "t1", T0_MS + 1000, 1.0, 7)]))
    with pytest.raises(StoreError):
        store.commit(bad)
    _nothing_of_batch_two(store)


def test_dead_connection_raises_store_error_then_heals(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "ew.duckdb")
    s.commit(full_batch())
    s._con.close()  # the connection dies under the store
    with pytest.raises(StoreError, match="batch 2 not committed"):
        s.commit(full_batch(1000))
    assert s.batch_seq == 1
    # the caller retries the same batch: the store has reopened its connection meanwhile
    assert s.commit(full_batch(1000)).batch_seq == 2
    s.close()
    with Store.open(tmp_path / "ew.duckdb") as s2:
        assert s2.batch_seq == 2 and s2.count("readings") == 4


class _CommitRaises:
    """The writer connection, except that the next COMMIT raises, after (durable) or instead of committing."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, durable: bool) -> None:
        self._con, self._durable, self._armed = con, durable, True

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)

    def commit(self) -> object:
        if self._armed:
            self._armed = False
            if self._durable:
                self._con.commit()
            else:
                self._con.rollback()
            raise duckdb.IOException("injected: COMMIT failed")
        return self._con.commit()


def test_commit_that_raises_but_is_durable_counts_as_committed(store: Store) -> None:
    store.commit(full_batch())
    store._con = _CommitRaises(store._con, durable=True)  # type: ignore[assignment]
    r = store.commit(full_batch(1000))  # no StoreError: store_commits shows the batch is in
    assert r.batch_seq == 2 and r.inserted == 2
    assert store.batch_seq == 2 and store.count("readings") == 4
    assert store.commit(full_batch(2000)).batch_seq == 3


def test_commit_that_raises_and_is_not_durable_raises(store: Store) -> None:
    store.commit(full_batch())
    store._con = _CommitRaises(store._con, durable=False)  # type: ignore[assignment]
    with pytest.raises(StoreError, match="batch 2 not committed.*injected"):
        store.commit(full_batch(1000))
    _nothing_of_batch_two(store)
    assert store.commit(full_batch(1000)).batch_seq == 2  # the retry


def test_a_live_engine_file_cannot_be_opened_by_another_process(store: Store) -> None:
    """DuckDB: one writing process and then no other; analysts use a snapshot or the engine's API."""
    store.commit(full_batch())
    code = (
        "import sys\nfrom earlywarn.store import Store\nfrom earlywarn.errors import StoreError\n"
        "try:\n    Store.open_readonly(sys.argv[1])\nexcept StoreError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(store.path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "snapshot" in out.stdout, out


class _CommitRaisesBlind(_CommitRaises):
    """COMMIT succeeds and raises, and then the next read fails too: the store cannot tell."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        super().__init__(con, durable=True)
        self._blind = True

    def cursor(self) -> object:
        if self._blind:
            self._blind = False
            raise duckdb.IOException("injected: cannot read")
        return self._con.cursor()


def test_commit_in_doubt_is_not_doubled_by_its_retry(store: Store) -> None:
    store.commit(full_batch())
    store._con = _CommitRaisesBlind(store._con)  # type: ignore[assignment]
    cb = full_batch(1000)
    with pytest.raises(StoreError, match="batch 2 not committed"):
        store.commit(cb)
    r = store.commit(cb)  # the caller's retry of the same batch: it is in already
    assert (r.batch_seq, r.inserted) == (2, 2)
    assert store.count("readings") == 4 and store.count("store_commits") == 2
    assert store.commit(full_batch(2000)).batch_seq == 3


def test_read_only_store_refuses_commits(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    with Store.open(path) as s:
        s.commit(full_batch())
    with Store.open_readonly(path) as ro:
        assert ro.count("readings") == 2 and ro.batch_seq == 1
        with pytest.raises(StoreError, match="read-only"):
            ro.commit(full_batch(1))
    with pytest.raises(StoreError, match="no database"):
        Store.open_readonly(tmp_path / "missing.duckdb")


# ---------------------------------------------------------------------------------------------
# duplicates and late readings


def test_maybe_dup_drops_duplicates_and_inserts_late(store: Store) -> None:
    first = readings(
        [("S1", "t1", T0_MS + i * 1000, float(i), 0) for i in range(10)]
        + [("S2", "t1", T0_MS + i * 1000, float(i), 0) for i in range(10)]
    )
    assert store.commit(CommitBatch(fresh=first, maybe_dup=EMPTY)).inserted == 20
    redelivered = [("S1", "t1", T0_MS + i * 1000, 99.0, 0) for i in range(3, 8)]  # stored already
    late = [("S1", "t1", T0_MS + 500, 0.5, 1), ("S2", "t1", T0_MS + 2500, 2.5, 0)]  # gaps: new
    other_sensor_same_ts = [("S3", "t1", T0_MS + 1000, 7.0, 0)]  # same ts, other sensor: new
    r = store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", T0_MS + 20_000, 20.0, 0)]),
            maybe_dup=readings(redelivered + late + other_sensor_same_ts),
        )
    )
    assert (r.batch_seq, r.inserted, r.late, r.duplicates) == (2, 4, 3, 5)
    assert store.count("readings") == 24
    # the stored value is the first one: a redelivery never overwrites
    assert store.sql("SELECT value FROM readings WHERE site = 'S1' AND epoch_ms(ts) = ?", [T0_MS + 5000]) == [
        (5.0,)
    ]
    assert store.sql("SELECT fresh, late, duplicates FROM store_commits WHERE batch_seq = 2") == [(1, 3, 5)]
    # all of it again: everything is a duplicate now
    r = store.commit(CommitBatch(fresh=EMPTY, maybe_dup=readings(redelivered + late + other_sensor_same_ts)))
    assert (r.inserted, r.late, r.duplicates) == (0, 0, 8)
    assert store.count("readings") == 24


# ---------------------------------------------------------------------------------------------
# timestamps


@pytest.mark.parametrize(
    "ts_ms", [T0_MS + 1, T0_MS + 999, 0, -1, 1, 253_402_300_799_999, -62_135_596_800_000]
)
def test_timestamps_round_trip_exactly_in_utc(store: Store, ts_ms: int) -> None:
    store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", ts_ms, 1.0, 0)]),
            maybe_dup=EMPTY,
            events=[AlarmEvent("a1", ts_ms, EventKind.RAISED)],
            signals=[Signal("S1", "t1", "r", Severity.BLUE, SignalKind.CLEAR, ts_ms, 1.0)],
        )
    )
    assert store.readings_since(0).frame["ts_ms"].to_list() == [ts_ms]
    assert store.alarm_events("a1")[0].ts_ms == ts_ms
    assert store.sql("SELECT epoch_ms(ts) FROM signals") == [(ts_ms,)]
    assert store.last_ts_by_sensor() == {("S1", "t1"): ts_ms}


def test_timestamps_are_utc_instants_whatever_the_host_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        with Store.open(tmp_path / "ew.duckdb") as s:
            s.commit(CommitBatch(fresh=readings([("S1", "t1", T0_MS + 250, 1.0, 0)]), maybe_dup=EMPTY))
            assert s.sql("SELECT current_setting('TimeZone')") == [("UTC",)]
            assert s.sql("SELECT strftime(ts, '%Y-%m-%dT%H:%M:%S.%g%z') FROM readings") == [
                ("2025-11-28T08:00:00.250+00",)
            ]
            assert s.sql(
                "SELECT count(*) FROM readings WHERE ts = TIMESTAMPTZ '2025-11-28 16:00:00.25+08'"
            ) == [(1,)]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# ---------------------------------------------------------------------------------------------
# alarms


def test_every_alarm_field_is_persisted() -> None:
    assert {f.name for f in dataclasses.fields(Alarm)} == ALARM_FIELDS


def test_alarm_upsert_keeps_one_row_with_the_final_state(store: Store) -> None:
    raised = alarm("a1")
    acked = dataclasses.replace(raised, state=AlarmState.ACTIVE_ACK, acked_at_ms=T0_MS + 10, acked_by="li")
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[raised]))
    # the same id twice in one batch: the last one wins
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[raised, acked, alarm("a2")]))
    assert store.count("alarms") == 2
    assert store.get_alarm("a1") == acked
    closed = dataclasses.replace(
        acked,
        state=AlarmState.CLOSED,
        cleared_at_ms=T0_MS + 20,
        closed_at_ms=T0_MS + 30,
        closed_by="li",
        disposition=Disposition.REAL_HANDLED,
        note="valve fixed",
    )
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[closed]))
    assert store.count("alarms") == 2
    assert store.get_alarm("a1") == closed
    assert [a.alarm_id for a in store.open_alarms()] == ["a2"]
    assert store.get_alarm("nope") is None


def test_alarm_deadlines_and_updated_at_are_filled(store: Store) -> None:
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[alarm("a1", severity=Severity.ORANGE)]))
    d = DEFAULT_DEADLINES[Severity.ORANGE]
    assert store.sql(
        "SELECT epoch_ms(ack_due_at), epoch_ms(close_due_at), epoch_ms(updated_at) FROM alarms"
    ) == [(T0_MS + d.ack_ms, T0_MS + d.close_ms, T0_MS + 60_000)]


def _same_alarm(a: Alarm, b: Alarm) -> bool:
    """Equality with NaN == NaN (a missing value round-trips as NaN)."""
    for f in dataclasses.fields(Alarm):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float) and math.isnan(x):
            if not (isinstance(y, float) and math.isnan(y)):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def test_open_alarms_round_trip_every_field(store: Store) -> None:
    full = Alarm(
        alarm_id="a-full",
        site="S1",
        plant="hazchem",
        district="d1",
        tag="t1",
        rule_id="r1",
        severity=Severity.YELLOW,
        state=AlarmState.CLEARED_ACK,
        raised_at_ms=T0_MS + 1,
        message="hi 高",
        acked_at_ms=T0_MS + 2,
        acked_by="wang",
        cleared_at_ms=T0_MS + 3,
        closed_at_ms=None,
        closed_by=None,
        disposition=Disposition.OTHER,
        note="n",
        occurrences=7,
        value=-1.5,
        peak_value=3.25,
        escalation_tier=Tier.COUNTY,
        last_activation_ms=T0_MS + 4,
        shelved_until_ms=T0_MS + 5,
        shelved_by="zhao",
        shelve_reason="calibration",
        suppressed=True,
        chattering=True,
        flood=True,
        last_notified_ms=T0_MS + 6,
        unacked_since_ms=T0_MS + 7,
        ack_escalations=2,
        close_escalated=True,
        last_reminded_ms=T0_MS + 8,
    )
    sparse = Alarm("a-sparse", "S1", "dust", "d", "t", "r", Severity.BLUE, AlarmState.ACTIVE_UNACK, T0_MS)
    # ^ None and NaN everywhere they are allowed
    assert math.isnan(sparse.value) and math.isnan(sparse.peak_value)
    closed = alarm("a-closed", state=AlarmState.CLOSED)
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[full, sparse, closed]))
    got = {a.alarm_id: a for a in store.open_alarms()}
    assert set(got) == {"a-full", "a-sparse"}
    assert _same_alarm(got["a-full"], full)
    assert _same_alarm(got["a-sparse"], sparse)
    # NaN is NULL for analysts (avg() skips it)
    assert store.sql("SELECT value, peak_value FROM alarms WHERE alarm_id = 'a-sparse'") == [(None, None)]


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_ms_or_none = st.none() | st.integers(-62_135_596_800_000, 253_402_300_799_999)
_float = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def alarms(draw: st.DrawFn) -> Alarm:
    return Alarm(
        alarm_id=draw(_text),
        site=draw(_text),
        plant=draw(_text),
        district=draw(_text),
        tag=draw(_text),
        rule_id=draw(_text),
        severity=draw(st.sampled_from(Severity)),
        state=draw(st.sampled_from([s for s in AlarmState if s is not AlarmState.CLOSED])),
        raised_at_ms=draw(st.integers(0, 2**42)),
        message=draw(_text),
        acked_at_ms=draw(_ms_or_none),
        acked_by=draw(st.none() | _text),
        cleared_at_ms=draw(_ms_or_none),
        closed_at_ms=draw(_ms_or_none),
        closed_by=draw(st.none() | _text),
        disposition=draw(st.none() | st.sampled_from(Disposition)),
        note=draw(st.none() | _text),
        occurrences=draw(st.integers(0, 2**31 - 1)),
        value=draw(_float),
        peak_value=draw(_float),
        escalation_tier=draw(st.sampled_from(Tier)),
        last_activation_ms=draw(st.integers(-(2**40), 2**42)),
        shelved_until_ms=draw(_ms_or_none),
        shelved_by=draw(st.none() | _text),
        shelve_reason=draw(st.none() | _text),
        suppressed=draw(st.booleans()),
        chattering=draw(st.booleans()),
        flood=draw(st.booleans()),
        last_notified_ms=draw(_ms_or_none),
        unacked_since_ms=draw(_ms_or_none),
        ack_escalations=draw(st.integers(0, 100)),
        close_escalated=draw(st.booleans()),
        last_reminded_ms=draw(_ms_or_none),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=alarms())
def test_property_alarm_round_trip(store: Store, a: Alarm) -> None:
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, alarms=[a]))
    got = store.get_alarm(a.alarm_id)
    assert got is not None and _same_alarm(got, a), (got, a)


@st.composite
def reading_batches(draw: st.DrawFn) -> ReadingBatch:
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["S1", "S-2", "工厂"]),
                st.sampled_from(["t1", "t:2"]),
                st.integers(-62_135_596_800_000, 253_402_300_799_999),
            ),
            unique=True,
            max_size=30,
        )
    )
    rows = [
        (
            s,
            t,
            ts,
            draw(st.none() | st.floats(allow_infinity=True, allow_nan=True)),
            draw(st.sampled_from([0, 1, 2])),
        )
        for s, t, ts in keys
    ]
    return readings(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=reading_batches())
def test_property_readings_round_trip(store: Store, batch: ReadingBatch) -> None:
    before = store.batch_seq
    r = store.commit(CommitBatch(fresh=batch, maybe_dup=EMPTY))
    got = store.readings_since(before).frame
    want = batch.frame.sort("ts_ms", "site", "tag")
    assert_frame_equal(got, want)
    assert r.inserted == len(batch)
    # the same rows again as maybe_dup: all duplicates
    r2 = store.commit(CommitBatch(fresh=EMPTY, maybe_dup=batch))
    assert (r2.late, r2.duplicates) == (0, len(batch))


# ---------------------------------------------------------------------------------------------
# restart queries


def test_last_ts_by_sensor_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ew.duckdb"
    with Store.open(path) as s:
        assert s.last_ts_by_sensor() == {}
        s.commit(
            CommitBatch(
                fresh=readings(
                    [
                        ("S1", "t1", T0_MS + 5, 1.0, 0),
                        ("S1", "t1", T0_MS + 9, 1.0, 0),
                        ("S2", "t1", T0_MS, 1.0, 0),
                    ]
                ),
                maybe_dup=EMPTY,
            )
        )
        # a late reading never moves the mark back
        s.commit(
            CommitBatch(
                fresh=readings([("S2", "t1", T0_MS + 50, 1.0, 0)]),
                maybe_dup=readings([("S1", "t1", T0_MS + 7, 1.0, 0)]),
            )
        )
    with Store.open(path) as s:
        want = {("S1", "t1"): T0_MS + 9, ("S2", "t1"): T0_MS + 50}
        assert s.last_ts_by_sensor() == want
        assert s.sql("SELECT site, tag, epoch_ms(max(ts)) FROM readings GROUP BY ALL ORDER BY ALL") == [
            (k[0], k[1], v) for k, v in sorted(want.items())
        ]


def test_readings_since_in_commit_order_then_ts(store: Store) -> None:
    store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", T0_MS + 100, 1.0, 0)]), maybe_dup=EMPTY, state={"rules": b"s1"}
        )
    )
    store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", T0_MS + 300, 3.0, 0), ("S1", "t2", T0_MS + 200, 2.0, 2)]),
            maybe_dup=EMPTY,
        )
    )
    store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", T0_MS + 400, 4.0, 1)]),
            maybe_dup=readings([("S1", "t1", T0_MS + 50, 0.5, 0)]),
        )
    )
    blob, seq = store.load_state("rules")  # type: ignore[misc]
    assert (blob, seq) == (b"s1", 1)
    got = store.readings_since(seq)
    assert got.frame.schema == pl.Schema(READING_SCHEMA)
    assert got.frame.rows() == [
        ("S1", "t2", T0_MS + 200, 2.0, 2),
        ("S1", "t1", T0_MS + 300, 3.0, 0),  # batch 2 by ts
        ("S1", "t1", T0_MS + 50, 0.5, 0),
        ("S1", "t1", T0_MS + 400, 4.0, 1),  # batch 3 by ts
    ]
    assert len(store.readings_since(3)) == 0
    assert store.load_state("missing") is None


def _small_rows(n: int, extra: int = 0) -> CommitBatch:
    """n rows of each small table with the awkward values (NaN and None, unicode, quotes, an empty error),
    plus `extra` rows marked "extra"."""
    keys = [str(i) for i in range(n)] + [f"extra{i}" for i in range(extra)]
    return CommitBatch(
        fresh=EMPTY,
        maybe_dup=EMPTY,
        rejects=[Reject(T0_MS + i, f"ew/{k}/telemetry", "bad_json", "{'x" if i % 2 else "")
                 for i, k in enumerate(keys)],
        signals=[Signal("工厂-1", f"t'{k}", "r1", Severity.RED, SignalKind.RAISE, T0_MS - i,
                        math.nan if i % 2 else -0.5, "超限 / high", "" if i % 3 else "d")
                 for i, k in enumerate(keys)],
        alarms=[alarm(f"a{k}", value=math.nan if i % 2 else 1.5, acked_at_ms=T0_MS + i if i % 3 else None,
                      acked_by="李" if i % 3 else None, escalation_tier=Tier(i % 4))
                for i, k in enumerate(keys)],
        events=[AlarmEvent(f"a{k}", T0_MS + i, EventKind.RAISED, "engine", "" if i % 2 else "d")
                for i, k in enumerate(keys)],
        notices=[NoticeRecord(f"n{k}", f"a{k}", "webhook", "http://x", "county" if i % 2 else "plant",
                              "raised", T0_MS + i, "failed" if i % 2 else "delivered",
                              "" if i % 2 else "timeout", i)
                 for i, k in enumerate(keys)],
    )


def test_small_tables_store_the_same_rows_through_the_appender_and_the_arrow_table(tmp_path: Path) -> None:
    # APPEND_MAX_ROWS rows of each go through the appenders, one more through Arrow tables: the same values
    stores = [Store.open(tmp_path / f"{k}.duckdb", clock=ManualClock(T0_MS)) for k in ("appender", "arrow")]
    try:
        stores[0].commit(_small_rows(APPEND_MAX_ROWS))
        stores[1].commit(_small_rows(APPEND_MAX_ROWS, extra=1))
        for table in ("rejects", "signals", "alarms", "alarm_events", "notices"):
            got = [s.sql(f"SELECT * FROM {table} ORDER BY ALL") for s in stores]
            assert len(got[0]) == APPEND_MAX_ROWS, table
            assert got[0] == [r for r in got[1] if not any("extra" in str(v) for v in r)], table
        assert stores[0].sql("SELECT count(*) FROM notices WHERE error IS NULL") == [(APPEND_MAX_ROWS // 2,)]
        assert stores[0].sql("SELECT count(*) FROM signals WHERE value IS NULL") == [(APPEND_MAX_ROWS // 2,)]
    finally:
        for s in stores:
            s.close()


def test_alarm_events_in_time_order(store: Store) -> None:
    ev = [
        AlarmEvent("a1", T0_MS, EventKind.RAISED),
        AlarmEvent("a1", T0_MS + 5, EventKind.ACKED, "li", "on it"),
        AlarmEvent("a2", T0_MS, EventKind.RAISED),
    ]
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=ev[:1] + ev[2:]))
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, events=ev[1:2]))
    assert store.alarm_events("a1") == ev[:2]
    assert store.alarm_events("zz") == []


def test_notice_sent(store: Store) -> None:
    store.commit(
        CommitBatch(
            fresh=EMPTY,
            maybe_dup=EMPTY,
            notices=[
                NoticeRecord(
                    "n1", "a1", "webhook", "http://x", "plant", "raised", T0_MS, "failed", "timeout", 1
                ),
                NoticeRecord(
                    "n1", "a1", "webhook", "http://x", "plant", "raised", T0_MS + 5, "delivered", "", 2
                ),
                NoticeRecord(
                    "n2", "a1", "mqtt", "ew/S1/notices", "township", "escalated", T0_MS + 9, "failed", "x"
                ),
            ],
        )
    )
    assert store.notice_sent("a1", "raised")
    assert store.notice_sent("a1", "raised", Tier.PLANT)
    assert not store.notice_sent("a1", "raised", Tier.TOWNSHIP)
    assert store.notice_sent("a1", "raised", "plant")  # a label works as well
    assert store.sql("SELECT error FROM notices WHERE attempt = 2") == [(None,)]  # no error: NULL
    assert not store.notice_sent("a1", "escalated")  # attempted, not delivered
    assert not store.notice_sent("a2", "raised")


def test_maintenance_windows(store: Store) -> None:
    w1 = MaintenanceWindow("w1", "S1", None, T0_MS, T0_MS + 3_600_000, "pump overhaul", "li", T0_MS - 5)
    w2 = MaintenanceWindow("w2", "S2", "t1", T0_MS + 10, T0_MS + 20, "calibration", "wang", T0_MS)
    store.add_maintenance_window(w1)
    store.add_maintenance_window(w2)
    assert store.maintenance_windows() == [w1, w2]
    assert store.maintenance_windows(site="S2") == [w2]
    assert store.maintenance_windows(active_at_ms=T0_MS + 20) == [w1]  # end is exclusive
    assert w2.covers("S2", "t1", T0_MS + 15) and not w2.covers("S2", "t2", T0_MS + 15)
    assert store.end_maintenance_window("w1", T0_MS + 100)
    assert store.maintenance_windows(active_at_ms=T0_MS + 100) == []
    assert not store.end_maintenance_window("nope", T0_MS)
    with pytest.raises(ValueError, match="must end after"):
        store.add_maintenance_window(dataclasses.replace(w1, ends_ms=T0_MS))


def test_snapshot_for_analysts_while_the_writer_runs(store: Store, tmp_path: Path) -> None:
    store.commit(full_batch())
    target = store.snapshot_to(tmp_path / "snap.duckdb")
    store.commit(full_batch(1000))  # the writer goes on; the snapshot is as of its start
    with Store.open_readonly(target) as ro:
        assert ro.count("readings") == 2 and ro.batch_seq == 1
        assert ro.get_alarm("a1") == store.get_alarm("a1")
    # plain DuckDB (what an analyst uses) reads it too, and it can be replaced by a newer one
    store.snapshot_to(target)
    con = duckdb.connect(str(target), read_only=True)
    assert con.execute("SELECT count(*) FROM readings").fetchone() == (4,)
    con.close()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


# ---------------------------------------------------------------------------------------------
# kill -9


WRITER = textwrap.dedent(
    """
    import sys
    from earlywarn.model import *
    from earlywarn.store import *
    N = int(sys.argv[3])
    T0 = 1_764_316_800_000
    store = Store.open(sys.argv[1], checkpoint_interval_ms=int(sys.argv[2]))
    while True:
        i = store.batch_seq + 1
        fresh = ReadingBatch.from_columns(
            [f"S{k % 7}" for k in range(N)], [f"t{k % 13}" for k in range(N)],
            [T0 + i * 100_000 + k for k in range(N)], [float(i)] * N, [k % 3 for k in range(N)])
        # every 3rd batch also redelivers a slice of the previous one
        maybe = ReadingBatch.from_columns(
            [f"S{k % 7}" for k in range(50)], [f"t{k % 13}" for k in range(50)],
            [T0 + (i - 1) * 100_000 + k for k in range(50)], [0.0] * 50, [0] * 50,
        ) if i % 3 == 0 and i > 1 else ReadingBatch.empty()
        a = Alarm(f"a{i % 5}", "S0", "dust", "d", "t0", "r", Severity.RED, AlarmState.ACTIVE_UNACK, T0,
                  occurrences=i)
        store.commit(CommitBatch(
            fresh=fresh, maybe_dup=maybe, alarms=[a],
            events=[AlarmEvent(a.alarm_id, T0 + i, EventKind.RAISED)],
            signals=[Signal("S0", "t0", "r", Severity.RED, SignalKind.RAISE, T0 + i, float(i))],
            state={"engine": str(i).encode()},
        ))
        print(i, flush=True)
    """
)


def _check_consistent(path: Path, at_least: int, n: int) -> int:
    with Store.open(path) as s:
        m = s.batch_seq
        assert m >= at_least, "a batch reported committed is missing"
        assert s.sql("SELECT count(*), min(batch_seq), max(batch_seq) FROM store_commits") == [(m, 1, m)]
        per_batch = dict(s.sql("SELECT batch_seq, count(*) FROM readings GROUP BY ALL"))
        assert set(per_batch) == set(range(1, m + 1)), "readings of an uncommitted batch, or a batch without"
        assert all(k == n for k in per_batch.values()), "a partial batch"
        assert s.sql("SELECT count(*) FROM (SELECT DISTINCT site, tag, ts FROM readings)") == [(n * m,)]
        assert s.count("alarm_events") == m and s.count("signals") == m
        assert s.load_state("engine") == (str(m).encode(), m)
        for k in range(5):
            last = max((i for i in range(1, m + 1) if i % 5 == k), default=None)
            got = s.get_alarm(f"a{k}")
            assert (got.occurrences if got else None) == last
        want_last = {
            (r[0], r[1]): r[2]
            for r in s.sql("SELECT site, tag, epoch_ms(max(ts)) FROM readings GROUP BY ALL")
        }
        assert s.last_ts_by_sensor() == want_last
        return m


@pytest.mark.parametrize(
    ("checkpoint_interval_ms", "n"),
    [(0, 2000), (30, 2000), (0, 40_000)],  # 40 000 > ROW_GROUP_SIZE: row groups written before COMMIT
    ids=["wal", "checkpoints", "optimistic-writes"],
)
def test_kill_9_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, checkpoint_interval_ms: int, n: int
) -> None:
    path = tmp_path / "ew.duckdb"
    committed = 0
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(checkpoint_interval_ms), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        reported = committed
        target = committed + 8 + 3 * round_
        deadline = time.monotonic() + 60
        while reported < target:
            line = proc.stdout.readline()
            assert line, f"writer died: {proc.stderr.read() if proc.stderr else ''}"
            reported = int(line)
            assert time.monotonic() < deadline
        time.sleep(0.003 * round_)  # land the kill at different points of a commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        committed = _check_consistent(path, reported, n)
    assert committed >= 8 + 11 + 14 + 17


def test_last_ts_by_sensor_across_folds(tmp_path: Path) -> None:
    """The marks are folded into sensor_last_ts at checkpoints; batches after a fold still count."""
    path = tmp_path / "ew.duckdb"
    with Store.open(path, checkpoint_interval_ms=0) as s:
        s.commit(
            CommitBatch(
                fresh=readings([("S1", "t1", T0_MS + 5, 1.0, 0), ("S2", "t1", T0_MS, 1.0, 0)]),
                maybe_dup=EMPTY,
            )
        )
        s.checkpoint()  # folds
        assert s.sql("SELECT count(*) FROM sensor_last_ts") == [(2,)]
        s.commit(
            CommitBatch(
                fresh=readings([("S1", "t1", T0_MS + 9, 1.0, 0), ("S3", "t1", T0_MS, 1.0, 0)]),
                maybe_dup=EMPTY,
            )
        )
        want = {("S1", "t1"): T0_MS + 9, ("S2", "t1"): T0_MS, ("S3", "t1"): T0_MS}
        assert s.last_ts_by_sensor() == want
        s._con.close()  # crash: no fold at close
    with Store.open(path) as s:
        assert s.last_ts_by_sensor() == want
        s.checkpoint()
        assert s.last_ts_by_sensor() == want
        assert s.sql("SELECT count(*) FROM sensor_last_ts") == [(3,)]


def test_dedup_with_candidates_far_apart_in_time(store: Store) -> None:
    hour_ms = 3_600_000
    stored = [("S1", "t1", T0_MS + h * hour_ms + i, float(i), 0) for h in range(0, 48, 6) for i in range(3)]
    store.commit(CommitBatch(fresh=readings(stored), maybe_dup=EMPTY))
    again = stored[::2]  # duplicates spread over two days: several ts ranges
    late = [("S1", "t1", T0_MS + h * hour_ms + 100, 0.0, 0) for h in range(0, 48, 12)]
    r = store.commit(CommitBatch(fresh=EMPTY, maybe_dup=readings(sorted(again + late))))
    assert (r.late, r.duplicates) == (len(late), len(again))
    assert store.count("readings") == len(stored) + len(late)


def test_batches_since_replays_what_the_rules_saw(store: Store) -> None:
    assert NoticeRow is NoticeRecord
    store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", T0_MS + 100, 1.0, 0)]),
            maybe_dup=EMPTY,
            state={"rules": b"s1"},
            now_ms=T0_MS + 150,
        )
    )
    store.commit(
        CommitBatch(
            fresh=readings([("S1", "t1", T0_MS + 300, 3.0, 0), ("S1", "t2", T0_MS + 200, 2.0, 2)]),
            maybe_dup=readings([("S1", "t1", T0_MS + 50, 0.5, 0)]),
            now_ms=T0_MS + 350,
        )
    )
    store.commit(
        CommitBatch(
            fresh=EMPTY, maybe_dup=EMPTY, events=[AlarmEvent("a", T0_MS, EventKind.ACKED)], now_ms=T0_MS + 400
        )
    )  # no readings: still a step of the engine clock
    store.commit(
        CommitBatch(fresh=readings([("S2", "t1", T0_MS + 500, 5.0, 1)]), maybe_dup=EMPTY)
    )  # store clock
    _, since = store.load_state("rules")  # type: ignore[misc]
    got = [(now, b.frame.rows()) for now, b in store.batches_since(since)]
    assert got == [
        (
            T0_MS + 350,
            [("S1", "t2", T0_MS + 200, 2.0, 2), ("S1", "t1", T0_MS + 300, 3.0, 0)],
        ),  # late one left out
        (T0_MS + 400, []),
        (T0_MS + 60_000, [("S2", "t1", T0_MS + 500, 5.0, 1)]),
    ]
    assert store.sql("SELECT epoch_ms(ts) FROM readings WHERE late") == [(T0_MS + 50,)]
    assert list(store.batches_since(store.batch_seq)) == []


def test_list_alarms_filters(store: Store) -> None:
    store.commit(
        CommitBatch(
            fresh=EMPTY,
            maybe_dup=EMPTY,
            alarms=[
                alarm("a1", raised_at_ms=T0_MS + 1),
                alarm("a2", site="S2", raised_at_ms=T0_MS + 2, severity=Severity.BLUE),
                alarm("a3", raised_at_ms=T0_MS + 3, state=AlarmState.CLOSED),
            ],
        )
    )
    ids = lambda alarms: [a.alarm_id for a in alarms]
    assert ids(store.list_alarms()) == ["a3", "a2", "a1"]
    assert ids(store.list_alarms(open_only=True)) == ["a2", "a1"]
    assert ids(store.list_alarms(site="S2")) == ["a2"]
    assert ids(store.list_alarms(severity="red", state="closed")) == ["a3"]
    assert ids(store.list_alarms(limit=1)) == ["a3"]


def test_windows_commit_with_the_batch(store: Store) -> None:
    w = MaintenanceWindow("w1", "S1", None, T0_MS, T0_MS + 1000, "overhaul", "li", T0_MS)
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, windows=[w]))
    assert store.maintenance_windows(ends_after_ms=T0_MS + 999) == [w]
    ended = dataclasses.replace(w, ends_ms=T0_MS + 10)  # ended early: the same id, upserted
    store.commit(CommitBatch(fresh=EMPTY, maybe_dup=EMPTY, windows=[ended]))
    assert store.maintenance_windows() == [ended]
    assert store.maintenance_windows(ends_after_ms=T0_MS + 10) == []


def test_read_cursor_sees_committed_data_only(store: Store) -> None:
    store.commit(full_batch())
    cur = store.read_cursor()
    try:
        store._con.begin()
        store._con.execute("DELETE FROM readings")
        assert cur.execute("SELECT count(*) FROM readings").fetchone() == (2,)
        store._con.rollback()
    finally:
        cur.close()


@st.composite
def delivery_streams(draw: st.DrawFn) -> list[list[tuple[str, int, float]]]:
    """Batches of (sensor, ts, value) deliveries with redeliveries and out-of-order readings."""
    sensors = st.sampled_from(["a", "b", "c"])
    ts = st.integers(0, 40).map(lambda k: T0_MS + k * 250)
    return draw(
        st.lists(st.lists(st.tuples(sensors, ts, st.floats(-1e6, 1e6)), max_size=25), min_size=1, max_size=8)
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=delivery_streams())
def test_property_each_reading_stored_once_first_value_wins(
    tmp_path_factory: pytest.TempPathFactory, stream: list[list[tuple[str, int, float]]]
) -> None:
    """Split like the batcher (fresh: newer than the last stored ts), commit, compare with a model."""
    path = tmp_path_factory.mktemp("prop") / "ew.duckdb"
    model: dict[tuple[str, int], float] = {}
    with Store.open(path) as s:
        last = s.last_ts_by_sensor()
        for deliveries in stream:
            seen: dict[tuple[str, int], float] = {}
            for sensor, ts, v in deliveries:  # in-batch duplicates: the batcher keeps the first
                seen.setdefault((sensor, ts), v)
            fresh = [("S", k[0], k[1], v, 0) for k, v in seen.items() if k[1] > last.get(("S", k[0]), -1)]
            maybe = [("S", k[0], k[1], v, 0) for k, v in seen.items() if k[1] <= last.get(("S", k[0]), -1)]
            r = s.commit(CommitBatch(fresh=readings(fresh), maybe_dup=readings(maybe)))
            new_late = sum(1 for _, t, ts, _, _ in maybe if (t, ts) not in model)
            assert (r.inserted, r.late, r.duplicates) == (
                len(fresh) + new_late,
                new_late,
                len(maybe) - new_late,
            )
            for _, t, ts, v, _ in fresh + maybe:
                model.setdefault((t, ts), v)
            for _, t, ts, _, _ in fresh:
                last[("S", t)] = max(last.get(("S", t), -1), ts)
            assert s.last_ts_by_sensor() == {k: v for k, v in last.items()}
        stored = {(t, ts): v for _, t, ts, v, _ in s.readings_since(0).frame.rows()}
        assert stored == model
        assert s.count("readings") == len(model)


def test_ts_ranges_split_at_the_widest_gaps() -> None:
    from earlywarn.store import _ts_ranges

    assert _ts_ranges(pl.Series([5, 1, 200_000, 3])) == [(1, 5), (200_000, 200_000)]
    assert _ts_ranges(pl.Series([7, 7])) == [(7, 7)]
    assert _ts_ranges(pl.Series([0, 59_000, 118_000])) == [(0, 118_000)]  # gaps under a minute: one range
    # more clusters than allowed: the narrowest gap is not split
    assert _ts_ranges(pl.Series([0, 100_000, 1_000_000, 5_000_000]), max_ranges=3) == [
        (0, 100_000),
        (1_000_000, 1_000_000),
        (5_000_000, 5_000_000),
    ]
