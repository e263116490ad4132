"""The numpy paths of reports.closure and reports.load against oracles, on seeded random histories with
the awkward rows mixed in: no stored deadlines, acks stamped before the raise, raises before 1970 and
across year ends, unknown severities, NULL dispositions, acks and closes after as_of.

closure's oracle is the same report done in DuckDB alone (``_SQL_QUANTILES``: GROUP BY and quantile_cont);
load's is a per-row Python count. The hand-computed answers are in test_reports.py.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from earlywarn import reports

SCHEMA = (Path(__file__).resolve().parents[2] / "src" / "earlywarn" / "store_schema.sql").read_text()
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
DEADLINES = {"red": (5 * MIN, 30 * MIN), "orange": (10 * MIN, 60 * MIN), "yellow": (30 * MIN, 4 * HOUR),
             "blue": (HOUR, DAY), "purple": (HOUR, DAY)}  # fmt: skip
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DISPOSITIONS = ["real_handled", "false_alarm", "instrument_fault", "comm_fault", None]


def _ts(ms: int | None) -> dt.datetime | None:
    return None if ms is None else reports._ts(ms)


def _history(
    seed: int, n: int, *, start: int = T0, span: int = 40 * DAY, no_dues: float = 0.1, skew: float = 0.02
) -> duckdb.DuckDBPyConnection:
    rnd = random.Random(seed)
    con = duckdb.connect(":memory:")
    con.execute(SCHEMA)
    rows = []
    for i in range(n):
        sev = rnd.choice(["red", "orange", "yellow", "blue", "blue", "purple"])
        ack_dl, close_dl = DEADLINES[sev]
        raised = start + rnd.randrange(span)
        if rnd.random() < 0.02:
            raised = rnd.choice([-3 * DAY - 1234, -1, 0, 4 * DAY - 1, 4 * DAY])  # around the epoch / 1st Monday
        r = rnd.random()
        acked = None if r < 0.1 else raised + int(rnd.expovariate(1 / (0.7 * ack_dl))) + rnd.choice([0, 1, 999])
        if acked is not None and rnd.random() < skew:
            acked = raised - rnd.randrange(1, 5000)  # clock skew: acked before the raise
        closed = None if rnd.random() < 0.15 else raised + int(rnd.expovariate(1 / (0.7 * close_dl)))
        if closed is not None and rnd.random() < 0.05:
            closed = raised + close_dl  # exactly at the deadline: on time
        dues = rnd.random() >= no_dues  # 10 % by default: written without deadlines (the defaults apply)
        rows.append((
            f"a{i:05d}", f"s{rnd.randrange(7)}", rnd.choice(["hazchem", "dust"]), f"d{rnd.randrange(3)}", "t",
            f"rule{rnd.randrange(4)}", sev, "closed" if closed else "active_unack", _ts(raised), _ts(acked),
            _ts(closed), rnd.choice(DISPOSITIONS) if closed else None, 1 + (rnd.random() < 0.1), "plant",
            _ts(raised + ack_dl) if dues else None, _ts(raised + close_dl) if dues else None,
        ))  # fmt: skip
    cols = ["alarm_id", "site", "plant", "district", "tag", "rule_id", "severity", "state", "raised_at", "acked_at",
            "closed_at", "disposition", "occurrences", "escalation_tier", "ack_due_at", "close_due_at"]  # fmt: skip
    frame = pl.DataFrame(rows, schema=cols, orient="row").to_arrow()  # noqa: F841 (scanned by name below)
    con.execute(f"INSERT INTO alarms ({', '.join(cols)}) SELECT * FROM frame")
    return con


BYS = [(), ("site",), ("site", "week"), ("severity", "day"), ("rule", "month", "plant"), ("district", "severity"),
       ("month",), ("week", "site", "rule")]  # fmt: skip


@pytest.mark.parametrize("by", BYS, ids=str)
@pytest.mark.parametrize("seed", [1, 2])
def test_closure_fast_path_equals_duckdb_alone(by: tuple[str, ...], seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    con = _history(seed, 3000)
    windows = [
        (T0, T0 + 40 * DAY, T0 + 20 * DAY + 17),  # as_of inside: pending, acks and closes after as_of
        (T0 - 10 * DAY, T0 + 400 * DAY, T0 + 400 * DAY),  # the epoch rows fall outside
        (-10 * DAY, T0 + 400 * DAY, T0 + 41 * DAY),  # with the rows around 1970 (day/week truncation)
        (T0 + 50 * DAY, T0 + 60 * DAY, T0 + 61 * DAY),  # empty cohort
    ]
    for since, until, as_of in windows:
        args = {"since_ms": since, "until_ms": until, "as_of_ms": as_of, "by": by}
        fast = reports.closure(con, **args)
        monkeypatch.setattr(reports, "_SQL_QUANTILES", True)
        slow = reports.closure(con, **args)
        monkeypatch.setattr(reports, "_SQL_QUANTILES", False)
        _same(fast, slow)


QUANTILES = ["median_ack_s", "p90_ack_s", "median_close_s", "p90_close_s"]


WINDOWS = [
    (T0, T0 + 40 * DAY, T0 + 20 * DAY + 17),  # as_of inside: pending, acks and closes after as_of
    (T0 - 10 * DAY, T0 + 400 * DAY, T0 + 400 * DAY),  # the epoch rows fall outside
    (-10 * DAY, T0 + 400 * DAY, T0 + 41 * DAY),  # with the rows around 1970 (day/week truncation)
    (T0 + 3 * DAY + 5, T0 + 17 * DAY, T0 + 12 * DAY),  # cut inside weeks; as_of before the end
    (T0 + 50 * DAY, T0 + 60 * DAY, T0 + 61 * DAY),  # empty cohort
]


def _against_oracle(
    con: duckdb.DuckDBPyConnection, by: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    for since, until, as_of in WINDOWS:
        args = {"since_ms": since, "until_ms": until, "as_of_ms": as_of, "by": by}
        fast = reports.closure(con, **args)
        with monkeypatch.context() as m:
            m.setattr(reports, "_SQL_QUANTILES", True)
            slow = reports.closure(con, **args)
        _same(fast, slow)


@pytest.mark.parametrize("by", [("site", "week"), ("severity", "plant", "day"), ()], ids=str)
@pytest.mark.parametrize(
    "variant", ["stored deadlines", "joined keys", "disposition strings", "small batches", "all of them"]
)
def test_closure_scan_variants_equal_duckdb_alone(
    by: tuple[str, ...], variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each way the scan can take: deadlines read as stored (no row lacks them) or filled from the severity;
    # text keys as hash codes or joined with their distinct values (no hash table small enough); the false
    # dispositions by hash or by string (a hash shared with another disposition); one batch or many
    every = variant == "all of them"
    con = _history(7, 5000, no_dues=0.0 if variant == "stored deadlines" or every else 0.1)
    if variant == "joined keys" or every:
        monkeypatch.setattr(reports, "_MAX_HASH_TABLE", 0)
    if variant == "disposition strings" or every:
        monkeypatch.setattr(reports, "_false_alarm_hashes", lambda pairs: None)
    if variant == "small batches" or every:
        monkeypatch.setattr(reports, "_CHUNK_ROWS", 1000)
    seen: list[str] = []
    run = reports._run

    def spy(cur: Any, sql: str, params: Any) -> Any:
        seen.append(sql)
        return run(cur, sql, params)

    monkeypatch.setattr(reports, "_run", spy)
    _against_oracle(con, by, monkeypatch)
    scans = [q for q in seen if "AS false_alarm" in q]
    assert scans, "the numpy path ran"
    stored = variant == "stored deadlines" or every
    assert all(("ack_due_at AS ack_due" in q) == stored for q in scans)
    if any(name in reports.GROUPS for name in by):
        assert all(("JOIN" in q) == (variant == "joined keys" or every) for q in scans)
    assert all(("disposition IN" in q) == (variant == "disposition strings" or every) for q in scans)


@pytest.mark.parametrize("late_skew", [False, True], ids=["no skew", "skew in the last batch"])
def test_closure_packed_keys_turn_raw_on_a_negative_duration(
    late_skew: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without clock skew the quantile keys are packed while the batches are folded; an ack stamped before
    # its raise in the last batch unpacks the keys of the batches before it
    con = _history(9, 4000, skew=0.0)
    if late_skew:
        con.execute(
            "INSERT INTO alarms (alarm_id, site, plant, district, tag, rule_id, severity, state, raised_at,"
            " acked_at,"
            " closed_at, disposition, occurrences, escalation_tier) VALUES"
            " ('z', 's1', 'dust', 'd1', 't', 'rule1', 'red', 'closed', ?, ?, ?, 'false_alarm', 1, 'plant')",
            [_ts(T0 + 5 * DAY), _ts(T0 + 5 * DAY - 1500), _ts(T0 + 5 * DAY - 700)],
        )  # fmt: skip
    monkeypatch.setattr(reports, "_CHUNK_ROWS", 1000)
    unpacked: list[int] = []
    unpack = reports._unpack_keys
    monkeypatch.setattr(
        reports, "_unpack_keys", lambda keys, bits: (unpacked.append(len(keys)), unpack(keys, bits))
    )
    for by in [("site", "week"), ("rule", "severity"), ()]:
        _against_oracle(con, by, monkeypatch)
    assert bool(unpacked) == late_skew
    assert not late_skew or max(unpacked) >= 3000  # the batches before the last one


def test_hash_table_and_false_alarm_hashes() -> None:
    hashes = [2**64 - 1, 0, 12345, 2**63, 7]
    found = reports._hash_table(hashes)
    assert found is not None
    p, table = found
    assert [int(table[h % p]) for h in hashes] == list(range(len(hashes)))
    assert reports._hash_table([5, 5]) is None  # two values, one hash: they cannot be told apart
    assert reports._hash_table([]) is None
    pairs = [("false_alarm", 1), ("instrument_fault", 2), ("real_handled", 3), (None, 4)]
    assert reports._false_alarm_hashes(pairs).tolist() == [1, 2]
    assert reports._false_alarm_hashes([*pairs, ("comm_fault", 2)]) is None


def test_closure_reopened_and_week_spanning_alarms(monkeypatch: pytest.MonkeyPatch) -> None:
    # alarms raised on a Sunday night and acked / closed the next week, reopened ones (occurrences > 1),
    # alarms still open at as_of, and one closed after as_of: counted in the week they were raised
    con = _history(8, 0)  # the schema, no rows
    sunday = T0 + 3 * DAY + 23 * HOUR  # 2026-01-04 23:00 UTC, a Sunday
    rows = [
        ("a1", sunday, sunday + 2 * HOUR, sunday + 3 * HOUR, 1),  # acked and closed on Monday
        ("a2", sunday + 59 * MIN, None, None, 3),  # reopened twice, never acked: open, overdue later
        ("a3", sunday + HOUR, sunday + HOUR + 1, sunday + 9 * DAY, 2),  # closed after as_of below
        ("a4", sunday - 6 * DAY, sunday - 6 * DAY + MIN, sunday + 2 * DAY, 1),  # late close, previous week
    ]
    for aid, raised, acked, closed, occ in rows:
        con.execute(
            "INSERT INTO alarms (alarm_id, site, plant, district, tag, rule_id, severity, state, raised_at,"
            " acked_at,"
            " closed_at, disposition, occurrences, escalation_tier, ack_due_at, close_due_at) VALUES"
            " (?, 's1', 'dust', 'd1', 't', 'r1', 'orange', 'closed', ?, ?, ?, ?, ?, 'plant', ?, ?)",
            [aid, _ts(raised), _ts(acked), _ts(closed), "false_alarm" if closed else None, occ,
             _ts(raised + 10 * MIN), _ts(raised + HOUR)],
        )  # fmt: skip
    as_of = sunday + 5 * DAY
    df = reports.closure(
        con, since_ms=T0 - 7 * DAY, until_ms=T0 + 14 * DAY, as_of_ms=as_of, by=("site", "week")
    )
    # Sunday 23:00 and 23:59 are in the week of Monday 12-29, Monday 00:00 in the next one
    assert df["week"].to_list() == [dt.date(2025, 12, 29), dt.date(2026, 1, 5)]
    first, second = df.iter_rows(named=True)
    # a1 closed late (Monday 02:00), a4 closed late, a2 open past its deadline
    counts = (first["raised"], first["closed"], first["overdue"], first["due"], first["pending"])
    assert counts == (3, 2, 1, 3, 0)
    assert (first["acked_on_time"], first["on_time_close_rate"], first["false_alarm_share"]) == (1, 0.0, 1.0)
    # a3: its close comes after as_of, so it is open and overdue; acked 1 ms after the raise
    assert (second["raised"], second["closed"], second["overdue"], second["acked_on_time"]) == (1, 0, 1, 1)
    assert second["median_close_s"] is None and second["median_ack_s"] == 0.001
    _against_oracle(con, ("site", "week"), monkeypatch)


def _same(fast: pl.DataFrame, slow: pl.DataFrame) -> None:
    """Groups, counts and rates exactly; quantiles to the last bits (numpy and DuckDB interpolate alike, but
    may round the last bit differently)."""
    assert_frame_equal(fast.drop(QUANTILES), slow.drop(QUANTILES), check_exact=True)
    assert_frame_equal(fast.select(QUANTILES), slow.select(QUANTILES), check_exact=False, rel_tol=1e-12, abs_tol=0)


@pytest.mark.parametrize("by", [("site", "rule", "day"), ("severity",)], ids=str)
def test_closure_fast_path_with_many_groups(by: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    # the fallbacks for many possible groups: compacted group numbers, and counts one flag at a time
    con = _history(3, 2000)
    args = {"since_ms": -10 * DAY, "until_ms": T0 + 40 * DAY, "as_of_ms": T0 + 30 * DAY, "by": by}
    monkeypatch.setattr(reports, "_SQL_QUANTILES", True)
    slow = reports.closure(con, **args)
    monkeypatch.setattr(reports, "_SQL_QUANTILES", False)
    monkeypatch.setattr(reports, "_MAX_DIRECT_GROUPS", 4)
    monkeypatch.setattr(reports, "_MAX_PACKED_BINS", 8)
    _same(reports.closure(con, **args), slow)


def _naive_load(con: duckdb.DuckDBPyConnection, since: int, until: int, as_of: int) -> dict[str, dict[str, Any]]:
    rows = con.execute("SELECT site, epoch_ms(raised_at), severity, epoch_ms(closed_at) FROM alarms").fetchall()
    per_slot: dict[tuple[str, int], int] = defaultdict(int)
    sev: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    stale: dict[str, int] = defaultdict(int)
    for site, raised, severity, closed in rows:
        if since <= raised < until and raised <= as_of:
            per_slot[(site, (raised - since) // (10 * MIN))] += 1
            sev[site][severity] += 1
        if raised < as_of - DAY and (closed is None or closed > as_of):
            stale[site] += 1
    per_hour: dict[tuple[str, int], int] = defaultdict(int)
    out: dict[str, dict[str, Any]] = {}
    for site in set(sev) | set(stale):
        total = sum(sev[site].values())
        out[site] = {"alarms": total, "max_per_10min": 0, "max_per_hour": 0, "flood_intervals": 0,
                     "stale_open_24h": stale.get(site, 0),
                     **{f"{s}_share": (sev[site][s] / total if total else None)
                        for s in ("red", "orange", "yellow", "blue")}}  # fmt: skip
    for (site, slot), n in per_slot.items():
        per_hour[(site, slot // 6)] += n
        out[site]["max_per_10min"] = max(out[site]["max_per_10min"], n)
        out[site]["flood_intervals"] += n > 10
    for (site, _), n in per_hour.items():
        out[site]["max_per_hour"] = max(out[site]["max_per_hour"], n)
    return out


@pytest.mark.parametrize("seed", [4, 5])
def test_load_equals_per_row_count(seed: int) -> None:
    # dense enough for floods: 3000 alarms over 7 sites and 2 days
    con = _history(seed, 3000, span=2 * DAY)
    for since, until, as_of in [(T0, T0 + 2 * DAY, T0 + 3 * DAY), (T0 + 7 * MIN + 3, T0 + DAY, T0 + 30 * HOUR),
                                (T0 + 3 * DAY, T0 + 4 * DAY, T0 + 5 * DAY)]:  # fmt: skip
        df = reports.load(con, since_ms=since, until_ms=until, as_of_ms=as_of)
        expected = _naive_load(con, since, until, as_of)
        assert df["site"].to_list() == sorted(expected)
        for row in df.iter_rows(named=True):
            for col, v in expected[row["site"]].items():
                a = row[col]
                assert (a is None and v is None) or math.isclose(a, v, rel_tol=1e-12), (row["site"], col, a, v)
        assert df.schema == {c: t for c, t in df.schema.items()}  # columns present
        assert df.columns == list(reports.LOAD_COLUMNS)


def test_load_empty_window() -> None:
    con = _history(6, 50)
    df = reports.load(con, since_ms=T0 + 100 * DAY, until_ms=T0 + 101 * DAY, as_of_ms=T0 + 101 * DAY)
    assert df.columns == list(reports.LOAD_COLUMNS)
    # only sites with stale (open > 24 h) alarms, with 0 alarms in the window
    assert df.height > 0 and df["alarms"].to_list() == [0] * df.height
    assert df["max_per_10min"].to_list() == [0] * df.height
    assert pl.Series(df["red_share"]).null_count() == df.height


def test_closure_falls_back_to_duckdb_when_a_code_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    # a row whose key is missing from the lookup table (cannot happen in one snapshot) must not be counted
    # in a wrong group: the report is then done in DuckDB alone
    con = _history(1, 500)
    real = reports._hash_table

    def missing_first(hashes: Any) -> Any:
        p, table = real(hashes)
        table = table.copy()
        table[table == 0] = -1
        return p, table

    args = {"since_ms": T0, "until_ms": T0 + 40 * DAY, "as_of_ms": T0 + 40 * DAY, "by": ("site", "week")}
    monkeypatch.setattr(reports, "_hash_table", missing_first)
    fell_back: list[bool] = []
    sql = reports._closure_sql
    monkeypatch.setattr(reports, "_closure_sql", lambda *a: (fell_back.append(True), sql(*a))[1])
    fast = reports.closure(con, **args)
    assert fell_back
    monkeypatch.setattr(reports, "_SQL_QUANTILES", True)
    _same(fast, reports.closure(con, **args))
