"""The rule expression parser: precedence, parentheses, numbers, canonical formatting, errors with columns."""

from __future__ import annotations

import pytest

from earlywarn.errors import ExprError
from earlywarn.rules.expr import MAX_DEPTH, MAX_EXPR_CHARS, format_expr, parse_expr
from earlywarn.rules.types import And, Cmp, Not, Or


def C(tag: str, op: str, value: float) -> Cmp:
    return Cmp(tag, op, float(value))


A, B, D = C("a", ">", 1), C("b", "<", 2), C("d", "==", 0)

PARSES = [
    # (text, tree)
    ("a > 1", A),
    ("  a>1  ", A),
    ("a\t>\n1", A),
    ("a == 1", C("a", "==", 1)),
    ("a != 1", C("a", "!=", 1)),
    ("a < 1", C("a", "<", 1)),
    ("a <= 1", C("a", "<=", 1)),
    ("a > 1", C("a", ">", 1)),
    ("a >= 1", C("a", ">=", 1)),
    ("a<=-1", C("a", "<=", -1)),
    ("a > -0.5", C("a", ">", -0.5)),
    ("a > +2", C("a", ">", 2)),
    ("a > .5", C("a", ">", 0.5)),
    ("a > 5.", C("a", ">", 5)),
    ("a > 1e3", C("a", ">", 1000)),
    ("a > 2.5E-3", C("a", ">", 0.0025)),
    ("a > -1e+2", C("a", ">", -100)),
    ("a == true", C("a", "==", 1)),
    ("a == false", C("a", "==", 0)),
    ("gas_lel_pct_a >= 25", C("gas_lel_pct_a", ">=", 25)),
    ("plc1:line-2.temp_c > 3", C("plc1:line-2.temp_c", ">", 3)),
    ("_x > 0", C("_x", ">", 0)),
    ("andy > 1", C("andy", ">", 1)),  # a keyword prefix is still a tag
    ("AND > 1", C("AND", ">", 1)),  # keywords are lower-case
    # precedence: not > and > or
    ("a > 1 and b < 2", And((A, B))),
    ("a > 1 or b < 2", Or((A, B))),
    ("a > 1 or b < 2 and d == 0", Or((A, And((B, D))))),
    ("a > 1 and b < 2 or d == 0", Or((And((A, B)), D))),
    ("not a > 1", Not(A)),
    ("not a > 1 and b < 2", And((Not(A), B))),
    ("not a > 1 or b < 2", Or((Not(A), B))),
    ("not not a > 1", Not(Not(A))),
    # chains are flattened; parentheses keep their group
    ("a > 1 and b < 2 and d == 0", And((A, B, D))),
    ("a > 1 or b < 2 or d == 0", Or((A, B, D))),
    ("(a > 1 and b < 2) and d == 0", And((And((A, B)), D))),
    ("a > 1 and (b < 2 or d == 0)", And((A, Or((B, D))))),
    ("(a > 1 or b < 2) and d == 0", And((Or((A, B)), D))),
    ("not (a > 1 or b < 2)", Not(Or((A, B)))),
    ("not(a>1)", Not(A)),
    ("((a > 1))", A),
    ("(a>1)and(b<2)", And((A, B))),
    (
        "cw_pressure_mpa < 0.15 and casting_active == 1",
        And((C("cw_pressure_mpa", "<", 0.15), C("casting_active", "==", 1))),
    ),
]


@pytest.mark.parametrize(("text", "tree"), PARSES, ids=[t for t, _ in PARSES])
def test_parses(text: str, tree: object) -> None:
    assert parse_expr(text) == tree


@pytest.mark.parametrize(("text", "tree"), PARSES, ids=[t for t, _ in PARSES])
def test_format_round_trips(text: str, tree: object) -> None:
    canon = format_expr(parse_expr(text))
    assert parse_expr(canon) == tree
    assert format_expr(parse_expr(canon)) == canon  # canonical text is a fixed point


FORMATS = [
    ("a>1", "a > 1"),
    ("casting_active==true", "casting_active == 1"),
    ("a > 0.15", "a > 0.15"),
    ("a > 1e20", "a > 1e+20"),
    ("a > -0.0", "a > 0"),
    ("a>1 or b<2 and d==0", "a > 1 or b < 2 and d == 0"),
    ("(a>1 or b<2) and d==0", "(a > 1 or b < 2) and d == 0"),
    ("(a>1 and b<2) and d==0", "(a > 1 and b < 2) and d == 0"),
    ("(a>1 and b<2) or d==0", "a > 1 and b < 2 or d == 0"),
    ("not (a>1 and b<2)", "not (a > 1 and b < 2)"),
    ("not ((a>1))", "not a > 1"),
]


@pytest.mark.parametrize(("text", "canon"), FORMATS)
def test_canonical_text(text: str, canon: str) -> None:
    assert format_expr(parse_expr(text)) == canon


ERRORS = [
    # (text, 1-based column, words the message must contain)
    ("", 1, "expected a tag name"),
    ("   ", 4, "expected a tag name"),
    ("a > 1 and", 10, "expected a tag name, got the end of the expression"),
    ("a > 1 or", 9, "expected a tag name"),
    ("not", 4, "expected a tag name"),
    ("a", 2, "expected a comparison operator"),
    ("a 1", 3, "expected a comparison operator"),
    ("a > ", 5, "expected a number"),
    ("a > b", 5, "expected a number (or true / false), got 'b'"),
    ("a > 1 b > 2", 7, "expected 'and', 'or' or the end of the expression, got 'b'"),
    ("a > 1)", 6, "got ')'"),
    ("(a > 1", 7, "expected 'and', 'or' or ')'"),
    ("((a > 1) and b < 2", 19, "expected 'and', 'or' or ')'"),
    ("()", 2, "expected a tag name"),
    ("1 > a", 1, "comparisons are written 'tag op number'"),
    ("true == a", 1, "expected a tag name"),
    ("and > 1", 1, "expected a tag name, got 'and'"),
    ("a = 1", 3, "use '=='"),
    ("a > 1 and b ! 2", 13, "use 'not'"),
    ("a > 1 && b < 2", 7, "expected 'and' / 'or', got '&'"),
    ("a > 1 || b < 2", 7, "expected 'and' / 'or', got '|'"),
    ("a > 1e999", 5, "expected a finite number"),
    ("a > 1 and é > 2", 11, "got 'é'"),
    ("a > ١", 5, "got '١'"),  # Arabic-Indic digit: not a number here
    ("a > 1 and b < 2 and", 20, "expected a tag name"),
    ("a >> 1", 4, "expected a number"),
    ("a > 1.2.3", 8, "got '.3'"),
    ("a > nan", 5, "expected a number"),
    ("a > inf", 5, "expected a number"),
]


@pytest.mark.parametrize(("text", "column", "words"), ERRORS, ids=[t for t, _, _ in ERRORS])
def test_errors_name_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(ExprError) as info:
        parse_expr(text)
    err = info.value
    assert err.pos + 1 == column, str(err)
    assert words in str(err)
    assert str(err).startswith(f"at column {column} of {text!r}: ")


def test_message_shape_matches_the_contract() -> None:
    with pytest.raises(ExprError, match=r"^at column 10 of 'a > 1 and': expected a tag name"):
        parse_expr("a > 1 and")


def test_deep_nesting_is_a_clean_error_not_recursion() -> None:
    ok = "(" * MAX_DEPTH + "a > 1" + ")" * MAX_DEPTH
    assert parse_expr(ok) == A
    deep = "(" * 10_000 + "a > 1" + ")" * 10_000
    with pytest.raises(ExprError, match="nested"):
        parse_expr(deep[:MAX_EXPR_CHARS])
    with pytest.raises(ExprError, match="nested"):
        parse_expr("not " * 1000 + "a > 1")


def test_too_long_is_rejected_before_parsing() -> None:
    text = " or ".join(["a > 1"] * 1000)
    assert len(text) > MAX_EXPR_CHARS
    with pytest.raises(ExprError, match=f"at most {MAX_EXPR_CHARS} characters"):
        parse_expr(text)


def test_long_flat_chain_within_the_limit_parses() -> None:
    text = " and ".join(f"t{i} > {i}" for i in range(250))
    assert len(text) <= MAX_EXPR_CHARS
    tree = parse_expr(text)
    assert isinstance(tree, And) and len(tree.items) == 250


def test_not_a_string_is_an_expr_error() -> None:
    with pytest.raises(ExprError):
        parse_expr(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "tree",
    [
        C("a", ">", float("nan")),
        C("a", ">", float("inf")),
        C("and", ">", 1),
        C("1a", ">", 1),
        C("a", "=", 1),
        And(()),
    ],
    ids=["nan", "inf", "keyword-tag", "digit-tag", "bad-op", "empty-and"],
)
def test_format_refuses_trees_that_cannot_be_written(tree: object) -> None:
    with pytest.raises(ValueError):
        format_expr(tree)  # type: ignore[arg-type]


def test_format_collapses_one_item_chains() -> None:
    assert format_expr(And((A,))) == "a > 1"
    assert format_expr(Not(And((Or((A, B)),)))) == "not (a > 1 or b < 2)"
    assert format_expr(And((Or((And((A, B)),)), D))) == "(a > 1 and b < 2) and d == 0"
