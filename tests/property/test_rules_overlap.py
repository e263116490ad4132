"""Property tests: the windowed kinds run on the engine's worker thread (what large replay chunks do)
give exactly what they give inline: the same signals, counts and rule-state snapshot, for any split."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.types import RuleKind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_rules_engine_props import ALL_KINDS, norm, now_for, rule_packs, streams, to_batch
from test_rules_name_codes import _state

SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WINDOWED = [RuleKind.RATE, RuleKind.FLATLINE, RuleKind.TREND]


@SLOW
@given(data=st.data())
def test_windowed_kinds_on_the_worker_thread_give_the_same_results(data: Any) -> None:
    # mostly windowed rules, with the other kinds (and their gates) evaluated meanwhile
    pack = data.draw(rule_packs(data.draw(st.sampled_from([WINDOWED, WINDOWED + ALL_KINDS, ALL_KINDS]))))
    batches = data.draw(streams(ordered=data.draw(st.booleans())))
    mode = data.draw(st.integers(0, 2))
    inline, overlap = RuleEngine(pack), RuleEngine(pack)
    inline.overlap_min_points = 1 << 62
    overlap.overlap_min_points = 0
    for rs in batches:
        now = now_for(mode, rs, 40)
        want, got = inline.evaluate(to_batch(rs), now), overlap.evaluate(to_batch(rs), now)
        assert norm(got.signals) == norm(want.signals)
        assert (got.late, got.evaluated) == (want.late, want.evaluated)
    assert norm(overlap.tick(10_000)) == norm(inline.tick(10_000))
    assert _state(overlap) == _state(inline)


def test_a_failure_on_the_worker_thread_is_raised_by_evaluate() -> None:
    from earlywarn.model import Severity
    from earlywarn.rules.types import RuleSpec

    r = RuleSpec(id="roc", kind=RuleKind.RATE, plant="t", severity=Severity.RED, tag="a", op=">", limit=1.0,
                 window_ms=10)
    eng = RuleEngine({"s1": [r]})
    eng.overlap_min_points = 0

    def boom(*_: Any) -> Any:
        raise RuntimeError("windowed failed")

    eng._windowed = boom  # type: ignore[method-assign]
    try:
        eng.evaluate(to_batch([("s1", "a", 5, 2.0, 0)]), 5)
    except RuntimeError as e:
        assert "windowed failed" in str(e)
    else:
        raise AssertionError("the worker's exception was lost")
