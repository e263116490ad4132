"""A rule-state snapshot packed later from parts taken at step k is the snapshot of step k: the parts share
nothing the engine goes on mutating (state arrays, history, pending interlock arms, the key lists that grow
as sensors and stale instances appear)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
from test_rules_state import now_of, site_rules, stream  # tests/unit is on sys.path (no __init__.py)

from earlywarn.model import ReadingBatch
from earlywarn.rules.engine import RuleEngine
from earlywarn.rules.state import EngineState


def _without(b: ReadingBatch, site: str, tag: str) -> ReadingBatch:
    return ReadingBatch(b.frame.filter(~((pl.col("site") == site) & (pl.col("tag") == tag))))


def _same(blob_a: bytes, blob_b: bytes) -> None:
    (arr_a, doc_a), (arr_b, doc_b) = EngineState.load(blob_a), EngineState.load(blob_b)
    assert json.dumps(doc_a) == json.dumps(doc_b)
    assert list(arr_a) == list(arr_b)
    for k, a in arr_a.items():
        assert a.dtype == arr_b[k].dtype, k
        assert np.array_equal(a, arr_b[k], equal_nan=a.dtype.kind == "f"), k


def test_parts_packed_later_restore_like_a_snapshot_taken_then() -> None:
    batches = stream(12, seed=11)
    # sensor (s2, b) and its per-tag stale instance, and site sy, first appear after the parts are taken
    early = [_without(_without(b, "s2", "b"), "sy", "a") for b in batches[:4]]
    late = [ReadingBatch(b.frame.with_columns(
        pl.when(pl.col("site") == "sx").then(pl.lit("sy")).otherwise(pl.col("site")).alias("site")))
        for b in batches[4:8]] + batches[8:]
    eng = RuleEngine(site_rules())
    for b in early:
        eng.evaluate(b, now_of(b))
    parts = eng.snapshot_parts()
    sync = eng.snapshot()
    n_sensors, n_stale = eng._st.n_sensors, len(eng._stale_sid)
    pending = {k: list(v) for k, v in eng._st.il_pending.items()}
    went_on = []
    for b in late[:4]:
        went_on.extend(eng.evaluate(b, now_of(b)).signals)
    # the engine moved on meanwhile: more sensors and stale instances, other state
    assert eng._st.n_sensors > n_sensors
    assert len(eng._stale_sid) > n_stale
    assert went_on
    assert eng.snapshot() != sync
    packed = EngineState.pack(*parts)
    _same(packed, sync)
    # and it restores to an engine that continues exactly like one restored from the synchronous snapshot,
    # and like the engine that was never stopped
    a = RuleEngine.restore(site_rules(), packed)
    b = RuleEngine.restore(site_rules(), sync)
    got_a = [s for x in late for s in a.evaluate(x, now_of(x)).signals]
    got_b = [s for x in late for s in b.evaluate(x, now_of(x)).signals]
    whole = RuleEngine(site_rules())
    for x in early:
        whole.evaluate(x, now_of(x))
    expected = [s for x in late for s in whole.evaluate(x, now_of(x)).signals]
    assert expected
    assert repr(got_a) == repr(got_b) == repr(expected)  # repr: NaN values compare equal
    _same(a.snapshot(), whole.snapshot())
    assert pending == {k: list(v) for k, v in RuleEngine.restore(site_rules(), packed)._st.il_pending.items()}


def test_parts_are_not_aliased_to_the_engine() -> None:
    """Every array of the parts is its own memory, so nothing the engine writes later can reach it."""
    eng = RuleEngine(site_rules())
    for b in stream(4, seed=2):
        eng.evaluate(b, now_of(b))
    arrays, doc = eng.snapshot_parts()
    st = eng._st
    live = [v for v in vars(st).values() if isinstance(v, np.ndarray)]
    for k, a in arrays.items():
        assert not any(np.shares_memory(a, v) for v in live), k
    assert doc["il_pending"] is not st.il_pending
    for name in ("sensor_keys", "stale_keys"):  # codes copied; name lists sliced (append-only) or fixed
        for codes in doc[name].codes:
            assert not any(np.shares_memory(codes, v) for v in vars(eng).values() if isinstance(v, np.ndarray))
