"""RuleEngine._asof (the latest good value of (site, tag) at or before a row of the site stream) against a
plain per-row scalar as-of, on random streams: several sites, bad and null readings, late readings,
values carried across batches, queries in any order.

`_asof` answers only the queried rows (a binary search in the good rows of the tag); the scalar walks back
from the row through the site's stream of the batch and falls back to the last good value of the sensor
in earlier batches. Every call of `_evaluate_points` is checked on every row and every expression tag.
"""

from __future__ import annotations

import math
from typing import Any

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

from earlywarn.model import ReadingBatch, Severity
from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.types import And, Cmp, RuleKind, RuleSpec

SITES = ("s1", "s2", "s3", "s4")
TAGS = ("a", "b", "c")  # read by expressions: in the site stream
PLAIN = ("d",)  # not read by any expression


def pack() -> list[RuleSpec]:
    return [
        RuleSpec(id="x", kind=RuleKind.EXPR, plant="t", severity=Severity.RED,
                 expr=And((Cmp("a", ">", 2.0), Cmp("b", "<", 5.0)))),
        RuleSpec(id="hi_d", kind=RuleKind.THRESHOLD, plant="t", severity=Severity.BLUE, tag="d", op=">",
                 limit=3.0,
                 when=Cmp("c", ">=", 1.0)),
    ]


def scalar_asof(site: np.ndarray, tag: np.ndarray, val: np.ndarray, good: np.ndarray, q: int, ti: int,
                carry: float) -> float:
    """Walk back from row q inside its site's rows: the first good row of the tag, else the carry."""
    r = q
    while r >= 0 and site[r] == site[q]:
        if good[r] and tag[r] == ti:
            return float(val[r])
        r -= 1
    return carry


class Checked(RuleEngine):
    """Checks `_asof` after every batch, then records the batch's good values as the next carries."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.known: dict[tuple[int, int], float] = {}  # (site index, tag code) -> last good value
        self.checked = 0

    def _evaluate_points(self, b: Any, clock_prev: int, out: list[Any]) -> None:
        super()._evaluate_points(b, clock_prev, out)
        rows = b.site_rows()
        n = len(rows.ts)
        rng = np.random.default_rng(n)
        for name in (*TAGS, "zz"):
            ti = self._tag_idx.get(name, -1)
            some = rng.permutation(n)[: n // 3]
            for pts in (np.arange(n), rng.permutation(n), some, np.zeros(0, np.int64)):
                got = self._asof(b, name, pts)
                want = [scalar_asof(rows.site, rows.tag, rows.val, rows.good, int(q), ti,
                                    self.known.get((int(rows.site[q]), ti), math.nan)) for q in pts]
                assert len(got) == len(want)
                for g, w, q in zip(got.tolist(), want, pts.tolist()):
                    assert (math.isnan(g) and math.isnan(w)) or g == w, (name, q, g, w)
                self.checked += len(pts)
        for r in range(n):  # rows are in stream order per site: the last good one wins
            if rows.good[r]:
                self.known[(int(rows.site[r]), int(rows.tag[r]))] = float(rows.val[r])


@st.composite
def batches(draw: Any) -> list[list[tuple[Any, ...]]]:
    n = draw(st.integers(1, 120))
    rs = []
    ts = 0
    for _ in range(n):
        ts += draw(st.sampled_from((0, 5, 5, 10)))
        back = draw(st.sampled_from((0,) * 8 + (7, 30)))  # a late / out-of-order reading now and then
        value = None if draw(st.integers(0, 10)) == 0 else draw(st.integers(0, 8)) * 1.0
        site, tag = draw(st.sampled_from((*SITES, "sx"))), draw(st.sampled_from(TAGS + PLAIN))
        rs.append((site, tag, max(0, ts - back),
                   value, draw(st.sampled_from((0,) * 8 + (1, 2)))))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    out, prev = [], 0
    for c in [*cuts, n]:
        out.append(draw(st.permutations(rs[prev:c])) if draw(st.booleans()) else rs[prev:c])
        prev = c
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bs=batches())
def test_asof_equals_a_scalar_walk_back(bs: list[list[tuple[Any, ...]]]) -> None:
    p = pack()
    eng = Checked({s: p for s in SITES})
    for rs in bs:
        frame = ReadingBatch.from_columns([r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs],
                                          [r[3] for r in rs], [r[4] for r in rs])
        eng.evaluate(frame, 0)


def test_asof_is_exercised() -> None:
    p = pack()
    eng = Checked({s: p for s in SITES})
    rs = [("s1", "a", 5, 3.0, 0), ("s2", "a", 6, 1.0, 0), ("s1", "b", 7, 4.0, 2), ("s1", "a", 8, None, 0)]
    eng.evaluate(ReadingBatch.from_columns(*map(list, zip(*rs))), 0)
    eng.evaluate(ReadingBatch.from_columns(["s1", "s2"], ["b", "b"], [9, 9], [1.0, 2.0], [0, 0]), 0)
    assert eng.checked > 0
    assert eng.known  # carries recorded and used in the second batch
