"""Property tests of rule kernels against plain per-query computations."""

from __future__ import annotations

import math
from typing import Any

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

from earlywarn.rules.kernels import SparseRange


def naive_spread(v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[float]:
    out = []
    for a, z in zip(lo.tolist(), hi.tolist()):
        w = v[a:z + 1]
        out.append(float(np.max(w) - np.min(w)))  # NaN in the range: NaN
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sparse_range_spread_equals_max_minus_min_of_the_range(data: Any) -> None:
    n = data.draw(st.integers(1, 300))
    vals = data.draw(st.lists(
        st.one_of(st.integers(-20, 20).map(float), st.floats(-1e6, 1e6)),
        min_size=n, max_size=n))
    v = np.asarray(vals, dtype=np.float64)
    if data.draw(st.booleans()):  # now and then a NaN (propagates, as np.maximum does)
        v[data.draw(st.integers(0, n - 1))] = math.nan
    q = data.draw(st.integers(0, 60))
    pairs = [sorted(data.draw(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)))) for _ in range(q)]
    lo = np.asarray([p[0] for p in pairs], dtype=np.int64)
    hi = np.asarray([p[1] for p in pairs], dtype=np.int64)
    got = SparseRange(v).spread(lo, hi).tolist()
    want = naive_spread(v, lo, hi)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (math.isnan(g) and math.isnan(w)) or g == w


def test_sparse_range_long_array_sliding_windows() -> None:
    rng = np.random.default_rng(3)
    v = np.round(rng.normal(size=5000), 1)
    hi = np.arange(5000)
    for w in (0, 1, 31, 32, 33, 64, 100, 1000, 4999):
        lo = np.maximum(hi - w, 0)
        assert SparseRange(v).spread(lo, hi).tolist() == naive_spread(v, lo, hi)
    assert SparseRange(np.zeros(0)).spread(np.zeros(0, np.int64), np.zeros(0, np.int64)).tolist() == []
