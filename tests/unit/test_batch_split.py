"""Sequencer.split against a plain per-reading reference, over random batches and marks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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
