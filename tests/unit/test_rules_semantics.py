"""Table-driven edge cases of the rule semantics (product.md §5, engine.py docstring).

Each case: rules of one site, readings (tag, ts_ms, value[, quality]) cut into batches, and the expected
signals as (kind, ts_ms) pairs. Every case also runs through the scalar reference, so the two can never
drift apart on these edges.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from earlywarn.model import ReadingBatch, Severity, SignalKind
from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.types import Cmp, RuleKind, RuleSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rules_reference import ReferenceEngine

R, C = "raise", "clear"


def rule(kind: RuleKind, **kw: Any) -> RuleSpec:
    return RuleSpec(id=kw.pop("id", "r"), kind=kind, plant="t", severity=kw.pop("severity", Severity.RED), **kw)


def hi(**kw: Any) -> RuleSpec:
    return rule(RuleKind.THRESHOLD, tag="v", op=kw.pop("op", ">"), limit=kw.pop("limit", 5.0), **kw)


def batch(rows: list[tuple[Any, ...]]) -> ReadingBatch:
    return ReadingBatch.from_columns(
        ["s"] * len(rows), [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        [r[3] if len(r) > 3 else 0 for r in rows],
    )


def run(rules: list[RuleSpec], batches: list[list[tuple[Any, ...]]], now: str = "replay",
        tick: int | None = None) -> list[tuple[str, int]]:
    eng, ref = RuleEngine({"s": rules}), ReferenceEngine({"s": rules})
    got: list[tuple[str, int]] = []
    want: list[tuple[str, int]] = []
    for rows in batches:
        now_ms = max((r[1] for r in rows), default=0) if now == "replay" else 0
        got += [(str(s.kind), s.ts_ms) for s in eng.evaluate(batch(rows), now_ms).signals]
        tuples = [("s", r[0], r[1], r[2], r[3] if len(r) > 3 else 0) for r in rows]
        want += [(str(s.kind), s.ts_ms) for s in ref.evaluate(tuples, now_ms)[0]]
    if tick is not None:
        got += [(str(s.kind), s.ts_ms) for s in eng.tick(tick)]
        want += [(str(s.kind), s.ts_ms) for s in ref.tick(tick)]
    assert got == want, "engine and reference disagree"
    return got


CASES: list[tuple[str, list[RuleSpec], list[list[tuple[Any, ...]]], list[tuple[str, int]]]] = [
    ("on-delay exactly met", [hi(on_delay_ms=10)], [[("v", 0, 6.0), ("v", 10, 6.0)]], [(R, 10)]),
    ("on-delay one ms short", [hi(on_delay_ms=10)], [[("v", 0, 6.0), ("v", 9, 6.0)]], []),
    ("run broken one reading before the delay", [hi(on_delay_ms=10)],
     [[("v", 0, 6.0), ("v", 5, 6.0), ("v", 9, 5.0), ("v", 10, 6.0), ("v", 19, 6.0), ("v", 20, 6.0)]], [(R, 20)]),
    ("on-delay run spans batches", [hi(on_delay_ms=10)], [[("v", 0, 6.0)], [("v", 5, 6.0)], [("v", 10, 6.0)]],
     [(R, 10)]),
    ("on_delay 0: first true reading raises", [hi()], [[("v", 0, 4.0), ("v", 1, 5.5)]], [(R, 1)]),
    ("deadband: clear exactly at limit - db (>)", [hi(deadband=1.0)], [[("v", 0, 6.0), ("v", 1, 4.5), ("v", 2, 4.0)]],
     [(R, 0), (C, 2)]),
    ("deadband: >= needs strictly below limit - db", [hi(op=">=", deadband=1.0)],
     [[("v", 0, 5.0), ("v", 1, 4.0), ("v", 2, 3.5)]], [(R, 0), (C, 2)]),
    ("deadband: < clears exactly at limit + db", [hi(op="<", deadband=1.0)],
     [[("v", 0, 4.0), ("v", 1, 5.5), ("v", 2, 6.0)]], [(R, 0), (C, 2)]),
    ("deadband zone breaks the off-delay run", [hi(deadband=1.0, off_delay_ms=10)],
     [[("v", 0, 6.0), ("v", 1, 3.0), ("v", 5, 4.5), ("v", 6, 3.0), ("v", 15, 3.0), ("v", 16, 3.0)]],
     [(R, 0), (C, 16)]),
    ("off-delay exactly met", [hi(off_delay_ms=10)], [[("v", 0, 6.0), ("v", 1, 4.0), ("v", 11, 4.0)]],
     [(R, 0), (C, 11)]),
    ("gate turning false while active clears at the next reading of the tag",
     [hi(when=Cmp("g", "==", 1.0))],
     [[("g", 0, 1.0), ("v", 1, 6.0), ("g", 2, 0.0), ("v", 3, 6.0), ("g", 4, 1.0), ("v", 5, 6.0)]],
     [(R, 1), (C, 3), (R, 5)]),
    ("gate without a value is false", [hi(when=Cmp("g", "!=", 1.0))], [[("v", 1, 6.0), ("g", 2, 0.0), ("v", 3, 6.0)]],
     [(R, 3)]),
    ("bad quality readings do not break a run", [hi(on_delay_ms=10)],
     [[("v", 0, 6.0), ("v", 5, 1.0, 2), ("v", 7, None), ("v", 10, 6.0)]], [(R, 10)]),
    ("late reading ignored", [hi()], [[("v", 10, 4.0)], [("v", 5, 9.0)], [("v", 11, 4.0)]], []),
    ("duplicate ignored (first of equal timestamps wins)", [hi()], [[("v", 10, 4.0), ("v", 10, 9.0)]], []),
    ("stale raised at last_ts + timeout during a replay", [rule(RuleKind.STALE, tag="*", timeout_ms=30)],
     [[("v", 0, 1.0), ("v", 20, 1.0), ("v", 100, 1.0)]], [(R, 50), (C, 100)]),
    ("stale gap exactly the timeout is not stale", [rule(RuleKind.STALE, tag="v", timeout_ms=30)],
     [[("v", 0, 1.0), ("v", 30, 1.0)]], []),
    ("stale '*' is the site: one alarm when every tag goes silent, cleared by any tag",
     [rule(RuleKind.STALE, tag="*", timeout_ms=30)],
     [[("v", 0, 1.0), ("w", 5, 1.0), ("x", 10, 1.0), ("w", 60, 1.0), ("v", 61, 1.0)]], [(R, 40), (C, 60)]),
    ("stale '*': one tag still reporting keeps the site alive", [rule(RuleKind.STALE, tag="*", timeout_ms=30)],
     [[("v", 0, 1.0), ("w", 20, 1.0), ("w", 45, 1.0), ("w", 70, 1.0), ("v", 100, 1.0)]], []),
    ("stale '*' raised by the replay clock, cleared by the site's next reading",
     [rule(RuleKind.STALE, tag="*", timeout_ms=30)],
     [[("v", 0, 1.0), ("w", 2, 1.0)], [("w", 40, 1.0)]], [(R, 32), (C, 40)]),
    ("stale '*' gated: gate false at the gap's start, no alarm",
     [rule(RuleKind.STALE, tag="*", timeout_ms=30, when=Cmp("run", "==", 1.0))],
     [[("run", 0, 0.0), ("v", 1, 1.0), ("v", 50, 1.0), ("run", 51, 1.0), ("v", 52, 1.0), ("v", 90, 1.0)]],
     [(R, 82), (C, 90)]),
    ("stale per tag stays per tag", [rule(RuleKind.STALE, tag="v", timeout_ms=30)],
     [[("v", 0, 1.0), ("w", 10, 1.0), ("w", 20, 1.0), ("w", 40, 1.0), ("v", 41, 1.0)]], [(R, 30), (C, 41)]),
    ("stale across batches: another tag of the site moves the clock", [rule(RuleKind.STALE, tag="v", timeout_ms=30)],
     [[("v", 0, 1.0)], [("w", 31, 1.0)], [("v", 40, 1.0)]], [(R, 30), (C, 40)]),
    ("interlock effect just inside within", [rule(RuleKind.INTERLOCK, trigger=Cmp("a", "==", 1.0),
                                                  expect=Cmp("b", "==", 1.0), within_ms=10)],
     [[("b", 0, 0.0), ("a", 0, 1.0), ("b", 10, 1.0), ("a", 20, 1.0)]], []),
    ("interlock effect just outside within", [rule(RuleKind.INTERLOCK, trigger=Cmp("a", "==", 1.0),
                                                   expect=Cmp("b", "==", 1.0), within_ms=10)],
     [[("b", 0, 0.0), ("a", 0, 1.0), ("b", 11, 1.0)]], [(R, 10), (C, 11)]),
    ("interlock: expect already true at the edge", [rule(RuleKind.INTERLOCK, trigger=Cmp("a", "==", 1.0),
                                                          expect=Cmp("b", "==", 1.0), within_ms=0)],
     [[("b", 0, 1.0), ("a", 5, 1.0), ("a", 50, 1.0)]], []),
    ("rate over the window", [rule(RuleKind.RATE, tag="v", op=">", limit=60.0, window_ms=2000)],
     [[("v", 0, 0.0), ("v", 1000, 0.5), ("v", 2000, 2.5), ("v", 3000, 2.0)]], [(R, 2000), (C, 3000)]),
    ("rate: reference is the latest reading at or before t - window (not the earliest inside it)",
     [rule(RuleKind.RATE, tag="v", op=">", limit=60.0, window_ms=2000)],
     # at 3500 the reference is the reading at 1000 (0.0): 1.0 over 2.5 s = 24/min, not the 2.0 a
     # one-second step from 2500 would give (1.0 over 1 s = 60/min... and 120/min from 2999)
     [[("v", 0, 0.0), ("v", 1000, 0.0), ("v", 2999, 0.0), ("v", 3500, 1.0), ("v", 5500, 4.0)]], [(R, 5500)]),
    ("rate: not evaluable until a reading a whole window back exists",
     [rule(RuleKind.RATE, tag="v", op=">", limit=60.0, window_ms=2000)],
     [[("v", 0, 0.0), ("v", 500, 9.0), ("v", 1999, 9.0), ("v", 2000, 9.0)]], [(R, 2000)]),
    ("flatline only once the window is covered", [rule(RuleKind.FLATLINE, tag="v", window_ms=20, epsilon=0.0)],
     [[("v", 0, 3.0), ("v", 10, 3.0), ("v", 20, 3.0), ("v", 30, 3.5)]], [(R, 20), (C, 30)]),
    ("vote 2oo3", [rule(RuleKind.VOTE, tags=("a", "b", "c"), k=2, op=">=", limit=5.0)],
     [[("a", 0, 5.0), ("b", 1, 4.0), ("c", 2, 6.0), ("a", 3, 1.0)]], [(R, 2), (C, 3)]),
    ("quality: bad code, then out of range", [rule(RuleKind.QUALITY, tag="v", range=(0.0, 10.0))],
     [[("v", 0, 1.0, 2), ("v", 1, 5.0), ("v", 2, 11.0)]], [(R, 0), (C, 1), (R, 2)]),
]


@pytest.mark.parametrize(("name", "rules", "batches", "expected"), CASES, ids=[c[0] for c in CASES])
def test_semantics(name: str, rules: list[RuleSpec], batches: list[list[tuple[Any, ...]]],
                   expected: list[tuple[str, int]]) -> None:
    assert run(rules, batches) == expected


def test_stale_tick_strictly_after_timeout() -> None:
    st = [rule(RuleKind.STALE, tag="v", timeout_ms=30)]
    assert run(st, [[("v", 0, 1.0)]], now="none", tick=30) == []
    assert run(st, [[("v", 0, 1.0)]], now="none", tick=31) == [(R, 30)]


def test_interlock_deadline_passed_by_tick() -> None:
    il = [rule(RuleKind.INTERLOCK, trigger=Cmp("a", "==", 1.0), expect=Cmp("b", "==", 1.0), within_ms=10)]
    assert run(il, [[("a", 0, 1.0)]], now="none", tick=10) == []
    assert run(il, [[("a", 0, 1.0)]], now="none", tick=11) == [(R, 10)]


def _trend(min_r2: float) -> RuleSpec:
    return rule(RuleKind.TREND, tag="v", op=">", limit=10.0, window_ms=5000, horizon_ms=5000, min_r2=min_r2)


def test_trend_rising_line_forecasts_the_crossing() -> None:
    rows = [("v", 1000 * i, 1.0 * i) for i in range(8)]  # forecast at t+5 s = v + 5
    assert run([_trend(0.9)], [rows]) == [(R, 6000)]  # at 5 s: 5 + 5 = 10 is not > 10; at 6 s: 11 is


def test_trend_not_evaluated_before_the_history_covers_the_window() -> None:
    # a steep line from the first reading: a partial window would forecast the crossing at once
    rows = [("v", 1000 * i, 3.0 * i) for i in range(8)]
    assert run([_trend(0.9)], [rows]) == [(R, 5000)]  # window 5 s: first evaluable at t = 5 s


def test_stale_site_backlog_after_an_outage_raises_once() -> None:
    """Live: the wall clock passes the site's last reading + timeout (raise), then the gateway flushes its
    backlog with the original timestamps in several batches: the first reading clears, the rest arrive
    after the clock that saw them and are not stale again (domain.md §4a.6: no retroactive duplicates)."""
    r = [rule(RuleKind.STALE, tag="*", timeout_ms=30), rule(RuleKind.STALE, id="v_stale", tag="v", timeout_ms=30)]
    eng, ref = RuleEngine({"s": r}), ReferenceEngine({"s": r})
    steps: list[tuple[list[tuple[Any, ...]], int]] = [
        ([("v", 0, 1.0), ("w", 0, 1.0)], 1),
        ([], 100),  # the outage: a tick on the wall clock
        ([("v", 10, 1.0), ("w", 10, 1.0), ("v", 20, 1.0)], 101),  # backlog, batch 1
        ([("w", 20, 1.0), ("v", 30, 1.0), ("w", 30, 1.0)], 102),  # backlog, batch 2
        ([("v", 101, 1.0), ("w", 101, 1.0)], 103),  # live again
    ]
    got, want = [], []
    for rows, now in steps:
        got += [(s.rule_id, s.tag, str(s.kind), s.ts_ms) for s in eng.evaluate(batch(rows), now).signals]
        want += [(s.rule_id, s.tag, str(s.kind), s.ts_ms)
                 for s in ref.evaluate([("s", *x, 0) for x in rows], now)[0]]
    assert got == want
    assert got == [("r", "*", R, 30), ("v_stale", "v", R, 30), ("r", "*", C, 10), ("v_stale", "v", C, 10)]


def test_trend_flat_data_never_raises() -> None:
    assert run([_trend(0.0)], [[("v", 1000 * i, 20.0) for i in range(8)]]) == []


def test_trend_noisy_data_below_min_r2_does_not_raise() -> None:
    noisy = [0.0, 9.0, 1.0, 9.5, 0.5, 9.0, 1.0, 9.5]
    assert run([_trend(0.9)], [[("v", 1000 * i, x) for i, x in enumerate(noisy)]]) == []
    assert run([_trend(0.0)], [[("v", 1000 * i, x) for i, x in enumerate(noisy)]]) != []


def test_counts_late_and_evaluated_and_ignores_sites_without_rules() -> None:
    eng = RuleEngine({"s": [hi()]})
    b1 = ReadingBatch.from_columns(["s", "s", "other"], ["v", "v", "v"], [10, 10, 5], [1.0, 2.0, 9.0], [0, 0, 0])
    res = eng.evaluate(b1, 10)
    assert (res.late, res.evaluated) == (1, 1)
    res = eng.evaluate(ReadingBatch.from_columns(["s"], ["v"], [9], [9.0], [0]), 10)
    assert (res.late, res.evaluated, res.signals) == (1, 0, [])


def test_signal_fields() -> None:
    r = hi(id="temp_hi", message="too hot", severity=Severity.ORANGE, on_delay_ms=0)
    (sig,) = RuleEngine({"s": [r]}).evaluate(batch([("v", 7, 6.5)]), 7).signals
    assert (sig.site, sig.tag, sig.rule_id, sig.severity, sig.kind, sig.ts_ms, sig.value, sig.message) == (
        "s", "v", "temp_hi", Severity.ORANGE, SignalKind.RAISE, 7, 6.5, "too hot")


def test_sensor_lookup_by_hash_equals_the_exact_join() -> None:
    """20 000 sensors: the two-choice hash table (plus its overflow table) maps like the string join."""
    import polars as pl

    tags = [f"t{i}" for i in range(2000)]
    eng = RuleEngine({f"s{k}": [hi()] for k in range(10)})
    sites = [f"s{k}" for k in range(10) for _ in tags] + ["nobody"] * 5
    frame = pl.DataFrame({"site": sites, "tag": tags * 10 + tags[:5]})
    first = eng._map_sids(frame)  # registers every pair
    again = eng._map_sids(frame.reverse()).tolist()[::-1]
    assert again == first.tolist() == eng._map_sids_exact(frame).tolist()
    assert len(set(first.tolist())) == len(frame)
    assert len(eng._ovf_h) > 0  # the side table is exercised at this load
    eng._hash_exact_only = True  # what a 64-bit collision would switch on
    assert eng._map_sids(frame).tolist() == first.tolist()
