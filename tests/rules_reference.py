"""Plain scalar reference for the rule engine: product.md §5 (and engine.py's docstring), one reading at a time.

No numpy, no vectorization, no cleverness: dictionaries of state, a loop over the readings of a batch in
(ts, arrival) order, and for every reading the rules that read its tag. The property tests check the
vectorized RuleEngine against this, signal for signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from earlywarn.model import Quality, Severity, Signal, SignalKind
from earlywarn.rules.types import And, Cmp, Expr, Not, Or, RuleKind, RuleSpec, expr_tags

Reading = tuple[str, str, int, "float | None", int]  # site, tag, ts_ms, value, quality
NEG_INF = -(2**63)
TREND_FLAT_REL = 1e-9


def _op(v: float, op: str, x: float) -> bool:
    return {
        "==": v == x, "!=": v != x, "<": v < x, "<=": v <= x, ">": v > x, ">=": v >= x,
    }[op]


def limit_c(v: float, op: str, limit: float) -> bool:
    """value op limit."""
    return _op(v, op, limit)


def limit_d(v: float, op: str, limit: float, deadband: float) -> bool:
    """The deadband clear zone of product.md §5."""
    if op == ">":
        return v <= limit - deadband
    if op == ">=":
        return v < limit - deadband
    if op == "<":
        return v >= limit + deadband
    return v > limit + deadband  # "<="


class Delay:
    """normal -> pending (on-delay) -> active -> returning (off-delay) -> normal, for one instance."""

    def __init__(self) -> None:
        self.c_start: int | None = None
        self.d_start: int | None = None
        self.active = False

    def step(self, ts: int, c: bool, d: bool, on_ms: int, off_ms: int) -> str | None:
        self.c_start = (ts if self.c_start is None else self.c_start) if c else None
        self.d_start = (ts if self.d_start is None else self.d_start) if d else None
        if not self.active and c and ts - self.c_start >= on_ms:  # type: ignore[operator]
            self.active = True
            return "raise"
        if self.active and d and ts - self.d_start >= off_ms:  # type: ignore[operator]
            self.active = False
            return "clear"
        return None


class ReferenceEngine:
    """Same API shape as RuleEngine, but readings are plain tuples and everything is a loop."""

    def __init__(self, site_rules: Mapping[str, Sequence[RuleSpec]]) -> None:
        self.rules = {s: [r for r in rs if r.enabled] for s, rs in site_rules.items()}
        self.rules = {s: rs for s, rs in self.rules.items() if rs}
        self.clock = NEG_INF
        self.last_ts: dict[tuple[str, str], int] = {}
        self.latest: dict[tuple[str, str], float] = {}
        self.hist: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self.first_good: dict[tuple[str, str], int] = {}
        self.site_newest: dict[str, int] = {}
        self.delay: dict[tuple[str, str, str], Delay] = {}
        self.stale_active: dict[tuple[str, str, str], bool] = {}
        # stale: last sign of life = max(ts, engine clock before the reading's batch), per sensor and site
        self.alive: dict[tuple[str, str], int] = {}
        self.site_alive: dict[str, int] = {}
        self.site_stale: dict[tuple[str, str], str | None] = {}  # "active", "gated" (gap seen, gate false)
        self.il: dict[tuple[str, str], dict[str, Any]] = {}
        self.ambiguous = False  # a trend evaluation landed within float noise of a boundary

    # --- helpers ---------------------------------------------------------------------------------

    def ev(self, site: str, e: Expr) -> bool:
        if isinstance(e, Cmp):
            v = self.latest.get((site, e.tag))
            return v is not None and _op(v, e.op, e.value)
        if isinstance(e, And):
            return all(self.ev(site, i) for i in e.items)
        if isinstance(e, Or):
            return any(self.ev(site, i) for i in e.items)
        assert isinstance(e, Not)
        return not self.ev(site, e.item)

    def sig(self, out: list[Any], site: str, pos: int, r: RuleSpec, tag: str, ts: int, value: float,
            kind: str, detail: str = "") -> None:
        s = Signal(site=site, tag=tag, rule_id=r.id, severity=Severity(r.severity),
                   kind=SignalKind(kind), ts_ms=ts, value=value, message=r.message, detail=detail)
        out.append(((ts, site, pos, tag, 0 if kind == "raise" else 1), s))

    def il_state(self, site: str, r: RuleSpec) -> dict[str, Any]:
        return self.il.setdefault((site, r.id), {"trig_last": False, "active": False, "arms": []})

    def il_fail(self, out: list[Any], site: str, clk: int) -> None:
        """Arms whose deadline the site clock has passed fail (raise unless already active)."""
        for pos, r in enumerate(self.rules[site]):
            if r.kind != RuleKind.INTERLOCK:
                continue
            st = self.il_state(site, r)
            keep = []
            for t0, dl in st["arms"]:
                if clk > dl:
                    if not st["active"]:
                        st["active"] = True
                        self.sig(out, site, pos, r, r.signal_tag, dl, math.nan, "raise", "interlock_failed")
                else:
                    keep.append((t0, dl))
            st["arms"] = keep

    # --- the per-kind conditions -----------------------------------------------------------------

    def single_cd(self, site: str, tag: str, r: RuleSpec, ts: int, value: float) -> tuple[bool, bool]:
        h = self.hist[(site, tag)]
        if r.kind == RuleKind.THRESHOLD:
            return limit_c(value, r.op, r.limit), limit_d(value, r.op, r.limit, r.deadband)  # type: ignore[arg-type]
        if r.kind == RuleKind.RATE:
            # the latest reading at or before ts - window (a zero window: the previous reading)
            ref = [(tj, vj) for tj, vj in h if tj <= ts - max(r.window_ms, 1)]
            if not ref:
                return False, False  # the history does not reach back a whole window: not evaluable
            tj, vj = ref[-1]
            rate = (value - vj) / (ts - tj) * 60000.0
            return limit_c(rate, r.op, r.limit), limit_d(rate, r.op, r.limit, r.deadband)  # type: ignore[arg-type]
        if r.kind == RuleKind.FLATLINE:
            if ts - self.first_good[(site, tag)] < r.window_ms:
                return False, False
            w = [v for t, v in h if t >= ts - r.window_ms]
            c = max(w) - min(w) <= r.epsilon
            return c, not c
        assert r.kind == RuleKind.TREND
        if ts - self.first_good[(site, tag)] < r.window_ms:
            return False, False  # the history does not cover the window yet
        pts = [(t, v) for t, v in h if t >= ts - r.window_ms]
        n = len(pts)
        if n < 3:
            return False, False
        xs = [(t - ts) / 1000.0 for t, _ in pts]
        ys = [v for _, v in pts]
        xm = sum(xs) / n
        ym = sum(ys) / n
        sxx = sum((x - xm) ** 2 for x in xs)
        sxy = sum((x - xm) * (y - ym) for x, y in zip(xs, ys))
        syy = sum((y - ym) ** 2 for y in ys)
        flat_tol = TREND_FLAT_REL * n * (1.0 + ym * ym)
        if syy <= flat_tol:
            if syy > flat_tol * 1e-3:
                self.ambiguous = True
            return False, True
        slope = sxy / sxx
        f = ym + slope * (r.horizon_ms / 1000.0 - xm)
        r2 = sxy * sxy / (sxx * syy)
        if abs(f - r.limit) <= 1e-6 * (1 + abs(r.limit)) or abs(r2 - r.min_r2) <= 1e-6 or syy < flat_tol * 1e3:  # type: ignore[arg-type,operator]
            self.ambiguous = True
        c = limit_c(f, r.op, r.limit) and r2 >= r.min_r2  # type: ignore[arg-type]
        return c, not c

    # --- the loop --------------------------------------------------------------------------------

    def evaluate(self, readings: Sequence[Reading], now_ms: int) -> tuple[list[Signal], int, int]:
        clock_prev = self.clock
        out: list[Any] = []
        late = evaluated = 0
        for site, tag, ts, value, q in sorted(readings, key=lambda r: r[2]):  # stable
            if site not in self.rules:
                continue
            key = (site, tag)
            prev = self.last_ts.get(key)
            if prev is not None and ts <= prev:
                late += 1
                continue
            evaluated += 1
            self.last_ts[key] = ts
            newest = max(self.site_newest.get(site, NEG_INF), ts)
            self.site_newest[site] = newest
            clk = max(clock_prev, newest)
            self.il_fail(out, site, clk)
            self.site_stale_step(out, site, ts, value, clk)  # gates read the values before this reading
            bad = q == Quality.BAD or value is None or math.isnan(value)
            if not bad:
                assert value is not None
                self.latest[key] = value
                self.hist.setdefault(key, []).append((ts, value))
                self.first_good.setdefault(key, ts)
            alive = self.alive.get(key)
            for pos, r in enumerate(self.rules[site]):
                self.one_rule(out, site, tag, ts, value, bad, alive, clk, pos, r)
            self.alive[key] = max(alive if alive is not None else NEG_INF, ts, clock_prev)
            self.site_alive[site] = max(self.site_alive.get(site, NEG_INF), ts, clock_prev)
        self.clock = max(clock_prev, now_ms)
        self.end(out)
        out.sort(key=lambda x: x[0])
        return [s for _, s in out], late, evaluated

    def one_rule(self, out: list[Any], site: str, tag: str, ts: int, value: float | None, bad: bool,
                 prev: int | None, clk: int, pos: int, r: RuleSpec) -> None:
        k = r.kind
        if k == RuleKind.STALE:
            if r.tag != tag:
                return
            sk = (site, r.id, tag)
            if prev is not None:
                if self.stale_active.get(sk):
                    self.sig(out, site, pos, r, tag, ts, _f(value), "clear")
                elif clk > prev + r.timeout_ms:
                    self.sig(out, site, pos, r, tag, prev + r.timeout_ms, math.nan, "raise")
                    self.sig(out, site, pos, r, tag, ts, _f(value), "clear")
            self.stale_active[sk] = False
            return
        if k == RuleKind.QUALITY:
            if r.tag != tag:
                return
            c = bad or (r.range is not None and (value < r.range[0] or value > r.range[1]))  # type: ignore[operator]
            self.delay_step(out, site, pos, r, r.tag, ts, _f(value), c, not c)
            return
        if bad:
            return
        assert value is not None
        if k in (RuleKind.THRESHOLD, RuleKind.RATE, RuleKind.FLATLINE, RuleKind.TREND):
            if r.tag != tag:
                return
            c, d = self.single_cd(site, tag, r, ts, value)
            self.delay_step(out, site, pos, r, tag, ts, value, c, d)
        elif k == RuleKind.VOTE:
            if tag not in r.tags:
                return
            n_trip = n_out = 0
            for t in r.tags:
                v = self.latest.get((site, t))
                if v is None:
                    continue
                n_trip += limit_c(v, r.op, r.limit)  # type: ignore[arg-type]
                n_out += not limit_d(v, r.op, r.limit, r.deadband)  # type: ignore[arg-type]
            self.delay_step(out, site, pos, r, r.signal_tag, ts, value, n_trip >= r.k, n_out < r.k)
        elif k == RuleKind.EXPR:
            assert r.expr is not None
            if tag not in expr_tags(r.expr):
                return
            c = self.ev(site, r.expr)
            self.delay_step(out, site, pos, r, r.signal_tag, ts, value, c, not c)
        elif k == RuleKind.INTERLOCK:
            assert r.trigger is not None and r.expect is not None
            is_t = tag in expr_tags(r.trigger)
            is_x = tag in expr_tags(r.expect)
            if not (is_t or is_x):
                return
            st = self.il_state(site, r)
            trig = self.ev(site, r.trigger)
            expect = self.ev(site, r.expect)
            if st["active"] and (expect or not trig):
                st["active"] = False
                self.sig(out, site, pos, r, r.signal_tag, ts, value, "clear")
            if is_x and expect:
                st["arms"] = []  # every pending arm (deadline not passed yet) is satisfied
            if is_t:
                if trig and not st["trig_last"] and not expect:
                    st["arms"].append((ts, ts + r.within_ms))
                st["trig_last"] = trig

    def site_stale_step(self, out: list[Any], site: str, ts: int, value: float | None, clk: int) -> None:
        """Site-wide stale rules (tag "*") at a reading of any tag of the site."""
        a = self.site_alive.get(site)
        for pos, r in enumerate(self.rules[site]):
            if r.kind != RuleKind.STALE or r.tag != "*":
                continue
            sk = (site, r.id)
            state = self.site_stale.get(sk)
            if a is not None:
                if state == "active":
                    self.sig(out, site, pos, r, "*", ts, _f(value), "clear")
                elif state is None and clk > a + r.timeout_ms and (r.when is None or self.ev(site, r.when)):
                    self.sig(out, site, pos, r, "*", a + r.timeout_ms, math.nan, "raise")
                    self.sig(out, site, pos, r, "*", ts, _f(value), "clear")
            self.site_stale[sk] = None

    def delay_step(self, out: list[Any], site: str, pos: int, r: RuleSpec, tag: str, ts: int, value: float,
                   c: bool, d: bool) -> None:
        if r.when is not None:
            g = self.ev(site, r.when)
            c = c and g
            d = d or not g
        st = self.delay.setdefault((site, r.id, tag), Delay())
        ev = st.step(ts, c, d, r.on_delay_ms, r.off_delay_ms)
        if ev:
            self.sig(out, site, pos, r, tag, ts, value, ev)

    def end(self, out: list[Any]) -> None:
        for site, rules in self.rules.items():
            sc = max(self.clock, self.site_newest.get(site, NEG_INF))
            for pos, r in enumerate(rules):
                if r.kind != RuleKind.STALE:
                    continue
                if r.tag == "*":
                    a = self.site_alive.get(site)
                    sk2 = (site, r.id)
                    if a is not None and self.site_stale.get(sk2) is None and sc > a + r.timeout_ms:
                        if r.when is None or self.ev(site, r.when):
                            self.site_stale[sk2] = "active"
                            self.sig(out, site, pos, r, "*", a + r.timeout_ms, math.nan, "raise")
                        else:
                            self.site_stale[sk2] = "gated"
                    continue
                for (s, tag), last in self.alive.items():
                    if s != site or r.tag != tag:
                        continue
                    sk = (site, r.id, tag)
                    if not self.stale_active.get(sk) and sc > last + r.timeout_ms:
                        self.stale_active[sk] = True
                        self.sig(out, site, pos, r, tag, last + r.timeout_ms, math.nan, "raise")
            self.il_fail(out, site, sc)

    def tick(self, now_ms: int) -> list[Signal]:
        self.clock = max(self.clock, now_ms)
        out: list[Any] = []
        self.end(out)
        out.sort(key=lambda x: x[0])
        return [s for _, s in out]


def _f(v: float | None) -> float:
    return math.nan if v is None else v
