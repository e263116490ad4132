"""Property tests: the vectorized RuleEngine equals the scalar reference, is batch-split invariant, and
continues exactly from a snapshot.

Values live on a 0.5 grid and times on a 5 ms grid so that comparisons are exact and no test depends on
float noise; trend examples that land within noise of a boundary are discarded (`assume`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings

from earlywarn.model import ReadingBatch, Severity, Signal
from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.types import EXPR_OPS, And, Cmp, Not, Or, RuleKind, RuleSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import itertools

from rules_reference import ReferenceEngine

TAGS = ("a", "b", "c")
SITES = ("s1", "s2")
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

grid = st.integers(0, 20).map(lambda i: i * 0.5)
ops = st.sampled_from([">", ">=", "<", "<="])
delays = st.sampled_from([0, 0, 10, 20, 35])
cmps = st.builds(Cmp, tag=st.sampled_from(TAGS), op=st.sampled_from(EXPR_OPS), value=grid)
exprs = st.recursive(
    cmps,
    lambda ch: st.one_of(
        st.lists(ch, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(ch, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        ch.map(Not),
    ),
    max_leaves=4,
)


@st.composite
def rules_of(draw: Any, kind: RuleKind, rid: str) -> RuleSpec:
    common: dict[str, Any] = {
        "id": rid, "kind": kind, "plant": "test", "message": f"msg {rid}",
        "severity": draw(st.sampled_from(list(Severity))),
        "on_delay_ms": draw(delays), "off_delay_ms": draw(delays),
        "when": draw(st.none() | st.none() | exprs),
    }
    tag = draw(st.sampled_from(TAGS))
    if kind == RuleKind.THRESHOLD:
        return RuleSpec(**common, tag=tag, op=draw(ops), limit=draw(grid), deadband=draw(st.sampled_from([0, 0.5, 1.5])))
    if kind == RuleKind.RATE:
        return RuleSpec(**common, tag=tag, op=draw(ops), limit=draw(st.integers(-400, 400).map(lambda i: i * 15.0)),
                        deadband=draw(st.sampled_from([0.0, 30.0])), window_ms=draw(st.sampled_from([10, 30, 60])))
    if kind == RuleKind.FLATLINE:
        return RuleSpec(**common, tag=tag, window_ms=draw(st.sampled_from([10, 30, 60])),
                        epsilon=draw(st.sampled_from([0.0, 0.5, 1.0])))
    if kind == RuleKind.QUALITY:
        rng = draw(st.none() | st.tuples(grid, grid).map(lambda t: (min(t), max(t))))
        return RuleSpec(**common, tag=tag, range=rng)
    if kind == RuleKind.TREND:
        return RuleSpec(**common, tag=tag, op=draw(ops), limit=draw(grid), window_ms=draw(st.sampled_from([20, 40, 80])),
                        horizon_ms=draw(st.sampled_from([0, 20, 100])), min_r2=draw(st.sampled_from([0.0, 0.5, 0.9])))
    if kind == RuleKind.VOTE:
        tags = tuple(draw(st.permutations(TAGS))[: draw(st.integers(2, 3))])
        return RuleSpec(**common, tags=tags, k=draw(st.integers(1, len(tags))), op=draw(ops), limit=draw(grid),
                        deadband=draw(st.sampled_from([0, 0.5, 1.5])))
    if kind == RuleKind.EXPR:
        return RuleSpec(**common, expr=draw(exprs))
    if kind == RuleKind.STALE:
        stag = draw(st.sampled_from(TAGS + ("*", "*")))
        # a gate only on the site-wide rule (the rule checker rejects it on a per-tag stale rule)
        return RuleSpec(id=rid, kind=kind, plant="test", severity=Severity.BLUE, tag=stag,
                        timeout_ms=draw(st.sampled_from([10, 25, 50])),
                        when=draw(st.none() | exprs) if stag == "*" else None)
    assert kind == RuleKind.INTERLOCK
    return RuleSpec(id=rid, kind=kind, plant="test", severity=Severity.RED, trigger=draw(exprs), expect=draw(exprs),
                    within_ms=draw(st.sampled_from([0, 10, 30])))


ALL_KINDS = list(RuleKind)


@st.composite
def rule_packs(draw: Any, kinds: list[RuleKind]) -> dict[str, list[RuleSpec]]:
    n = draw(st.integers(1, 3))
    pack = [draw(rules_of(draw(st.sampled_from(kinds)), f"r{i}")) for i in range(n)]
    # s2 shares the pack (the usual case) or gets a variant; "sx" has no rules at all
    other = pack if draw(st.booleans()) else [draw(rules_of(r.kind, r.id)) for r in pack]
    return {"s1": pack, "s2": other}


@st.composite
def streams(draw: Any, ordered: bool) -> list[list[tuple[Any, ...]]]:
    """Readings cut into 1-4 batches.

    Each sensor's value is a random walk on the 0.5 grid (so conditions hold for a while, then flip),
    timestamps advance in 0/5/10/20 ms steps (0 = a duplicate timestamp); a few values are null or of
    bad / uncertain quality. Unless `ordered`, some readings are displaced backwards (late) and the
    order of readings is shuffled inside batches.
    """
    n = draw(st.integers(0, 70))
    steps = draw(st.lists(st.tuples(
        st.sampled_from(("s1", "s1", "s1", "s2", "sx")),  # site ("sx" has no rules)
        st.sampled_from(("a", "a", "b", "c")),  # tag
        st.sampled_from((0, 5, 5, 5, 10, 20)),  # ts step
        st.sampled_from((-2, -1, 0, 0, 0, 1, 2)),  # random-walk step (x 0.5)
        st.sampled_from((0,) * 12 + (1, 2)),  # quality
        st.integers(0, 15),  # 0: null value
        st.integers(0, 8),  # 0: displaced backwards (when not ordered)
        st.sampled_from((5, 10, 30)),  # displacement
    ), min_size=n, max_size=n))
    level = {(s, t): draw(st.integers(0, 20)) for s in SITES for t in TAGS}
    ts = 0
    rs: list[tuple[Any, ...]] = []
    for site, tag, dt, step, q, null, displaced, back in steps:
        ts += dt
        key = (site, tag) if site != "sx" else ("s1", tag)
        level[key] = min(20, max(0, level[key] + step))
        value: float | None = None if null == 0 else level[key] * 0.5
        t = max(0, ts - back) if not ordered and displaced == 0 else ts
        rs.append((site, tag, t, value, q))
    cuts = sorted(draw(st.lists(st.integers(0, len(rs)), max_size=3)))
    out, prev = [], 0
    for c in cuts + [len(rs)]:
        chunk = rs[prev:c]
        if not ordered:
            chunk = draw(st.permutations(chunk))
        out.append(list(chunk))
        prev = c
    return out


def to_batch(rs: list[tuple[Any, ...]]) -> ReadingBatch:
    return ReadingBatch.from_columns(
        [r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs], [r[3] for r in rs], [r[4] for r in rs]
    )


def norm(sigs: list[Signal]) -> list[tuple[Any, ...]]:
    return [
        (s.ts_ms, s.site, s.tag, s.rule_id, s.kind, "nan" if math.isnan(s.value) else s.value, s.detail,
         s.severity, s.message)
        for s in sigs
    ]


def now_for(mode: int, rs: list[tuple[Any, ...]], extra: int) -> int:
    if mode == 0 or not rs:
        return 0  # no wall clock: only event time drives the clock
    return max(r[2] for r in rs) + (extra if mode == 2 else 0)


def run_engine(pack: dict[str, list[RuleSpec]], batches: list[list[tuple[Any, ...]]], mode: int, extra: int,
               snap_at: int | None = None) -> tuple[list[tuple[Any, ...]], int, int]:
    eng = RuleEngine(pack)
    sigs: list[Signal] = []
    late = ev = 0
    for i, rs in enumerate(batches):
        if snap_at == i:
            eng = RuleEngine.restore(pack, eng.snapshot())
        res = eng.evaluate(to_batch(rs), now_for(mode, rs, extra))
        sigs += res.signals
        late += res.late
        ev += res.evaluated
    return norm(sigs), late, ev


def check_equal(pack: dict[str, list[RuleSpec]], batches: list[list[tuple[Any, ...]]], mode: int, extra: int) -> None:
    eng = RuleEngine(pack)
    ref = ReferenceEngine(pack)
    for rs in batches:
        now = now_for(mode, rs, extra)
        got = eng.evaluate(to_batch(rs), now)
        want, late, ev = ref.evaluate(rs, now)
        assume(not ref.ambiguous)
        assert norm(got.signals) == norm(want)
        assert (got.late, got.evaluated) == (late, ev)
    # a tick far in the future raises whatever is still stale / overdue
    assert norm(eng.tick(10_000)) == norm(ref.tick(10_000))


@pytest.mark.parametrize("kind", ALL_KINDS, ids=str)
@FAST
@given(data=st.data())
def test_engine_matches_reference_per_kind(kind: RuleKind, data: Any) -> None:
    pack = data.draw(rule_packs([kind]))
    batches = data.draw(streams(ordered=data.draw(st.booleans())))
    check_equal(pack, batches, data.draw(st.integers(0, 2)), data.draw(st.sampled_from([5, 40])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_engine_matches_reference_mixed_pack(data: Any) -> None:
    pack = data.draw(rule_packs(ALL_KINDS))
    batches = data.draw(streams(ordered=data.draw(st.booleans())))
    check_equal(pack, batches, data.draw(st.integers(0, 2)), data.draw(st.sampled_from([5, 40])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_split_into_batches_gives_the_same_signals(data: Any) -> None:
    pack = data.draw(rule_packs(ALL_KINDS))
    batches = data.draw(streams(ordered=True))
    whole = [r for b in batches for r in b]
    # mode 0: now_ms = 0, the clock is each site's event time; mode 1: replay, now_ms = the batch's
    # newest ts (the stream is in global ts order here, so the split cannot matter either way)
    mode = data.draw(st.integers(0, 1))
    one, late1, ev1 = run_engine(pack, [whole], mode, 0)
    many, late2, ev2 = run_engine(pack, batches, mode, 0)
    assert sorted(one, key=str) == sorted(many, key=str)
    assert (late1, ev1) == (late2, ev2)
    # and each call's output is in event-time order
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(one))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_snapshot_restore_mid_stream_continues_exactly(data: Any) -> None:
    pack = data.draw(rule_packs(ALL_KINDS))
    batches = data.draw(streams(ordered=data.draw(st.booleans())))
    mode = data.draw(st.integers(0, 2))
    at = data.draw(st.integers(0, len(batches) - 1))
    assert run_engine(pack, batches, mode, 40) == run_engine(pack, batches, mode, 40, snap_at=at)


def test_snapshot_is_bytes_and_immutable() -> None:
    r = RuleSpec(id="hi", kind=RuleKind.THRESHOLD, plant="t", severity=Severity.RED, tag="a", op=">", limit=1.0)
    eng = RuleEngine({"s1": [r]})
    snap = eng.snapshot()
    assert isinstance(snap, bytes)
    eng.evaluate(to_batch([("s1", "a", 5, 2.0, 0)]), 5)
    assert RuleEngine.restore({"s1": [r]}, snap).evaluate(to_batch([("s1", "a", 5, 2.0, 0)]), 5).signals
