"""Property tests of the expression parser: round trip of generated trees, and fuzzed text never crashes."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlywarn.errors import ExprError
from earlywarn.rules.expr import KEYWORDS, format_expr, parse_expr
from earlywarn.rules.types import EXPR_OPS, And, Cmp, Expr, Not, Or

_FIRST = "adefilnorstuxyzAZ_"  # includes the letters of every keyword: "andy", "nota" are tags
_REST = _FIRST + "0123456789.:-"
# Built from characters rather than st.from_regex: same language, a fraction of the generation time.
tags = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=12)).filter(
    lambda t: t not in KEYWORDS
)
values = st.floats(allow_nan=False, allow_infinity=False, width=64)
cmps = st.builds(Cmp, tags, st.sampled_from(EXPR_OPS), values)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    chains = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(st.builds(And, chains), st.builds(Or, chains), st.builds(Not, children))


exprs = st.recursive(cmps, _extend, max_leaves=12)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(exprs)
def test_format_then_parse_is_identity(e: Expr) -> None:
    text = format_expr(e)
    assert parse_expr(text) == e
    assert format_expr(parse_expr(text)) == text


ALPHABET = st.sampled_from(
    list("ab_.:-0123456789eE+-. ()<>=!&|\t\n") + ["and ", "or ", "not ", "true", "false", "é"]
)
token_soup = st.lists(ALPHABET, max_size=60).map("".join)


def _parse_or_expr_error(text: str) -> None:
    start = time.perf_counter()
    try:
        e = parse_expr(text)
    except ExprError as err:
        assert 0 <= err.pos <= len(text)
    else:
        assert parse_expr(format_expr(e)) == e
    assert time.perf_counter() - start < 1.0


@FAST
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_expr_error(text: str) -> None:
    _parse_or_expr_error(text)


@FAST
@given(token_soup)
def test_token_soup_only_raises_expr_error(text: str) -> None:
    _parse_or_expr_error(text)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=5000), st.sampled_from(["(", "not ", "((", "not ("]))
def test_pathological_nesting_never_hangs_or_recurses(n: int, unit: str) -> None:
    _parse_or_expr_error(unit * n + "a > 1" + ")" * n)
