"""The expression language of rule files (`when`, `expr`, `trigger`, `expect`): text <-> Expr trees.

Grammar (precedence `not` > `and` > `or`; `and`/`or` chains are flattened, parentheses are kept)::

    expr    := and_ ( "or" and_ )*
    and_    := not_ ( "and" not_ )*
    not_    := "not" not_ | "(" expr ")" | cmp
    cmp     := TAG OP NUMBER
    OP      := "==" | "!=" | "<" | "<=" | ">" | ">="
    NUMBER  := [+-]? digits [. digits] [e [+-] digits] | "true" (1) | "false" (0)
    TAG     := [A-Za-z_][A-Za-z0-9_.:-]*   (not a keyword)

Rules are data, never code: this is a hand-written tokenizer and recursive-descent parser; nothing is
passed to `eval` or Python's `ast`. Input is bounded (length and nesting depth) so that a hostile or
broken rule file yields a clean ExprError, never a RecursionError or a hang.

>>> format_expr(parse_expr("not(a>1) and (b == true or c<=-2.5e3)"))
'not a > 1 and (b == 1 or c <= -2500)'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from earlywarn.errors import ExprError
from earlywarn.rules.types import EXPR_OPS, And, Cmp, Expr, Not, Or

#: Longest expression text accepted; rule expressions are one line of a TOML file.
MAX_EXPR_CHARS = 4096
#: Deepest nesting of parentheses and `not`s; far beyond any sane rule, far below Python's recursion limit.
MAX_DEPTH = 64

KEYWORDS = frozenset({"and", "or", "not", "true", "false"})

# ASCII only on purpose: str.isdigit()/isalpha() accept Unicode digits and letters that float() and
# tag names do not.
_TAG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPACE = " \t\r\n"
_OPS_BY_LENGTH = sorted(EXPR_OPS, key=len, reverse=True)  # longest match first: "<=" before "<"
_CMP_HINT = "a comparison operator (==, !=, <, <=, >, >=)"


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "tag", "num", "op", "(", ")", "and", "or", "not", "true", "false", "end"
    text: str
    pos: int  # 0-based offset into the expression text


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACE:
            i += 1
            continue
        if ch in "()":
            toks.append(_Tok(ch, ch, i))
            i += 1
            continue
        op = next((o for o in _OPS_BY_LENGTH if text.startswith(o, i)), None)
        if op is not None:
            toks.append(_Tok("op", op, i))
            i += len(op)
            continue
        m = _TAG_RE.match(text, i)
        if m:
            word = m.group()
            toks.append(_Tok(word if word in KEYWORDS else "tag", word, i))
            i = m.end()
            continue
        m = _NUMBER_RE.match(text, i)
        if m:
            toks.append(_Tok("num", m.group(), i))
            i = m.end()
            continue
        if ch == "=":
            raise ExprError(text, i, f"expected {_CMP_HINT}, got '=' (use '==' to compare for equality)")
        if ch == "!":
            raise ExprError(text, i, f"expected {_CMP_HINT}, got '!' (use 'not' for negation)")
        if ch in "&|":
            raise ExprError(text, i, f"expected 'and' / 'or', got {ch!r}")
        raise ExprError(text, i, f"expected a tag name, number, operator or parenthesis, got {ch!r}")
    toks.append(_Tok("end", "", n))
    return toks


def _describe(t: _Tok) -> str:
    return "the end of the expression" if t.kind == "end" else repr(t.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def fail(self, t: _Tok, expected: str) -> ExprError:
        return ExprError(self.text, t.pos, f"expected {expected}, got {_describe(t)}")

    def enter(self, t: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(self.text, t.pos, f"expected at most {MAX_DEPTH} nested parentheses / 'not's")

    def parse(self) -> Expr:
        e = self.or_()
        t = self.peek()
        if t.kind != "end":
            raise self.fail(t, "'and', 'or' or the end of the expression" if self.depth == 0 else "')'")
        return e

    def or_(self) -> Expr:
        items = [self.and_()]
        while self.peek().kind == "or":
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Expr:
        items = [self.not_()]
        while self.peek().kind == "and":
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self) -> Expr:
        t = self.peek()
        if t.kind == "not":
            self.take()
            self.enter(t)
            inner = self.not_()
            self.depth -= 1
            return Not(inner)
        if t.kind == "(":
            self.take()
            self.enter(t)
            inner = self.or_()
            close = self.peek()
            if close.kind != ")":
                raise self.fail(close, "'and', 'or' or ')'")
            self.take()
            self.depth -= 1
            return inner
        return self.cmp()

    def cmp(self) -> Cmp:
        t = self.take()
        if t.kind != "tag":
            hint = " (comparisons are written 'tag op number')" if t.kind in ("num", "true", "false") else ""
            raise self.fail(t, "a tag name" + hint)
        op = self.take()
        if op.kind != "op":
            raise self.fail(op, _CMP_HINT)
        num = self.take()
        if num.kind == "true":
            value = 1.0
        elif num.kind == "false":
            value = 0.0
        elif num.kind == "num":
            value = float(num.text)
            if not math.isfinite(value):
                raise ExprError(self.text, num.pos, f"expected a finite number, got {num.text!r}")
        else:
            raise self.fail(num, "a number (or true / false)")
        return Cmp(t.text, op.text, value)


def parse_expr(text: str) -> Expr:
    """Parse expression text into an Expr tree; a problem raises ExprError with its column.

    >>> parse_expr("a > 1 and not b == 0")
    And(items=(Cmp(tag='a', op='>', value=1.0), Not(item=Cmp(tag='b', op='==', value=0.0))))
    >>> parse_expr("a > 1 and")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    earlywarn.errors.ExprError: at column 10 of 'a > 1 and': expected a tag name, got the end ...
    """
    if not isinstance(text, str):
        raise ExprError(repr(text), 0, f"expected an expression string, got {type(text).__name__}")
    if len(text) > MAX_EXPR_CHARS:
        # the error message quotes the text: keep it readable
        msg = f"expected at most {MAX_EXPR_CHARS} characters, got {len(text)}"
        raise ExprError(text[:60] + "...", 0, msg)
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------
# Formatting


def _format_number(v: float) -> str:
    if not math.isfinite(v):
        msg = f"expression values must be finite, got {v!r}"
        raise ValueError(msg)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))  # "casting_active == 1", not "== 1.0"
    return repr(float(v))  # shortest text that reads back as the same float


def _strip(e: Expr) -> Expr:
    """Collapse one-item And/Or chains (never produced by the parser) into their item."""
    while isinstance(e, (And, Or)) and len(e.items) == 1:
        e = e.items[0]
    return e


def _format(e: Expr) -> str:
    e = _strip(e)
    if isinstance(e, Cmp):
        if e.op not in EXPR_OPS:
            msg = f"unknown comparison operator {e.op!r}"
            raise ValueError(msg)
        if not _TAG_RE.fullmatch(e.tag) or e.tag in KEYWORDS:
            msg = f"{e.tag!r} cannot be written as a tag in an expression"
            raise ValueError(msg)
        return f"{e.tag} {e.op} {_format_number(float(e.value))}"
    if isinstance(e, Not):
        inner = _strip(e.item)
        body = _format(inner)
        return f"not ({body})" if isinstance(inner, (And, Or)) else f"not {body}"
    if isinstance(e, (And, Or)):
        if not e.items:
            msg = f"{type(e).__name__} with no items"
            raise ValueError(msg)
        word = " and " if isinstance(e, And) else " or "
        parts = []
        for raw in e.items:
            item = _strip(raw)
            s = _format(item)
            # Parentheses where precedence needs them, and around a nested chain of the same kind so that
            # the tree shape (which the parser keeps for parenthesised groups) survives the round trip.
            needs = isinstance(item, (And, Or)) and not (isinstance(e, Or) and isinstance(item, And))
            parts.append(f"({s})" if needs else s)
        return word.join(parts)
    msg = f"not an expression node: {e!r}"
    raise TypeError(msg)


def format_expr(e: Expr) -> str:
    """Canonical text of an expression tree: `parse_expr(format_expr(e)) == e` for every parsed tree.

    >>> format_expr(And((Or((Cmp("a", ">", 1.0), Cmp("b", "<", 0.5))), Not(Cmp("c", "==", 0.0)))))
    '(a > 1 or b < 0.5) and not c == 0'
    """
    return _format(e)
