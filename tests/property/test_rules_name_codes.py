"""Property tests: a batch's names given as codes (NameCodes, what a replay passes) evaluate exactly as the
hashed name columns do: the same signals, counts and rule-state snapshot, for any split into batches, any
order of the caller's name lists, and name lists kept or replaced between batches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from earlywarn.model import ReadingBatch
from earlywarn.rules.engine import NameCodes, RuleEngine
from earlywarn.rules.state import EngineState

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_rules_engine_props import ALL_KINDS, norm, now_for, rule_packs, streams, to_batch

SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _codes(rs: list[tuple[Any, ...]], site_names: list[str], tag_names: list[str], dtype: Any) -> NameCodes:
    return NameCodes(
        np.asarray([site_names.index(r[0]) for r in rs], dtype), np.asarray([tag_names.index(r[1]) for r in rs], dtype),
        site_names, tag_names,
    )


def _state(eng: RuleEngine) -> tuple[dict[str, tuple[str, bytes]], Any]:
    arrays, doc = EngineState.load(eng.snapshot())  # arrays as bytes: NaN == NaN
    return {k: (np.asarray(v).dtype.str, np.asarray(v).tobytes()) for k, v in sorted(arrays.items())}, doc


@SLOW
@given(data=st.data())
def test_name_codes_evaluate_as_the_hashed_names(data: Any) -> None:
    pack = data.draw(rule_packs(ALL_KINDS))
    ordered = data.draw(st.booleans())
    batches = data.draw(streams(ordered=ordered))
    mode = data.draw(st.integers(0, 2))
    # the caller's lists: any order, names that never occur, and ("sx") a site without rules
    site_names = data.draw(st.permutations(["s1", "s2", "sx", "s9"]))
    tag_names = data.draw(st.permutations(["a", "b", "c", "zz"]))
    dtype = data.draw(st.sampled_from([np.uint8, np.uint32, np.int64]))
    hashed, coded = RuleEngine(pack), RuleEngine(pack)
    for rs in batches:
        now = now_for(mode, rs, 40)
        if data.draw(st.booleans()):  # a new list object: the engine's code table starts again
            site_names, tag_names = list(site_names), list(tag_names)
        batch = to_batch(rs)
        want = hashed.evaluate(batch, now)
        names = _codes(rs, site_names, tag_names, dtype)
        if data.draw(st.booleans()):
            got = coded.evaluate(batch, now, names)
        else:  # primed, as run_replay hands them over through the pipeline's Engine
            coded.prime_names(batch, names)
            got = coded.evaluate(batch, now)
        assert norm(got.signals) == norm(want.signals)
        assert (got.late, got.evaluated) == (want.late, want.evaluated)
    assert norm(coded.tick(10_000)) == norm(hashed.tick(10_000))
    # the same sensors, in the same order, with the same state: a restart continues identically
    assert _state(coded) == _state(hashed)
    assert coded.snapshot() == hashed.snapshot()


def test_primed_codes_are_for_that_frame_only() -> None:
    from earlywarn.model import Severity
    from earlywarn.rules.types import RuleKind, RuleSpec

    r = RuleSpec(id="hi", kind=RuleKind.THRESHOLD, plant="t", severity=Severity.RED, tag="a", op=">", limit=1.0)
    pack = {"s1": [r], "s2": [r]}
    eng = RuleEngine(pack)
    rs = [("s1", "a", 5, 2.0, 0)]
    # codes that would name s2: primed for another frame with the same rows, so not used
    eng.prime_names(to_batch(rs), NameCodes(np.array([1]), np.array([0]), ["s1", "s2"], ["a"]))
    sigs = eng.evaluate(to_batch(rs), 5).signals
    assert [(s.site, s.tag) for s in sigs] == [("s1", "a")]
    # and used at most once
    batch = to_batch([("s1", "a", 6, 0.0, 0)])
    eng.prime_names(batch, NameCodes(np.array([0]), np.array([0]), ["s1"], ["a"]))
    eng.evaluate(batch, 6)
    assert eng._primed is None


def test_name_codes_of_another_length_are_refused() -> None:
    eng = RuleEngine({"s1": []})
    batch = ReadingBatch.from_columns(["s1"], ["a"], [1], [1.0], [0])
    with pytest.raises(ValueError, match="NameCodes for 2 rows"):
        eng.evaluate(batch, 1, NameCodes(np.array([0, 0]), np.array([0, 0]), ["s1"], ["a"]))
