"""The windowed history (rate, flatline, trend) kept per sensor in regions of flat arrays: regions that
grow, compact in place, move and get repacked over many batches give exactly what the scalar reference
gives, whatever the cut into batches, and across a snapshot / restore."""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earlywarn.model import ReadingBatch, Severity, Signal
from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.state import H_REPACK_MIN, EngineState, bisect
from earlywarn.rules.types import RuleKind, RuleSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rules_reference import ReferenceEngine

SEV = Severity.ORANGE


def pack(trend: bool) -> list[RuleSpec]:
    rules = [
        RuleSpec(id="roc_a", kind=RuleKind.RATE, plant="t", severity=SEV, tag="a", op=">", limit=300.0,
                 deadband=30.0, window_ms=30),
        RuleSpec(id="roc_a0", kind=RuleKind.RATE, plant="t", severity=SEV, tag="a", op="<", limit=-150.0,
                 window_ms=0, on_delay_ms=10),
        RuleSpec(id="flat_b", kind=RuleKind.FLATLINE, plant="t", severity=SEV, tag="b", window_ms=40,
                 epsilon=0.5),
        RuleSpec(id="roc_b", kind=RuleKind.RATE, plant="t", severity=SEV, tag="b", op="<", limit=-200.0,
                 window_ms=120),
        RuleSpec(id="hi_c", kind=RuleKind.THRESHOLD, plant="t", severity=SEV, tag="c", op=">", limit=6.0),
    ]
    if trend:
        rules.append(RuleSpec(id="trend_b", kind=RuleKind.TREND, plant="t", severity=SEV, tag="b", op=">",
                              limit=8.0, window_ms=60, horizon_ms=50, min_r2=0.5))
    return rules


def stream(n_sites: int, n: int, seed: int) -> list[tuple[Any, ...]]:
    """Random walks on a 0.5 grid, ts on a 5 ms grid; each sensor's reading rate changes over time (bursts
    then sparse stretches), so its window holds few readings, then many, then few again."""
    rng = np.random.default_rng(seed)
    sensors = [(f"s{i}", t) for i in range(n_sites) for t in ("a", "b", "c")]
    level = {k: int(rng.integers(0, 20)) for k in sensors}
    rows = []
    ts = 0
    for k in range(n):
        phase = (k // 600) % 3
        ts += int(rng.choice([0, 5] if phase == 0 else [5, 10, 20] if phase == 1 else [0, 0, 5]))
        key = sensors[int(rng.integers(0, len(sensors)))]
        level[key] = int(np.clip(level[key] + rng.integers(-2, 3), 0, 20))
        value = None if rng.random() < 0.02 else level[key] * 0.5
        rows.append((key[0], key[1], ts, value, 2 if rng.random() < 0.02 else 0))
    return rows


def to_batch(rs: list[tuple[Any, ...]]) -> ReadingBatch:
    return ReadingBatch.from_columns([r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs],
                                     [r[3] for r in rs], [r[4] for r in rs])


def norm(sigs: list[Signal]) -> list[tuple[Any, ...]]:
    return sorted(((s.ts_ms, s.site, s.tag, s.rule_id, str(s.kind), "nan" if math.isnan(s.value) else s.value)
                   for s in sigs), key=str)


def cuts(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted({int(x) for x in rng.integers(0, n, 60)} | {0, n})


@pytest.mark.parametrize("seed", [1, 2])
def test_history_regions_match_the_reference_over_many_batches(seed: int) -> None:
    site_rules = {f"s{i}": pack(trend=False) for i in range(120)}
    rows = stream(120, 6000, seed)
    ref = ReferenceEngine(site_rules)
    eng = RuleEngine(site_rules)
    got, want = [], []
    c = cuts(len(rows), seed)
    for k, (a, z) in enumerate(itertools.pairwise(c)):
        if k == len(c) // 2:
            eng = RuleEngine.restore(site_rules, eng.snapshot())
        rs = rows[a:z]
        now = max(r[2] for r in rs)
        got += eng.evaluate(to_batch(rs), now).signals
        want += ref.evaluate(rs, now)[0]
    assert want
    assert norm(got) == norm(want)


def test_history_regions_any_split_with_trend() -> None:
    site_rules = {f"s{i}": pack(trend=True) for i in range(60)}
    rows = stream(60, 4000, 5)
    whole = RuleEngine(site_rules).evaluate(to_batch(rows), rows[-1][2]).signals
    eng = RuleEngine(site_rules)
    many = []
    c = cuts(len(rows), 9)
    for a, z in itertools.pairwise(c):
        many += eng.evaluate(to_batch(rows[a:z]), rows[z - 1][2]).signals
    assert any(s.rule_id == "trend_b" for s in whole)
    assert norm(many) == norm(whole)


def test_bisect_is_searchsorted_per_range() -> None:
    rng = np.random.default_rng(0)
    a = np.sort(rng.integers(0, 50, 200))
    lo = rng.integers(0, 200, 500)
    hi = np.minimum(lo + rng.integers(0, 40, 500), 200)
    x = rng.integers(-5, 55, 500)
    for right in (False, True):
        got = bisect(a, lo, hi, x, right)
        side = "right" if right else "left"
        want = [l0 + int(np.searchsorted(a[l0:h0], v, side)) for l0, h0, v in zip(lo, hi, x)]
        assert got.tolist() == want


def test_history_regions_hold_what_a_list_per_sensor_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends, trims, in-place compactions, moves and repacks against a plain list per sensor."""
    repacks: list[int] = []
    orig = EngineState._h_repack

    def counted(self: EngineState) -> None:
        repacks.append(self.h_dead)
        orig(self)

    monkeypatch.setattr(EngineState, "_h_repack", counted)
    rng = np.random.default_rng(3)
    st = EngineState()
    st.add_sensors(50)
    model: dict[int, list[tuple[int, float]]] = {s: [] for s in range(50)}
    last = {s: 0 for s in range(50)}
    for step in range(400):
        # bursts on a few sensors, then quiet: windows fill up and drain again
        u = np.sort(rng.choice(50, int(rng.integers(1, 20)), replace=False)).astype(np.int64)
        cnt = rng.integers(1, 40 if step % 50 < 10 else 4, len(u))
        ts, val = [], []
        for s, k in zip(u.tolist(), cnt.tolist()):
            for _ in range(k):
                last[s] += int(rng.integers(1, 5))
                v = float(rng.normal())
                model[s].append((last[s], v))
                ts.append(last[s])
                val.append(v)
        st.hist_append(u, cnt, np.asarray(ts, np.int64), np.asarray(val))
        win = rng.integers(0, 30, len(u))
        st.hist_trim(u, win)
        for s, w in zip(u.tolist(), win.tolist()):
            h = model[s]
            first = next(i for i, (t, _) in enumerate(h) if t >= h[-1][0] - w)
            model[s] = h[max(first - 1, 0):]
        if step % 97 == 0:
            st._h_repack()
        sid, hts, hval = st.hist_export()
        want = [(s, t, v) for s in range(50) for t, v in model[s]]
        assert list(zip(sid.tolist(), hts.tolist(), hval.tolist())) == want
    assert repacks
    assert 2 * st.h_dead <= st.h_used or st.h_dead <= H_REPACK_MIN  # dead slots stay bounded
