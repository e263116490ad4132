"""Sequencer and collect(): per-sensor ordering, duplicates, late readings, flush policy."""

from __future__ import annotations

import itertools
import queue

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from earlywarn.batch import Sequencer, collect
from earlywarn.model import RawMessage, ReadingBatch


def rb(rows: list[tuple[str, str, int, float]]) -> ReadingBatch:
    return ReadingBatch.from_columns(
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [0] * len(rows)
    )


def keys(b: ReadingBatch) -> list[tuple[str, str, int]]:
    return [(s, t, ts) for s, t, ts in b.frame.select("site", "tag", "ts_ms").iter_rows()]


def test_everything_fresh_on_an_empty_sequencer() -> None:
    s = Sequencer()
    split = s.split(rb([("a", "x", 1, 1.0), ("a", "x", 2, 2.0), ("b", "x", 1, 3.0)]))
    assert len(split.fresh) == 3 and len(split.maybe_dup) == 0 and split.in_batch_dups == 0


def test_copies_inside_a_batch_are_dropped_keeping_the_first() -> None:
    split = Sequencer().split(rb([("a", "x", 1, 1.0), ("a", "x", 1, 9.0), ("a", "x", 2, 2.0)]))
    assert split.in_batch_dups == 1
    assert split.fresh.frame.get_column("value").to_list() == [1.0, 2.0]


def test_readings_at_or_before_the_mark_may_be_duplicates() -> None:
    s = Sequencer({("a", "x"): 10})
    split = s.split(rb([("a", "x", 9, 1.0), ("a", "x", 10, 1.0), ("a", "x", 11, 1.0), ("b", "y", 1, 1.0)]))
    assert keys(split.fresh) == [("a", "x", 11), ("b", "y", 1)]
    assert keys(split.maybe_dup) == [("a", "x", 9), ("a", "x", 10)]


def test_marks_move_only_on_advance() -> None:
    s = Sequencer()
    split = s.split(rb([("a", "x", 5, 1.0)]))
    assert s.last_ts_ms("a", "x") is None
    s.advance(split)
    assert s.last_ts_ms("a", "x") == 5
    again = s.split(rb([("a", "x", 5, 1.0)]))
    assert len(again.fresh) == 0 and len(again.maybe_dup) == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from("xy"), st.integers(0, 20)), max_size=60),
    st.lists(st.integers(1, 59), max_size=5),
)
def test_any_split_into_batches_stores_each_key_once(rows: list[tuple[str, str, int]], cuts: list[int]) -> None:
    """Over any batching, fresh + maybe_dup-not-yet-seen covers each distinct key exactly once."""
    s = Sequencer()
    stored: set[tuple[str, str, int]] = set()
    stored_list: list[tuple[str, str, int]] = []
    bounds = [0, *sorted(c for c in cuts if c < len(rows)), len(rows)]
    for lo, hi in itertools.pairwise(bounds):
        part = rows[lo:hi]
        split = s.split(rb([(a, b, c, 0.0) for a, b, c in part]))
        for k in keys(split.fresh):
            assert k not in stored, "a fresh reading must never repeat a stored one"
            stored.add(k)
            stored_list.append(k)
        for k in keys(split.maybe_dup):  # what the store's anti-join does
            if k not in stored:
                stored.add(k)
                stored_list.append(k)
        s.advance(split)
    assert sorted(stored_list) == sorted(set(rows))


def test_collect_flushes_when_full() -> None:
    q: queue.SimpleQueue[RawMessage] = queue.SimpleQueue()
    for i in range(10):
        q.put(RawMessage("t", b"{}", i + 1))
    got = collect(q, max_messages=4, max_age_ms=1000, idle_ms=5)
    assert [m.mid for m in got] == [1, 2, 3, 4]


def test_collect_flushes_when_idle_and_returns_empty_when_nothing_came() -> None:
    q: queue.SimpleQueue[RawMessage] = queue.SimpleQueue()
    assert collect(q, max_messages=10, max_age_ms=1000, idle_ms=1, first_wait_ms=1) == []
    q.put(RawMessage("t", b"{}", 1))
    assert [m.mid for m in collect(q, max_messages=10, max_age_ms=1000, idle_ms=1)] == [1]


def test_split_keeps_arrival_order_within_each_part() -> None:
    s = Sequencer({("a", "x"): 5})
    split = s.split(rb([("b", "y", 3, 0.0), ("a", "x", 7, 0.0), ("a", "x", 2, 0.0), ("b", "y", 1, 0.0)]))
    assert keys(split.fresh) == [("b", "y", 3), ("a", "x", 7), ("b", "y", 1)]
    assert isinstance(split.maxima, pl.DataFrame)


def test_collect_stops_near_the_byte_budget() -> None:
    q: queue.SimpleQueue[RawMessage] = queue.SimpleQueue()
    for i in range(10):
        q.put(RawMessage("t", b"x" * 100, i + 1))
    got = collect(q, max_messages=1000, max_age_ms=1000, idle_ms=5, max_bytes=250)
    assert [m.mid for m in got] == [1, 2, 3]  # stops once 250 bytes are reached
