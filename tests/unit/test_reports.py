"""Reports against alarm histories whose answers are computed by hand in the comments below.

Default deadlines (config.DEFAULT_DEADLINES): red ack 5 min / close 30 min, orange 10 min / 60 min,
yellow 30 min / 4 h, blue 60 min / 24 h. Every expected number is written literally, never recomputed
with the SQL under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from earlywarn import reports
from earlywarn.reports import SqlRefused, parse_time

SCHEMA = (Path(__file__).resolve().parents[2] / "src" / "earlywarn" / "store_schema.sql").read_text()
MIN = 60_000
HOUR = 3_600_000
DEADLINE_MS = {"red": (5 * MIN, 30 * MIN), "orange": (10 * MIN, 60 * MIN), "yellow": (30 * MIN, 4 * HOUR),
               "blue": (60 * MIN, 24 * HOUR)}  # fmt: skip


def t(s: str) -> int:
    return parse_time(s)


def _db() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute(SCHEMA)
    return con


def _ts(ms: int | None) -> Any:
    return None if ms is None else reports._ts(ms)


def add_alarm(
    con: duckdb.DuckDBPyConnection,
    alarm_id: str,
    site: str,
    severity: str,
    raised: str,
    *,
    plant: str = "hazchem",
    district: str = "d1",
    rule: str = "r",
    tag: str = "t",
    acked: str | None = None,
    cleared: str | None = None,
    closed: str | None = None,
    disposition: str | None = None,
    occurrences: int = 1,
    chattering: bool = False,
    shelved_until: str | None = None,
    with_dues: bool = True,
) -> None:
    r = t(raised)
    ack_ms, close_ms = DEADLINE_MS[severity]
    state = "closed" if closed else ("cleared_ack" if cleared and acked else "active_unack")
    con.execute(
        """INSERT INTO alarms (alarm_id, site, plant, district, tag, rule_id, severity, state, raised_at,
               acked_at, cleared_at, closed_at, disposition, occurrences, escalation_tier, ack_due_at,
               close_due_at, shelved_until, chattering)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'plant', ?, ?, ?, ?)""",
        [
            alarm_id, site, plant, district, tag, rule, severity, state, _ts(r),
            _ts(t(acked)) if acked else None, _ts(t(cleared)) if cleared else None,
            _ts(t(closed)) if closed else None, disposition, occurrences,
            _ts(r + ack_ms) if with_dues else None, _ts(r + close_ms) if with_dues else None,
            _ts(t(shelved_until)) if shelved_until else None, chattering,
        ],
    )  # fmt: skip


def rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    return df.to_dicts()


def assert_row(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every expected column checked; floats to 1e-9, None for NULL."""
    assert set(actual) == set(expected), f"columns differ: {sorted(set(actual) ^ set(expected))}"
    for k, v in expected.items():
        a = actual[k]
        if isinstance(v, float) and a is not None:
            assert math.isclose(a, v, rel_tol=1e-9, abs_tol=1e-9), f"{k}: {a} != {v}"
        else:
            assert a == v, f"{k}: {a!r} != {v!r}"


def closure_row(**kw: Any) -> dict[str, Any]:
    return kw


# ---------------------------------------------------------------------------------------------
# The closure fixture
#
# Window [2026-10-26 Mon, 2026-11-09 Mon), as_of A = 2026-11-02T12:00Z.
#
# id  site sev    rule tag raised              acked (s)      closed (s)         state at A
# a1  s1   red    r_hi t1  10-31 23:50 (Sat)   +2m  120 ok    +20m  1200 ok      closed, real_handled
# a2  s1   red    r_hi t1  11-01 00:05 (Sun)   +7m  420 late  +45m  2700 late    closed, false_alarm, chattering
# a3  s1   orange r_lo t2  11-02 11:30         -              -                  pending (due 12:30)
# a4  s1   orange r_lo t2  11-02 10:00         +5m  300 ok    -                  overdue (due 11:00), reopened x3
# a5  s1   yellow r_hi t1  11-02 08:00 shelved +40m 2400 late 13:00 (after A)   overdue (due 12:00 == A)
# a6  s1   blue   r_hi t1  11-02 11:59         12:00 = A: 60  -                  pending, acked at A counts
# a7  s1   red    r_hi t1  11-02 13:00 (after A: not in the cohort at A)
# a8  s3   red    r_hi t1  10-25 23:59 (before since: s3 is an empty group)
# b1  s2   blue   r_dp t3  10-28 00:00 no dues +30m 1800 ok   +12h 43200 ok      closed, instrument_fault
# b2  s2   yellow r_dp t3  10-30 06:00         +10m 600 ok    +3h 10800 ok       closed, process_normal
# b3  s2   red    r_x  t4  11-02 11:50         +4m  240       -                  pending (due 12:20)
# c1  s4   red    r_cw t5  11-02 09:00         +10m 600 late  +25m 1500 ok       closed, real_handled

SINCE = "2026-10-26T00:00:00Z"
UNTIL = "2026-11-09T00:00:00Z"
AS_OF = "2026-11-02T12:00:00Z"


@pytest.fixture(scope="module")
def history() -> duckdb.DuckDBPyConnection:
    con = _db()
    s1 = {"site": "s1", "plant": "hazchem", "district": "d1"}
    add_alarm(
        con,
        "a1",
        severity="red",
        rule="r_hi",
        tag="t1",
        raised="2026-10-31T23:50:00Z",
        acked="2026-10-31T23:52:00Z",
        cleared="2026-11-01T00:00:00Z",
        closed="2026-11-01T00:10:00Z",
        disposition="real_handled",
        **s1,
    )
    add_alarm(
        con,
        "a2",
        severity="red",
        rule="r_hi",
        tag="t1",
        raised="2026-11-01T00:05:00Z",
        acked="2026-11-01T00:12:00Z",
        cleared="2026-11-01T00:35:00Z",
        closed="2026-11-01T00:50:00Z",
        disposition="false_alarm",
        chattering=True,
        **s1,
    )
    add_alarm(con, "a3", severity="orange", rule="r_lo", tag="t2", raised="2026-11-02T11:30:00Z", **s1)
    add_alarm(
        con,
        "a4",
        severity="orange",
        rule="r_lo",
        tag="t2",
        raised="2026-11-02T10:00:00Z",
        acked="2026-11-02T10:05:00Z",
        cleared="2026-11-02T10:30:00Z",
        occurrences=3,
        chattering=True,
        **s1,
    )
    add_alarm(
        con,
        "a5",
        severity="yellow",
        rule="r_hi",
        tag="t1",
        raised="2026-11-02T08:00:00Z",
        acked="2026-11-02T08:40:00Z",
        cleared="2026-11-02T09:00:00Z",
        closed="2026-11-02T13:00:00Z",
        disposition="false_alarm",
        shelved_until="2026-11-02T20:00:00Z",
        **s1,
    )
    add_alarm(
        con,
        "a6",
        severity="blue",
        rule="r_hi",
        tag="t1",
        raised="2026-11-02T11:59:00Z",
        acked="2026-11-02T12:00:00Z",
        **s1,
    )
    add_alarm(con, "a7", severity="red", rule="r_hi", tag="t1", raised="2026-11-02T13:00:00Z", **s1)
    add_alarm(
        con,
        "a8",
        "s3",
        "red",
        "2026-10-25T23:59:00Z",
        rule="r_hi",
        tag="t1",
        acked="2026-10-26T00:01:00Z",
        cleared="2026-10-26T00:02:00Z",
        closed="2026-10-26T00:03:00Z",
        disposition="real_handled",
    )
    s2 = {"site": "s2", "plant": "dust", "district": "d2"}
    add_alarm(
        con,
        "b1",
        severity="blue",
        rule="r_dp",
        tag="t3",
        raised="2026-10-28T00:00:00Z",
        acked="2026-10-28T00:30:00Z",
        cleared="2026-10-28T00:20:00Z",
        closed="2026-10-28T12:00:00Z",
        disposition="instrument_fault",
        with_dues=False,
        **s2,
    )
    add_alarm(
        con,
        "b2",
        severity="yellow",
        rule="r_dp",
        tag="t3",
        raised="2026-10-30T06:00:00Z",
        acked="2026-10-30T06:10:00Z",
        cleared="2026-10-30T06:30:00Z",
        closed="2026-10-30T09:00:00Z",
        disposition="process_normal",
        **s2,
    )
    add_alarm(
        con,
        "b3",
        severity="red",
        rule="r_x",
        tag="t4",
        raised="2026-11-02T11:50:00Z",
        acked="2026-11-02T11:54:00Z",
        cleared="2026-11-02T11:52:00Z",
        **s2,
    )
    add_alarm(
        con,
        "c1",
        "s4",
        "red",
        "2026-11-02T09:00:00Z",
        plant="aluminum",
        district="d1",
        rule="r_cw",
        tag="t5",
        acked="2026-11-02T09:10:00Z",
        cleared="2026-11-02T09:15:00Z",
        closed="2026-11-02T09:25:00Z",
        disposition="real_handled",
    )
    return con


def run_closure(con: duckdb.DuckDBPyConnection, by: tuple[str, ...] = (), **kw: Any) -> list[dict[str, Any]]:
    args = {"since_ms": t(SINCE), "until_ms": t(UNTIL), "as_of_ms": t(AS_OF)} | kw
    df = reports.closure(con, by=by, **args)
    assert tuple(df.columns) == (*by, *reports.CLOSURE_COLUMNS)
    return rows(df)


def test_closure_total(history: duckdb.DuckDBPyConnection) -> None:
    # cohort a1..a6, b1..b3, c1 = 10 (a7 after as_of, a8 before since)
    # due: a1 a2 a4 a5 b1 b2 c1 = 7; pending a3 a6 b3; closed a1 a2 b1 b2 c1 = 5
    # acked on time among due: a1 a4 b1 b2 = 4; closed on time: a1 b1 b2 c1 = 4; overdue a4 a5
    # ack s: 60 120 240 300 420 600 600 1800 2400 -> median idx 4 = 420; p90 pos 7.2 = 1800 + .2*600 = 1920
    # close s: 1200 1500 2700 10800 43200 -> median 2700; p90 pos 3.6 = 10800 + .6*32400 = 30240
    # false alarm share: a2 (false_alarm) + b1 (instrument_fault); a5 is false_alarm but closed after A
    [row] = run_closure(history)
    assert_row(row, closure_row(
        raised=10, due=7, pending=3, closed=5, closure_rate=5 / 7, acked_on_time=4, on_time_ack_rate=4 / 7,
        on_time_close_rate=4 / 7, median_ack_s=420.0, p90_ack_s=1920.0, median_close_s=2700.0,
        p90_close_s=30240.0, overdue=2, false_alarm_share=2 / 5,
    ))  # fmt: skip


def test_closure_by_site_and_week_spans_boundaries(history: duckdb.DuckDBPyConnection) -> None:
    # a1 (Sat 10-31) and a2 (Sun 11-01) share the ISO week of Mon 10-26 although their months differ;
    # a4 etc. fall in the week of Mon 11-02. s3 has no alarm in the window and does not appear.
    got = run_closure(history, ("site", "week"))
    import datetime as dt

    wk1, wk2 = dt.date(2026, 10, 26), dt.date(2026, 11, 2)
    expected = [
        # s1 wk1: a1 a2 both closed; ack 120 420 -> median 270, p90 120 + .9*300 = 390;
        # close 1200 2700 -> median 1950, p90 1200 + .9*1500 = 2550
        {"site": "s1", "week": wk1, "raised": 2, "due": 2, "pending": 0, "closed": 2, "closure_rate": 1.0, "acked_on_time": 1,
             "on_time_ack_rate": 0.5, "on_time_close_rate": 0.5, "median_ack_s": 270.0, "p90_ack_s": 390.0,
             "median_close_s": 1950.0, "p90_close_s": 2550.0, "overdue": 0, "false_alarm_share": 0.5},
        # s1 wk2: a3 pending, a4 overdue (acked on time), a5 overdue (acked late), a6 pending
        # ack 60 300 2400 -> median 300, p90 pos 1.8 = 300 + .8*2100 = 1980
        {"site": "s1", "week": wk2, "raised": 4, "due": 2, "pending": 2, "closed": 0, "closure_rate": 0.0, "acked_on_time": 1,
             "on_time_ack_rate": 0.5, "on_time_close_rate": 0.0, "median_ack_s": 300.0, "p90_ack_s": 1980.0,
             "median_close_s": None, "p90_close_s": None, "overdue": 2, "false_alarm_share": None},
        # s2 wk1: b1 b2; ack 1800 600 -> median 1200, p90 600 + .9*1200 = 1680
        # close 43200 10800 -> median 27000, p90 10800 + .9*32400 = 39960
        {"site": "s2", "week": wk1, "raised": 2, "due": 2, "pending": 0, "closed": 2, "closure_rate": 1.0, "acked_on_time": 2,
             "on_time_ack_rate": 1.0, "on_time_close_rate": 1.0, "median_ack_s": 1200.0, "p90_ack_s": 1680.0,
             "median_close_s": 27000.0, "p90_close_s": 39960.0, "overdue": 0, "false_alarm_share": 0.5},
        # s2 wk2: b3 only, pending: nothing due so every rate is NULL; its ack time still counts
        {"site": "s2", "week": wk2, "raised": 1, "due": 0, "pending": 1, "closed": 0, "closure_rate": None, "acked_on_time": 0,
             "on_time_ack_rate": None, "on_time_close_rate": None, "median_ack_s": 240.0, "p90_ack_s": 240.0,
             "median_close_s": None, "p90_close_s": None, "overdue": 0, "false_alarm_share": None},
        # s4 wk2: c1 acked late, closed on time
        {"site": "s4", "week": wk2, "raised": 1, "due": 1, "pending": 0, "closed": 1, "closure_rate": 1.0, "acked_on_time": 0,
             "on_time_ack_rate": 0.0, "on_time_close_rate": 1.0, "median_ack_s": 600.0, "p90_ack_s": 600.0,
             "median_close_s": 1500.0, "p90_close_s": 1500.0, "overdue": 0, "false_alarm_share": 0.0},
    ]  # fmt: skip
    assert len(got) == len(expected)
    for a, e in zip(got, expected, strict=True):
        assert_row(a, e)


def test_closure_by_month_splits_the_weekend(history: duckdb.DuckDBPyConnection) -> None:
    import datetime as dt

    got = run_closure(history, ("month",))
    expected = [
        # October: a1 b1 b2 all closed on time; ack 120 600 1800 -> median 600, p90 600 + .8*1200 = 1560
        # close 1200 10800 43200 -> median 10800, p90 10800 + .8*32400 = 36720; FA b1 -> 1/3
        {"month": dt.date(2026, 10, 1), "raised": 3, "due": 3, "pending": 0, "closed": 3, "closure_rate": 1.0,
             "acked_on_time": 3, "on_time_ack_rate": 1.0, "on_time_close_rate": 1.0, "median_ack_s": 600.0,
             "p90_ack_s": 1560.0, "median_close_s": 10800.0, "p90_close_s": 36720.0, "overdue": 0,
             "false_alarm_share": 1 / 3},
        # November: a2 a3 a4 a5 a6 b3 c1; due a2 a4 a5 c1; closed a2 c1; ack on time a4; close on time c1
        # ack 60 240 300 420 600 2400 -> median 360, p90 pos 4.5 = 600 + .5*1800 = 1500
        # close 1500 2700 -> median 2100, p90 1500 + .9*1200 = 2580; FA a2 -> 1/2
        {"month": dt.date(2026, 11, 1), "raised": 7, "due": 4, "pending": 3, "closed": 2, "closure_rate": 0.5,
             "acked_on_time": 1, "on_time_ack_rate": 0.25, "on_time_close_rate": 0.25, "median_ack_s": 360.0,
             "p90_ack_s": 1500.0, "median_close_s": 2100.0, "p90_close_s": 2580.0, "overdue": 2, "false_alarm_share": 0.5},
    ]  # fmt: skip
    for a, e in zip(got, expected, strict=True):
        assert_row(a, e)


def test_closure_by_day(history: duckdb.DuckDBPyConnection) -> None:
    import datetime as dt

    got = {r["day"]: (r["raised"], r["closed"], r["overdue"]) for r in run_closure(history, ("day",))}
    assert got == {
        dt.date(2026, 10, 28): (1, 1, 0),  # b1
        dt.date(2026, 10, 30): (1, 1, 0),  # b2
        dt.date(2026, 10, 31): (1, 1, 0),  # a1 (closed after midnight: still counted on its raise day)
        dt.date(2026, 11, 1): (1, 1, 0),  # a2
        dt.date(2026, 11, 2): (6, 1, 2),  # a3 a4 a5 a6 b3 c1
    }


def test_closure_by_severity_in_rank_order(history: duckdb.DuckDBPyConnection) -> None:
    got = [(r["severity"], r["raised"], r["due"], r["pending"], r["closed"], r["overdue"])
           for r in run_closure(history, ("severity",))]  # fmt: skip
    assert got == [
        ("red", 4, 3, 1, 3, 0),  # a1 a2 c1 closed, b3 pending
        ("orange", 2, 1, 1, 0, 1),  # a4 overdue, a3 pending
        ("yellow", 2, 2, 0, 1, 1),  # b2 closed, a5 overdue at exactly its deadline
        ("blue", 2, 1, 1, 1, 0),  # b1 closed (deadlines from the defaults), a6 pending
    ]


def test_closure_by_rule_plant_district(history: duckdb.DuckDBPyConnection) -> None:
    by_rule = [(r["rule"], r["raised"]) for r in run_closure(history, ("rule",))]
    assert by_rule == [("r_cw", 1), ("r_dp", 2), ("r_hi", 4), ("r_lo", 2), ("r_x", 1)]
    by = [
        (r["district"], r["plant"], r["raised"], r["due"])
        for r in run_closure(history, ("district", "plant"))
    ]
    assert by == [("d1", "aluminum", 1, 1), ("d1", "hazchem", 6, 4), ("d2", "dust", 3, 2)]


def test_closure_as_of_moves_state(history: duckdb.DuckDBPyConnection) -> None:
    # At 2026-11-09 (= until) a7 exists (raised 11-02 13:00, red, never acked: overdue), a5 is closed (late),
    # a3 / a6 / b3 are past their deadlines and still open: overdue.
    [row] = run_closure(history, as_of_ms=t(UNTIL))
    assert (row["raised"], row["due"], row["pending"], row["closed"], row["overdue"]) == (11, 11, 0, 6, 5)
    # a5 closed with false_alarm now counts: a2 a5 b1 over 6 closed
    assert row["false_alarm_share"] == pytest.approx(3 / 6)


def test_closure_empty_groups_and_window(history: duckdb.DuckDBPyConnection) -> None:
    empty = {"since_ms": t("2025-01-01T00:00:00Z"), "until_ms": t("2025-02-01T00:00:00Z")}
    assert run_closure(history, ("site",), **empty) == []
    [total] = run_closure(history, **empty)
    assert_row(total, {
        "raised": 0, "due": 0, "pending": 0, "closed": 0, "closure_rate": None, "acked_on_time": 0, "on_time_ack_rate": None,
        "on_time_close_rate": None, "median_ack_s": None, "p90_ack_s": None, "median_close_s": None, "p90_close_s": None,
        "overdue": 0, "false_alarm_share": None,
    })  # fmt: skip
    assert "s3" not in {r["site"] for r in run_closure(history, ("site",))}


@pytest.mark.parametrize(
    "by", [("nope",), ("site", "site"), ("day", "week"), ("site; DROP TABLE alarms",)], ids=str
)
def test_closure_refuses_unknown_groups(history: duckdb.DuckDBPyConnection, by: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        run_closure(history, by)


def test_non_responding(history: duckdb.DuckDBPyConnection) -> None:
    df = reports.non_responding(history, since_ms=t(SINCE), until_ms=t(UNTIL), as_of_ms=t(AS_OF))
    got = rows(df)
    # s1: a4 orange overdue; on-time ack 2 of 4 due (a1 a4 vs a2 a5) -> both reasons.
    # worst: overdue red/orange first (a4), then by severity (a2 red, a5 yellow).
    # s2: nothing overdue, ack rate 2/2 -> not listed. s4: c1 acked late -> 0 % -> listed second.
    assert len(got) == 2
    assert_row(got[0], {
        "site": "s1", "plant": "hazchem", "district": "d1", "raised": 6, "due": 4, "overdue": 2, "overdue_red_orange": 1,
        "acked_on_time": 2, "on_time_ack_rate": 0.5,
        "reasons": ["1 overdue red/orange alarm(s)", "on-time ack rate 50.0% < 90.0%"],
        "worst_alarms": ["a4", "a2", "a5"],
    })  # fmt: skip
    assert_row(got[1], {
        "site": "s4", "plant": "aluminum", "district": "d1", "raised": 1, "due": 1, "overdue": 0, "overdue_red_orange": 0,
        "acked_on_time": 0, "on_time_ack_rate": 0.0, "reasons": ["on-time ack rate 0.0% < 90.0%"], "worst_alarms": ["c1"],
    })  # fmt: skip


def test_bad_actors(history: duckdb.DuckDBPyConnection) -> None:
    # as_of defaults to until: the cohort is a1..a7, b1..b3, c1 = 11 alarms.
    # standing (active 24 h or more at 11-09): a3, a6, a7 never cleared; chattering: a2 (r_hi), a4 (r_lo)
    got = rows(reports.bad_actors(history, since_ms=t(SINCE), until_ms=t(UNTIL)))
    expected = [
        {"rule": "r_hi", "tag": "t1", "sites": 1, "alarms": 5, "share": 5 / 11, "activations": 5, "chattering": 1, "standing": 2},
        {"rule": "r_lo", "tag": "t2", "sites": 1, "alarms": 2, "share": 2 / 11, "activations": 4, "chattering": 1, "standing": 1},
        {"rule": "r_dp", "tag": "t3", "sites": 1, "alarms": 2, "share": 2 / 11, "activations": 2, "chattering": 0, "standing": 0},
        {"rule": "r_cw", "tag": "t5", "sites": 1, "alarms": 1, "share": 1 / 11, "activations": 1, "chattering": 0, "standing": 0},
        {"rule": "r_x", "tag": "t4", "sites": 1, "alarms": 1, "share": 1 / 11, "activations": 1, "chattering": 0, "standing": 0},
    ]  # fmt: skip
    assert len(got) == len(expected)
    for a, e in zip(got, expected, strict=True):
        assert_row(a, e)
    top2 = rows(reports.bad_actors(history, since_ms=t(SINCE), until_ms=t(UNTIL), limit=2))
    assert [(r["rule"], r["tag"]) for r in top2] == [("r_hi", "t1"), ("r_lo", "t2")]
    # judged at A: a7 does not exist yet, nothing has been active for 24 h
    at_a = rows(reports.bad_actors(history, since_ms=t(SINCE), until_ms=t(UNTIL), as_of_ms=t(AS_OF)))
    assert [(r["rule"], r["alarms"], r["standing"]) for r in at_a][:2] == [("r_hi", 4, 0), ("r_lo", 2, 0)]


# ---------------------------------------------------------------------------------------------
# load
#
# Window [11-02 00:00, 02:00) = 12 ten-minute intervals, 2 hours; as_of 11-03 00:00, so "stale" means
# open at as_of and raised before 11-02 00:00.
# f1: 11 alarms in 00:00-00:10 (flood: > 10), 5 in 00:10-00:20, 1 at 01:30 -> 17;
#     red 1, orange 2, yellow 3 + 5, blue 5 + 1; one raised at exactly 00:00 and open (24 h old: not stale);
#     stale: raised 11-01 12:00 open; raised 11-01 10:00 closed after as_of. Not stale: closed before as_of.
# f2: 1 red at 01:00.  f3: only an alarm from 10-20 still open.


@pytest.fixture(scope="module")
def load_db() -> duckdb.DuckDBPyConnection:
    con = _db()
    closed = {"closed": "2026-11-02T05:00:00Z", "cleared": "2026-11-02T04:00:00Z"}
    sev0 = ["red", "orange", "orange", "yellow", "yellow", "yellow", "blue", "blue", "blue", "blue", "blue"]
    add_alarm(con, "f1-0", "f1", sev0[0], "2026-11-02T00:00:00Z")  # open, exactly 24 h old at as_of
    for i, sev in enumerate(sev0[1:], start=1):
        add_alarm(con, f"f1-{i}", "f1", sev, f"2026-11-02T00:0{i % 10}:30Z", **closed)
    for i in range(5):
        add_alarm(con, f"f1-y{i}", "f1", "yellow", f"2026-11-02T00:1{i}:00Z", **closed)
    add_alarm(con, "f1-last", "f1", "blue", "2026-11-02T01:30:00Z", **closed)
    add_alarm(con, "f1-until", "f1", "blue", "2026-11-02T02:00:00Z", **closed)  # at until: outside
    add_alarm(con, "f1-old1", "f1", "yellow", "2026-11-01T12:00:00Z")
    add_alarm(con, "f1-old2", "f1", "yellow", "2026-11-01T10:00:00Z", cleared="2026-11-01T11:00:00Z",
              closed="2026-11-03T01:00:00Z")  # fmt: skip
    add_alarm(con, "f1-old3", "f1", "yellow", "2026-11-01T10:00:00Z", cleared="2026-11-01T11:00:00Z",
              closed="2026-11-02T05:00:00Z")  # fmt: skip
    add_alarm(con, "f2-0", "f2", "red", "2026-11-02T01:00:00Z", plant="dust", district="d2", **closed)
    add_alarm(con, "f3-0", "f3", "blue", "2026-10-20T00:00:00Z", plant="steel", district="d3")
    return con


def test_load(load_db: duckdb.DuckDBPyConnection) -> None:
    df = reports.load(load_db, since_ms=t("2026-11-02T00:00:00Z"), until_ms=t("2026-11-02T02:00:00Z"),
                      as_of_ms=t("2026-11-03T00:00:00Z"))  # fmt: skip
    got = rows(df)
    expected = [
        {"site": "f1", "plant": "hazchem", "district": "d1", "alarms": 17, "avg_per_10min": 17 / 12, "max_per_10min": 11,
             "avg_per_hour": 8.5, "max_per_hour": 16, "flood_intervals": 1, "flood_share": 1 / 12, "stale_open_24h": 2,
             "red_share": 1 / 17, "orange_share": 2 / 17, "yellow_share": 8 / 17, "blue_share": 6 / 17},
        {"site": "f2", "plant": "dust", "district": "d2", "alarms": 1, "avg_per_10min": 1 / 12, "max_per_10min": 1,
             "avg_per_hour": 0.5, "max_per_hour": 1, "flood_intervals": 0, "flood_share": 0.0, "stale_open_24h": 0,
             "red_share": 1.0, "orange_share": 0.0, "yellow_share": 0.0, "blue_share": 0.0},
        {"site": "f3", "plant": "steel", "district": "d3", "alarms": 0, "avg_per_10min": 0.0, "max_per_10min": 0,
             "avg_per_hour": 0.0, "max_per_hour": 0, "flood_intervals": 0, "flood_share": 0.0, "stale_open_24h": 1,
             "red_share": None, "orange_share": None, "yellow_share": None, "blue_share": None},
    ]  # fmt: skip
    assert len(got) == len(expected)
    for a, e in zip(got, expected, strict=True):
        assert_row(a, e)


# ---------------------------------------------------------------------------------------------
# online
#
# Window [00:00:00, 00:01:00) = 60 s; default period 10 s -> expected 6; 'ev' has 30 s -> expected 2.


def test_online() -> None:
    con = _db()

    def reading(site: str, tag: str, ts: str, quality: str = "good") -> None:
        con.execute("INSERT INTO readings (site, tag, ts, value, quality, batch_seq) VALUES (?, ?, ?, 1.0, ?, 0)",
                    [site, tag, _ts(t(ts)), quality])  # fmt: skip

    for s in range(6):
        reading("o1", "a", f"2026-11-02T00:00:{s * 10:02d}Z", "bad" if s == 0 else "good")
    for s in range(3):
        reading("o1", "b", f"2026-11-02T00:00:{s * 10:02d}Z")
    reading("o1", "b", "2026-11-02T00:01:00Z")  # at until: outside, and not "seen before until"
    reading("o1", "c", "2026-11-01T23:00:00Z")  # silent in the window
    reading("o2", "ev", "2026-11-02T00:00:05Z")
    for s in range(8):
        reading("o2", "burst", f"2026-11-02T00:00:0{s}Z")
    df = reports.online(con, since_ms=t("2026-11-02T00:00:00Z"), until_ms=t("2026-11-02T00:01:00Z"),
                        expected_period_ms={"ev": 30_000})  # fmt: skip
    import datetime as dt

    def at(s: str) -> dt.datetime:
        return dt.datetime.fromisoformat(s)

    expected = [
        {"site": "o1", "tag": "c", "period_ms": 10_000, "received": 0, "received_good": 0, "expected": 6, "online_rate": 0.0,
             "last_seen": at("2026-11-01T23:00:00+00:00")},
        {"site": "o1", "tag": "b", "period_ms": 10_000, "received": 3, "received_good": 3, "expected": 6, "online_rate": 0.5,
             "last_seen": at("2026-11-02T00:00:20+00:00")},
        {"site": "o2", "tag": "ev", "period_ms": 30_000, "received": 1, "received_good": 1, "expected": 2, "online_rate": 0.5,
             "last_seen": at("2026-11-02T00:00:05+00:00")},
        {"site": "o1", "tag": "a", "period_ms": 10_000, "received": 6, "received_good": 5, "expected": 6, "online_rate": 1.0,
             "last_seen": at("2026-11-02T00:00:50+00:00")},
        {"site": "o2", "tag": "burst", "period_ms": 10_000, "received": 8, "received_good": 8, "expected": 6,
             "online_rate": 1.0, "last_seen": at("2026-11-02T00:00:07+00:00")},
    ]  # fmt: skip
    got = rows(df)
    assert len(got) == len(expected)
    for a, e in zip(got, expected, strict=True):
        assert_row(a, e)
    # one period for every tag
    flat = reports.online(con, since_ms=t("2026-11-02T00:00:00Z"), until_ms=t("2026-11-02T00:01:00Z"),
                          expected_period_ms=30_000)  # fmt: skip
    assert dict(zip(flat["tag"], flat["expected"], strict=True)) == {
        "c": 2,
        "b": 2,
        "ev": 2,
        "a": 2,
        "burst": 2,
    }
    with pytest.raises(ValueError):
        reports.online(con, since_ms=0, until_ms=1, expected_period_ms=0)


# ---------------------------------------------------------------------------------------------
# risk
#
# Window [11-02, 11-03), as_of 11-02 12:00, stale data = no reading for 1 h.
# k1 high: interlock rule raised at 10:00 (alarm + its signal: counted once) and reactivated 10:30 -> 2
# k2 high: red raised 11:00, open -> overdue at 11:30
# k3 high: bypass tag true since 02:00 (stale too) and an orange alarm pending
# k4 elevated: bypass true at 05:00 (a later false at 13:00 is after as_of); 2 tags stale
# k5 elevated: 11 blue alarms in 09:00-09:05, all closed -> flood
# k6 medium: orange raised 11:30, pending.   k7 medium: a tag silent since 10:00 (no alarm: no plant)
# k8 low: one closed blue alarm, fresh data.  k9 elevated: orange raised 10:00, overdue at 11:00


@pytest.fixture(scope="module")
def risk_db() -> duckdb.DuckDBPyConnection:
    con = _db()

    def reading(site: str, tag: str, ts: str, value: float) -> None:
        con.execute("INSERT INTO readings (site, tag, ts, value, quality, batch_seq) VALUES (?, ?, ?, ?, 'good', 0)",
                    [site, tag, _ts(t(ts)), value])  # fmt: skip

    def signal(site: str, tag: str, rule: str, ts: str, detail: str = "") -> None:
        con.execute("INSERT INTO signals (site, tag, rule_id, severity, kind, ts, value, message, detail) "
                    "VALUES (?, ?, ?, 'red', 'raise', ?, 1.0, '', ?)",
                    [site, tag, rule, _ts(t(ts)), detail])  # fmt: skip

    add_alarm(con, "k1-0", "k1", "red", "2026-11-02T10:00:00Z", rule="interlock_cw_gate", tag="cw",
              acked="2026-11-02T10:01:00Z", cleared="2026-11-02T10:10:00Z", closed="2026-11-02T10:20:00Z",
              disposition="real_handled", plant="aluminum")  # fmt: skip
    signal("k1", "cw", "interlock_cw_gate", "2026-11-02T10:00:00Z", "interlock_failed")
    signal("k1", "cw", "interlock_cw_gate", "2026-11-02T10:30:00Z", "interlock_failed")
    reading("k1", "cw", "2026-11-02T11:59:00Z", 0.2)
    add_alarm(con, "k2-0", "k2", "red", "2026-11-02T11:00:00Z")
    reading("k3", "sis_bypass_active", "2026-11-02T02:00:00Z", 1.0)
    add_alarm(con, "k3-0", "k3", "orange", "2026-11-02T11:50:00Z")
    reading("k4", "sis_bypass_active", "2026-11-02T05:00:00Z", 1.0)
    reading("k4", "sis_bypass_active", "2026-11-02T13:00:00Z", 0.0)
    reading("k4", "tank_level_pct", "2026-11-02T05:00:00Z", 50.0)
    for i in range(11):
        add_alarm(
            con,
            f"k5-{i}",
            "k5",
            "blue",
            f"2026-11-02T09:0{i % 6}:{i:02d}Z",
            cleared="2026-11-02T09:20:00Z",
            closed="2026-11-02T09:30:00Z",
            disposition="process_normal",
        )
    add_alarm(con, "k6-0", "k6", "orange", "2026-11-02T11:30:00Z")
    reading("k7", "x", "2026-11-02T10:00:00Z", 1.0)
    add_alarm(con, "k8-0", "k8", "blue", "2026-11-02T08:00:00Z", cleared="2026-11-02T08:10:00Z",
              closed="2026-11-02T08:30:00Z", disposition="process_normal")  # fmt: skip
    reading("k8", "y", "2026-11-02T11:59:30Z", 1.0)
    add_alarm(con, "k9-0", "k9", "orange", "2026-11-02T10:00:00Z")
    return con


def test_risk(risk_db: duckdb.DuckDBPyConnection) -> None:
    df = reports.risk(risk_db, since_ms=t("2026-11-02T00:00:00Z"), until_ms=t("2026-11-03T00:00:00Z"),
                      as_of_ms=t("2026-11-02T12:00:00Z"))  # fmt: skip
    got = rows(df)
    base = {"plant": "hazchem", "district": "d1", "failed_interlocks": 0, "overdue_red": 0, "overdue_orange": 0,
                "open_red_orange": 0, "bypass_tags": [], "flood_intervals": 0, "alarms": 0, "stale_tags": 0}  # fmt: skip
    expected = [
        base | {"site": "k1", "plant": "aluminum", "level": "high", "failed_interlocks": 2, "alarms": 1,
                    "reasons": ["2 failed interlock(s)"]},
        base | {"site": "k2", "level": "high", "overdue_red": 1, "alarms": 1, "reasons": ["1 overdue red alarm(s)"]},
        base | {"site": "k3", "level": "high", "open_red_orange": 1, "bypass_tags": ["sis_bypass_active"], "alarms": 1,
                    "stale_tags": 1, "reasons": ["bypass active: sis_bypass_active", "1 open red/orange alarm(s)",
                                           "1 stale tag(s)"]},
        base | {"site": "k9", "level": "elevated", "overdue_orange": 1, "alarms": 1,
                    "reasons": ["1 overdue orange alarm(s)"]},
        base | {"site": "k4", "plant": None, "district": None, "level": "elevated", "bypass_tags": ["sis_bypass_active"],
                    "stale_tags": 2, "reasons": ["bypass active: sis_bypass_active", "2 stale tag(s)"]},
        base | {"site": "k5", "level": "elevated", "flood_intervals": 1, "alarms": 11,
                    "reasons": ["alarm flood in 1 ten-minute interval(s)"]},
        base | {"site": "k6", "level": "medium", "open_red_orange": 1, "alarms": 1,
                    "reasons": ["1 open red/orange alarm(s)"]},
        base | {"site": "k7", "plant": None, "district": None, "level": "medium", "stale_tags": 1,
                    "reasons": ["1 stale tag(s)"]},
        base | {"site": "k8", "level": "low", "alarms": 1, "reasons": []},
    ]  # fmt: skip
    assert [r["site"] for r in got] == [e["site"] for e in expected]
    for a, e in zip(got, expected, strict=True):
        assert_row(a, e)


def test_risk_load_reason() -> None:
    # 7 alarms in a one-hour window = 1.17 per 10 min on average: more than 1 -> medium
    con = _db()
    for i in range(7):
        add_alarm(con, f"m{i}", "m", "blue", f"2026-11-02T00:{i * 8:02d}:00Z", cleared="2026-11-02T01:00:00Z",
                  closed="2026-11-02T01:00:00Z", disposition="process_normal")  # fmt: skip
    [row] = rows(reports.risk(con, since_ms=t("2026-11-02T00:00:00Z"), until_ms=t("2026-11-02T01:00:00Z"),
                              as_of_ms=t("2026-11-02T01:00:00Z")))  # fmt: skip
    assert row["level"] == "medium"
    assert row["reasons"] == ["alarm load 1.17 per 10 min"]


# ---------------------------------------------------------------------------------------------
# Free SQL


@pytest.fixture()
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "history.duckdb"
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    add_alarm(con, "x1", "s1", "red", "2026-11-02T00:00:00Z")
    con.close()
    return path


REFUSED = [
    "COPY alarms TO 'x.csv'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "ATTACH 'other.duckdb'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "DELETE FROM alarms",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; SELECT 2",
    "SELECT * FROM 'https://example.com/x.csv'",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_run_sql_refuses(db_file: Path, sql: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SqlRefused, match="refused"):
        reports.run_sql(db_file, sql)
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("sql", REFUSED)
def test_run_sql_refuses_on_a_live_connection(
    sql: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    con = _db()
    add_alarm(con, "x1", "s1", "red", "2026-11-02T00:00:00Z")
    with pytest.raises(SqlRefused, match="refused"):
        reports.run_sql(con, sql)
    assert not (tmp_path / "x.csv").exists()
    assert con.execute("SELECT count(*) FROM alarms").fetchone() == (1,)


def test_guarded_connection_itself_refuses(db_file: Path, tmp_path: Path) -> None:
    # the DuckDB settings hold even without the statement-kind check in front of them
    con = reports.guarded_connect(db_file)
    try:
        for sql in (f"COPY alarms TO '{tmp_path / 'x.csv'}'", "SELECT * FROM read_csv('/etc/passwd')",
                    f"ATTACH '{tmp_path / 'o.duckdb'}'", "INSTALL httpfs", "SET enable_external_access = true",
                    "INSERT INTO alarms SELECT * FROM alarms"):  # fmt: skip
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    finally:
        con.close()
    assert not (tmp_path / "x.csv").exists()


def test_run_sql_allows_select(db_file: Path) -> None:
    df = reports.run_sql(db_file, "SELECT site, count(*) AS n FROM alarms GROUP BY site")
    assert rows(df) == [{"site": "s1", "n": 1}]
    con = _db()
    add_alarm(con, "x1", "s1", "red", "2026-11-02T00:00:00Z")
    add_alarm(con, "x2", "s1", "blue", "2026-11-02T00:00:00Z")
    df = reports.run_sql(
        con, "WITH a AS (SELECT * FROM alarms) SELECT count(*) AS n FROM a JOIN alarms USING (alarm_id)"
    )
    assert rows(df) == [{"n": 2}]


def test_run_sql_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SqlRefused, match="no DuckDB file"):
        reports.run_sql(tmp_path / "none.duckdb", "SELECT 1")


# ---------------------------------------------------------------------------------------------
# render, parse_time, registry


def test_render_formats(history: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    df = reports.closure(
        history, since_ms=t(SINCE), until_ms=t(UNTIL), as_of_ms=t(AS_OF), by=("site", "week")
    )
    data = json.loads(reports.render(df, "json") or "")
    assert isinstance(data, list) and len(data) == 5
    assert list(data[0]) == ["site", "week", *reports.CLOSURE_COLUMNS]
    assert data[0]["site"] == "s1" and data[0]["week"] == "2026-10-26" and data[0]["raised"] == 2
    assert data[1]["median_close_s"] is None
    csv = reports.render(df, "csv") or ""
    assert csv.splitlines()[0] == ",".join(["site", "week", *reports.CLOSURE_COLUMNS])
    assert csv.splitlines()[1].startswith("s1,2026-10-26,2,2,0,2,1.0,")
    table = reports.render(df, "table") or ""
    assert "s1" in table and "median_ack_s" in table
    nr = reports.non_responding(history, since_ms=t(SINCE), until_ms=t(UNTIL), as_of_ms=t(AS_OF))
    assert "a4; a2; a5" in (reports.render(nr, "csv") or "")
    assert json.loads(reports.render(nr, "json") or "")[0]["worst_alarms"] == ["a4", "a2", "a5"]
    out = tmp_path / "c.parquet"
    assert reports.render(df, "parquet", str(out)) is None
    assert pl.read_parquet(out).shape == df.shape
    with pytest.raises(ValueError, match="output"):
        reports.render(df, "parquet", None)
    with pytest.raises(ValueError):
        reports.render(df, "xml", None)
    assert reports.render(df, "csv", str(tmp_path / "c.csv")) is None
    assert (tmp_path / "c.csv").read_text() == csv


def test_render_times_in_utc() -> None:
    import datetime as dt

    df = pl.DataFrame({"at": [dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)], "x": [float("nan")]})
    assert json.loads(reports.render(df, "json") or "") == [{"at": "2026-11-02T08:00:00Z", "x": None}]
    assert "2026-11-02T08:00:00.000Z" in (reports.render(df, "csv") or "")


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-11-28T08:00:00.250+08:00", 1795824000250),
        ("2026-11-28T00:00:00.250Z", 1795824000250),
        ("2026-11-28T00:00:00z", 1795824000000),
        ("1795824000250", 1795824000250),
        ("2026-11-28T00:00:00.0009Z", 1795824000000),  # sub-millisecond truncated
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("text", ["2026-11-28T08:00:00", "2026-11-28", "yesterday", ""])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_registry_and_window_checks(history: duckdb.DuckDBPyConnection) -> None:
    assert set(reports.REPORTS) == {"closure", "non-responding", "bad-actors", "load", "online", "risk"}
    with pytest.raises(ValueError, match="empty window"):
        reports.closure(history, since_ms=t(UNTIL), until_ms=t(SINCE), as_of_ms=t(AS_OF))
    with pytest.raises(ValueError):
        reports.bad_actors(history, since_ms=t(SINCE), until_ms=t(UNTIL), limit=0)


@pytest.mark.parametrize(
    "by", [(), ("site",), ("site", "week"), ("severity", "day"), ("rule", "month", "plant")], ids=str
)
def test_closure_quantiles_equal_duckdb_quantile_cont(
    history: duckdb.DuckDBPyConnection, monkeypatch: pytest.MonkeyPatch, by: tuple[str, ...]
) -> None:
    # the numpy quantiles (the fast path) against DuckDB's own quantile_cont (the hash-collision fallback)
    for as_of in (AS_OF, UNTIL):
        args = {"since_ms": t(SINCE), "until_ms": t(UNTIL), "as_of_ms": t(as_of), "by": by}
        fast = reports.closure(history, **args)
        monkeypatch.setattr(reports, "_SQL_QUANTILES", True)
        slow = reports.closure(history, **args)
        monkeypatch.setattr(reports, "_SQL_QUANTILES", False)
        assert fast.columns == slow.columns
        for a, e in zip(rows(fast), rows(slow), strict=True):
            assert_row(a, e)


def test_group_quantiles_edge_cases() -> None:
    import numpy as np

    gid = np.array([0, 0, 0, 2, 2, 1], dtype=np.int64)
    none = reports._NONE
    # group 0: 1 s, 3 s, 2 s -> median 2, p90 pos 1.8 -> 2 + .8 = 2.8; group 1: only "no value"; group 2:
    # a negative duration (clock skew) takes the lexsort path: -1 s and 4 s -> median 1.5, p90 3.5
    med, p90 = reports._group_quantiles(gid, np.array([1000, 3000, 2000, -1000, 4000, none]), 3)
    assert med[0] == 2.0 and p90[0] == pytest.approx(2.8) and math.isnan(med[1]) and med[2] == 1.5
    assert p90[2] == pytest.approx(3.5)
    med, p90 = reports._group_quantiles(gid, np.full(6, none), 3)
    assert all(math.isnan(x) for x in (*med, *p90))


def test_reports_follow_the_callers_catalog() -> None:
    # the engine's store works in an ATTACHed catalog; reports on its connection must read that one
    con = duckdb.connect(":memory:")
    con.execute("ATTACH ':memory:' AS store")
    con.execute("USE store")
    con.execute(SCHEMA)
    add_alarm(con, "x1", "s1", "red", "2026-11-02T00:00:00Z", acked="2026-11-02T00:01:00Z")
    window = {"since_ms": t("2026-11-01T00:00:00Z"), "until_ms": t("2026-11-03T00:00:00Z")}
    [row] = rows(reports.closure(con, **window, as_of_ms=t("2026-11-03T00:00:00Z"), by=("site",)))
    assert (row["site"], row["raised"], row["overdue"], row["median_ack_s"]) == ("s1", 1, 1, 60.0)
    assert reports.load(con, **window, as_of_ms=t("2026-11-03T00:00:00Z"))["max_per_10min"].to_list() == [1]
    assert rows(reports.run_sql(con, "SELECT count(*) AS n FROM alarms")) == [{"n": 1}]
    assert con.execute("SELECT current_database()").fetchall() == [("store",)]


def test_risk_interlock_named_by_the_raised_event() -> None:
    # a rule not named interlock*, whose raised event says the interlock failed: 1 failed interlock;
    # an event outside the window or of another kind does not count
    con = _db()
    add_alarm(con, "i1", "k", "red", "2026-11-02T10:00:00Z", rule="cw_gate_check", cleared="2026-11-02T10:05:00Z",
              closed="2026-11-02T10:10:00Z", disposition="real_handled")  # fmt: skip
    add_alarm(con, "i2", "k", "red", "2026-11-02T11:00:00Z", rule="cw_gate_check", cleared="2026-11-02T11:05:00Z",
              closed="2026-11-02T11:10:00Z", disposition="real_handled")  # fmt: skip
    events = [("i1", "2026-11-02T10:00:00Z", "raised", "interlock_failed"),
              ("i2", "2026-11-02T11:00:00Z", "raised", ""),
              ("i2", "2026-11-02T11:01:00Z", "commented", "interlock checked")]  # fmt: skip
    for alarm_id, ts, kind, detail in events:
        con.execute("INSERT INTO alarm_events (alarm_id, ts, kind, actor, detail) VALUES (?, ?, ?, 'engine', ?)",
                    [alarm_id, _ts(t(ts)), kind, detail])  # fmt: skip
    [row] = rows(reports.risk(con, since_ms=t("2026-11-02T00:00:00Z"), until_ms=t("2026-11-03T00:00:00Z"),
                              as_of_ms=t("2026-11-02T12:00:00Z")))  # fmt: skip
    assert (row["level"], row["failed_interlocks"], row["reasons"]) == ("high", 1, ["1 failed interlock(s)"])
