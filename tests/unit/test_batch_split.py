"""Sequencer.split and advance against a plain per-reading dict reference, over random batches and marks,
with the vectorized marks and after a forced search-key collision (the exact fallback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from earlywarn import batch as batch_mod
from earlywarn.batch import Sequencer
from earlywarn.model import ReadingBatch

_rows = st.lists(
    st.tuples(st.sampled_from("abc"), st.sampled_from("xyz"), st.integers(0, 12), st.floats(-5, 5)), max_size=80
)
_marks = st.dictionaries(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz")), st.integers(0, 12), max_size=9)


def _reference(rows: list[tuple[str, str, int, float]], marks: dict[tuple[str, str], int]) -> tuple[list, list, int, dict]:
    seen: set[tuple[str, str, int]] = set()
    fresh, dup = [], []
    for site, tag, ts, v in rows:
        if (site, tag, ts) in seen:
            continue
        seen.add((site, tag, ts))
        mark = marks.get((site, tag))
        (fresh if mark is None or ts > mark else dup).append((site, tag, ts, v))
    maxima: dict[tuple[str, str], int] = {}
    for site, tag, ts, _ in fresh:
        maxima[(site, tag)] = max(ts, maxima.get((site, tag), ts))
    return fresh, dup, len(rows) - len(seen), maxima


@settings(max_examples=300, deadline=None)
@given(_rows, _marks)
def test_split_matches_the_reference(rows: list[tuple[str, str, int, float]], marks: dict[tuple[str, str], int]) -> None:
    batch = ReadingBatch.from_columns(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [0] * len(rows)
    )
    split = Sequencer(marks).split(batch)
    fresh, dup, dups, maxima = _reference(rows, marks)
    cols = ("site", "tag", "ts_ms", "value")
    assert list(split.fresh.frame.select(cols).iter_rows()) == fresh  # first copy kept, message order kept
    assert list(split.maybe_dup.frame.select(cols).iter_rows()) == dup
    assert split.in_batch_dups == dups
    assert {(s, t): m for s, t, m in split.maxima.iter_rows()} == maxima


class _DictSequencer:
    """The plain reference: a dict of marks, one look-up per reading."""

    def __init__(self, marks: dict[tuple[str, str], int]) -> None:
        self.marks = dict(marks)

    def split_and_advance(self, rows: list[tuple[str, str, int, float]]) -> tuple[list, list]:
        fresh, dup, _, maxima = _reference(rows, self.marks)
        for k, ts in maxima.items():
            self.marks[k] = max(ts, self.marks.get(k, ts))
        return fresh, dup


_names = st.sampled_from(["a", "b", "c", "site-7", "ü"])
_batches = st.lists(
    st.lists(st.tuples(_names, st.sampled_from(["x", "y", "T.PV"]), st.integers(0, 30), st.floats(-5, 5)),
             max_size=40),
    min_size=1, max_size=8,
)


@contextmanager
def _colliding_keys() -> Iterator[None]:
    """Every sensor gets the same search key: the first second sensor is a collision."""
    real = batch_mod._hashes

    def same_key(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hs, ht, key = real(frame)
        return hs, ht, np.zeros_like(key)

    batch_mod._hashes = same_key
    try:
        yield
    finally:
        batch_mod._hashes = real


@settings(max_examples=200, deadline=None)
@given(_batches, _marks, st.booleans())
def test_a_sequence_of_batches_matches_the_dict_reference(
    batches: list[list[tuple[str, str, int, float]]], marks: dict[tuple[str, str], int], collide: bool
) -> None:
    """The vectorized marks (or, after a key collision, the exact dict they fall back to) split and advance
    exactly as one dict look-up per reading would, batch after batch."""
    ref = _DictSequencer(marks)
    with _colliding_keys() if collide else nullcontext():
        seq = Sequencer(marks)
        for rows in batches:
            batch = ReadingBatch.from_columns(
                [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
                [0] * len(rows),
            )
            split = seq.split(batch)
            fresh, dup = ref.split_and_advance(rows)
            cols = ("site", "tag", "ts_ms", "value")
            assert list(split.fresh.frame.select(cols).iter_rows()) == fresh
            assert list(split.maybe_dup.frame.select(cols).iter_rows()) == dup
            seq.advance(split)
            assert len(seq) == len(ref.marks)
            for (site, tag), ts in ref.marks.items():
                assert seq.last_ts_ms(site, tag) == ts
        assert seq.last_ts_ms("never", "seen") is None
        if collide and len(ref.marks) > 1:
            assert seq._marks is None, "a key collision must move the marks to the exact dict"
