"""Rule vocabulary shared by the loader (spec.py), the expression parser (expr.py) and the engine.

Rules are data: a rule file becomes RuleSpecs and expression trees made of the node types below,
never Python code. Durations are integer milliseconds (`_ms`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from earlywarn.model import Severity


class RuleKind(enum.StrEnum):
    THRESHOLD = "threshold"
    RATE = "rate"
    STALE = "stale"
    FLATLINE = "flatline"
    QUALITY = "quality"
    VOTE = "vote"
    EXPR = "expr"
    INTERLOCK = "interlock"
    TREND = "trend"


#: Comparison operators allowed in `op` keys of threshold / rate / vote / trend rules.
LIMIT_OPS: tuple[str, ...] = (">", ">=", "<", "<=")
#: Comparison operators allowed inside expressions.
EXPR_OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=")


# --- expression trees ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cmp:
    """`tag op value`; the tag means its latest value at or before the evaluated event time."""

    tag: str
    op: str  # one of EXPR_OPS
    value: float


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = Cmp | And | Or | Not


def expr_tags(e: Expr) -> tuple[str, ...]:
    """Tags an expression reads, in first-seen order, without repeats."""
    out: list[str] = []

    def walk(n: Expr) -> None:
        if isinstance(n, Cmp):
            if n.tag not in out:
                out.append(n.tag)
        elif isinstance(n, (And, Or)):
            for i in n.items:
                walk(i)
        else:
            walk(n.item)

    walk(e)
    return tuple(out)


# --- rules ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One validated rule of one plant's rule file (site overrides already applied, if any).

    Which keys matter depends on `kind` (product.md §5); the others keep their defaults.
    """

    id: str
    kind: RuleKind
    plant: str
    severity: Severity
    message: str = ""
    enabled: bool = True
    source: str = ""  # "file.toml" the rule came from, for messages
    # single-tag kinds: threshold, rate, stale ("*" = any tag of the site), flatline, quality, trend
    tag: str | None = None
    # vote
    tags: tuple[str, ...] = ()
    k: int = 0
    # threshold, rate, vote, trend
    op: str | None = None
    limit: float | None = None
    deadband: float = 0.0
    # common timing
    on_delay_ms: int = 0
    off_delay_ms: int = 0
    when: Expr | None = None
    # rate, flatline, trend
    window_ms: int = 0
    # stale
    timeout_ms: int = 0
    # flatline
    epsilon: float = 0.0
    # quality: instrument range (lo, hi); None = only bad quality raises
    range: tuple[float, float] | None = None
    # expr
    expr: Expr | None = None
    # interlock
    trigger: Expr | None = None
    expect: Expr | None = None
    within_ms: int = 0
    # trend
    horizon_ms: int = 0
    min_r2: float = 0.0

    @property
    def signal_tag(self) -> str:
        """The tag alarms of this rule are keyed on (product.md §6)."""
        if self.tag is not None:
            return self.tag
        if self.tags:
            return self.tags[0]
        for e in (self.expr, self.trigger):
            if e is not None:
                return expr_tags(e)[0]
        return self.id


@dataclass(frozen=True, slots=True)
class TagSpec:
    """A tag declared by a rule file: name, unit, description, instrument range."""

    name: str
    unit: str = ""
    description: str = ""
    range: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class RulePack:
    """A plant type's rule file, validated."""

    plant: str
    source: str
    tags: tuple[TagSpec, ...]
    rules: tuple[RuleSpec, ...]
