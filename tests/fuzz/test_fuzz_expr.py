"""Fuzz target: the rule expression parser. Any text parses to a tree that round-trips, or raises ExprError
with a column inside the text; never another exception, never a hang (deep nesting included)."""

from __future__ import annotations

import pytest
from fuzzkit import EXAMPLES, FUZZ, corpus, count, mutate, mutations, time_limit
from hypothesis import given
from hypothesis import strategies as st

from earlywarn.errors import ExprError
from earlywarn.rules.expr import format_expr, parse_expr


def check(text: str) -> None:
    with time_limit():
        try:
            e = parse_expr(text)
        except ExprError as err:
            assert 0 <= err.pos <= len(text)
            str(err)  # the message itself must render
            return
        assert parse_expr(format_expr(e)) == e


tokens = st.sampled_from(["a", "b_1", "x.y:z-1", "and", "or", "not", "(", ")", ">", ">=", "<", "<=", "==", "!=",
                          "1", "-1.5e3", "1e999", "nan", "inf", "true", "false", " ", "\t", "é", "\x00", "&&", "||",
                          "!", "=", "((((", "))))", "0x10", "1_000", "'a'", '"'])


@FUZZ.__class__(FUZZ, max_examples=max(50, EXAMPLES // 20))
@given(st.one_of(st.text(max_size=300), st.lists(tokens, max_size=80).map(" ".join),
                 st.lists(tokens, max_size=80).map("".join)))
def test_any_text_parses_or_raises_expr_error(text: str) -> None:
    check(text)
    count("expr")


SEEDS = [b"tank_pressure_mpa > 1.6 and not (casting_active == 0 or cw_flow < 20.5)",
         b"a >= -1e3 or b != 0 and not not c < 2", b"((a > 1))"]


@FUZZ
@given(st.sampled_from(SEEDS), mutations)
def test_mutated_expressions_parse_or_raise_expr_error(seed: bytes, ops: list) -> None:
    check(mutate(seed, ops).decode("utf-8", "replace"))
    count("expr")


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    for text in ("(" * 100_000 + "a > 1" + ")" * 100_000, "not " * 50_000 + "a > 1",
                 " and ".join(["a > 1"] * 20_000)):
        check(text)


@pytest.mark.parametrize("path", corpus("expr"), ids=lambda p: p.name)
def test_expr_corpus_regressions(path) -> None:
    check(path.read_text(encoding="utf-8"))
