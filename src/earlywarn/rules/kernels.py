"""Pure, vectorized kernels of the rule engine: numpy in, numpy out, no state of their own.

Every kernel works on *segments*: points grouped contiguously by an integer key (a rule instance or a
sensor) and in event-time order inside each segment. Carried state from earlier batches comes in as
per-key arrays and the updated state goes out the same way, so a whole micro-batch over all sensors is a
handful of array operations, with no Python loop per reading or per sensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Marker for "no run in progress" / "no timestamp" in int64 ms columns.
NONE_TS: int = np.iinfo(np.int64).min

BoolA = npt.NDArray[np.bool_]
IntA = npt.NDArray[np.int64]
FloatA = npt.NDArray[np.float64]

#: Codes of the limit operators, in the order of types.LIMIT_OPS.
OP_CODES: dict[str, int] = {">": 0, ">=": 1, "<": 2, "<=": 3}


def segment_first(keys: npt.NDArray[np.integer]) -> BoolA:
    """True where a new segment starts (keys grouped contiguously).

    >>> segment_first(np.array([3, 3, 1, 1, 1])).tolist()
    [True, False, True, False, False]
    """
    first = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return first


def segment_last(keys: npt.NDArray[np.integer]) -> BoolA:
    """True where a segment ends."""
    last = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return last


def ffill_index(marked: BoolA) -> IntA:
    """Index of the latest marked position at or before each position (-1 if none).

    >>> ffill_index(np.array([False, True, False, True])).tolist()
    [-1, 1, 1, 3]
    """
    idx = np.where(marked, np.arange(len(marked), dtype=np.int64), -1)
    return np.maximum.accumulate(idx) if len(idx) else idx


def expand_ranges(starts: IntA, lens: IntA) -> IntA:
    """Concatenate `arange(s, s + n)` for each (s, n) without a Python loop.

    >>> expand_ranges(np.array([5, 0]), np.array([2, 3])).tolist()
    [5, 6, 0, 1, 2]
    """
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lens)
    offs = np.repeat(starts - (ends - lens), lens)
    return offs + np.arange(total, dtype=np.int64)


def signed_limit(op_code: IntA | int) -> tuple[npt.NDArray[np.float64], BoolA]:
    """Sign and strictness of a limit operator.

    Comparisons are folded onto ``s*v > s*limit`` (strict) or ``>=`` (non-strict) with s = +1 for
    `>`/`>=` and -1 for `<`/`<=`; negation is exact in IEEE arithmetic, so the folded comparisons equal
    the literal ones of product.md §5 bit for bit.
    """
    code = np.asarray(op_code)
    sign = np.where(code <= 1, 1.0, -1.0)
    strict = (code == 0) | (code == 2)
    return sign, strict


def limit_conditions(
    value: FloatA, op_code: IntA, limit: FloatA, deadband: FloatA
) -> tuple[BoolA, BoolA]:
    """Raise condition `c` and deadband clear condition `d` of `value op limit` (product.md §5).

    `>`: c = v > L, d = v <= L - db; `>=`: c = v >= L, d = v < L - db; `<`: c = v < L, d = v >= L + db;
    `<=`: c = v <= L, d = v > L + db. NaN values give neither.

    >>> c, d = limit_conditions(np.array([5.0, 3.0, 3.5]), np.array([0, 0, 0]), np.full(3, 4.0), np.full(3, 1.0))
    >>> c.tolist(), d.tolist()
    ([True, False, False], [False, True, False])
    """
    sign, strict = signed_limit(op_code)
    v = sign * value
    lim = sign * limit
    c = (v > lim) | (~strict & (v == lim))
    clr = lim - deadband
    d = (v < clr) | (strict & (v == clr))
    return c, d


def folded_limits(op_code: IntA, limit: FloatA, deadband: FloatA) -> tuple[FloatA, FloatA, FloatA]:
    """Per-rule constants (sign, raise_above, clear_below) for `folded_conditions`.

    With v' = sign * v: c = v' > raise_above and d = v' < clear_below, exactly equal to the literal
    comparisons of `limit_conditions` (a non-strict `>=` is `>` the next float down; `<=` is `<` the
    next float up; negation and the symmetric rounding of `-L - db` are exact).
    """
    sign, strict = signed_limit(op_code)
    lim = sign * limit
    clr = lim - deadband
    raise_above = np.where(strict, lim, np.nextafter(lim, -np.inf))
    clear_below = np.where(strict, np.nextafter(clr, np.inf), clr)
    return sign, raise_above, clear_below


def folded_conditions(value: FloatA, sign: FloatA, raise_above: FloatA, clear_below: FloatA) -> tuple[BoolA, BoolA]:
    """Same result as `limit_conditions`, in three array operations (constants from `folded_limits`).

    >>> s, a, b = folded_limits(np.array([0, 1, 2, 3]), np.full(4, 4.0), np.full(4, 1.0))
    >>> v = np.array([4.0, 4.0, 5.0, 5.0])
    >>> [x.tolist() for x in folded_conditions(v, s, a, b)] == [x.tolist() for x in limit_conditions(v, np.array([0, 1, 2, 3]), np.full(4, 4.0), np.full(4, 1.0))]
    True
    """
    v = value * sign
    return v > raise_above, v < clear_below


@dataclass(slots=True)
class DelayOutput:
    """Events chosen by `delay_kernel` plus the new carried state of the instances it saw."""

    event_pos: IntA  # positions (into the kernel's point arrays) of the chosen events, in order
    event_raise: BoolA  # True = raise, False = clear
    inst: IntA  # instances present in the input (one entry each, in segment order)
    c_start_ms: IntA  # new carried start of the raise-condition run (NONE_TS = no run)
    d_start_ms: IntA  # new carried start of the clear-condition run
    active: BoolA  # new alarm state


def delay_kernel(
    inst: IntA,
    ts_ms: IntA,
    c: BoolA,
    d: BoolA,
    on_delay_ms: IntA,
    off_delay_ms: IntA,
    c_start_prev_ms: IntA,
    d_start_prev_ms: IntA,
    active_prev: BoolA,
) -> DelayOutput:
    """The one shared on-delay / off-delay / alternation kernel.

    Points are grouped contiguously by `inst` and in event-time order inside each group; `c` and `d`
    are mutually exclusive. `on_delay_ms`/`off_delay_ms` are per point (the delays of each point's
    instance); the `*_prev` arrays are indexed by instance id. A point is *raise-eligible* when `c`
    held over the whole current run of `c` and the run has lasted at least `on_delay_ms` (the run may
    have started in an earlier batch: its start is carried); *clear-eligible* likewise for `d` and `off_delay_ms`. Because a raise point is never a
    `d` point (and vice versa), eligibility does not depend on the alarm state, and the actual events
    are simply the first eligible point of each block of same-kind eligible points, starting from the
    carried state: raise, clear, raise, ... No loop per point.
    """
    n = len(inst)
    if n == 0:
        e = np.zeros(0, dtype=np.int64)
        return DelayOutput(e, np.zeros(0, dtype=bool), e, e, e, np.zeros(0, dtype=bool))
    first = segment_first(inst)
    first_pos = np.flatnonzero(first)
    seg_inst = inst[first_pos]
    ar = np.arange(n, dtype=np.int64)

    def run_start(cond: BoolA, carried: IntA) -> IntA:
        """Start ts of the run of `cond` each point belongs to (meaningful only where cond holds)."""
        # a run starts where cond holds and did not at the point before (a segment's first point: a
        # run starts unless one is carried over from the last batch, which starts at the carried ts)
        marks = cond.copy()
        np.greater(cond[1:], cond[:-1], out=marks[1:])
        carried_here = carried[seg_inst]
        marks[first_pos] = cond[first_pos]
        cont = first_pos[cond[first_pos] & (carried_here != NONE_TS)]  # runs carried over from the last batch
        ts_x = ts_ms
        if len(cont):
            ts_x = ts_ms.copy()
            ts_x[cont] = carried[inst[cont]]
        idx = np.where(marks, ar, 0)
        np.maximum.accumulate(idx, out=idx)
        return ts_x.take(idx)

    c_start = run_start(c, c_start_prev_ms)
    d_start = run_start(d, d_start_prev_ms)
    # zero delays (the common case for many rules) need no duration check at all
    elig_r = c & (ts_ms - c_start >= on_delay_ms) if on_delay_ms.any() else c
    elig_d = d & (ts_ms - d_start >= off_delay_ms) if off_delay_ms.any() else d

    e = np.flatnonzero(elig_r | elig_d)
    typ = elig_r[e]
    ei = inst[e]
    prev_t = np.empty(len(e), dtype=bool)
    if len(e):
        prev_t[1:] = typ[:-1]
        ef = segment_first(ei)
        prev_t[ef] = active_prev[ei[ef]]
    sel = typ != prev_t

    last = segment_last(inst)
    active_new = active_prev[seg_inst].copy()
    if len(e):
        el = segment_last(ei)
        # map each instance's last eligible type onto its segment slot
        slot = np.searchsorted(first_pos, e[el], side="right") - 1
        active_new[slot] = typ[el]
    return DelayOutput(
        event_pos=e[sel],
        event_raise=typ[sel],
        inst=seg_inst,
        c_start_ms=np.where(c[last], c_start[last], NONE_TS),
        d_start_ms=np.where(d[last], d_start[last], NONE_TS),
        active=active_new,
    )


class SparseRange:
    """Range max / min queries over a float array, for all query ranges at once.

    Used for flatline's max - min over a time window of a segment (a flatline's history can hold a day of
    readings, while a batch queries only the windows of its new points). Block decomposition: the array is
    cut into blocks of `BLOCK` values, each block's max / min taken once, with a sparse table over the
    blocks built up to the levels the queries need. A range spanning several blocks is max / min of
    suffix(lo) + whole blocks + prefix(hi), the running max / min from lo to the end of its block and from
    the start of hi's block to hi, computed only for the blocks some query starts or ends in. A range inside
    one block is scanned directly (at most BLOCK values). max / min are exact whatever the grouping, so the
    results equal those over the range itself (a NaN in the range gives NaN, as np.maximum does).
    """

    BLOCK = 32

    def __init__(self, values: FloatA) -> None:
        v = np.asarray(values, dtype=np.float64)
        n, bs = len(v), self.BLOCK
        nb = -(-n // bs)
        self.v = v
        if nb * bs == n:
            self.blocks = v.reshape(nb, bs)
        else:
            pad = np.empty(nb * bs)
            pad[:n] = v
            pad[n:] = v[-1]  # never inside a query: ranges end at or before n - 1
            self.blocks = pad.reshape(nb, bs)
        # sparse tables over the blocks: level k holds the max / min of blocks [b, b + 2**k)
        self.bmx = [self.blocks.max(axis=1)] if nb else []
        self.bmn = [self.blocks.min(axis=1)] if nb else []

    def _levels(self, top: int) -> None:
        """Sparse-table levels over the blocks up to `top`."""
        while len(self.bmx) <= top:
            k = 1 << (len(self.bmx) - 1)
            pm, pn = self.bmx[-1], self.bmn[-1]
            self.bmx.append(np.maximum(pm[:-k], pm[k:]))
            self.bmn.append(np.minimum(pn[:-k], pn[k:]))

    def _running(self, blk: IntA, off: IntA, suffix: bool) -> tuple[FloatA, FloatA]:
        """Running max and min within their block, from the block's start to `off` (or from `off` to its
        end), for positions given as (block, offset): only the blocks named are accumulated."""
        need = np.zeros(len(self.bmx[0]), dtype=bool)
        need[blk] = True
        ub = np.flatnonzero(need)
        rank = np.cumsum(need) - 1
        sub = self.blocks[ub]
        if suffix:
            sub = sub[:, ::-1]
            off = self.BLOCK - 1 - off
        at = rank[blk] * self.BLOCK + off
        mx = np.maximum.accumulate(sub, axis=1).ravel().take(at)
        mn = np.minimum.accumulate(sub, axis=1).ravel().take(at)
        return mx, mn

    def spread(self, lo: IntA, hi: IntA) -> FloatA:
        """max - min over the inclusive index ranges [lo, hi] (lo <= hi)."""
        lo = np.asarray(lo, dtype=np.int64)
        hi = np.asarray(hi, dtype=np.int64)
        out = np.empty(len(lo))
        if not len(lo):
            return out
        bs = self.BLOCK
        blo, bhi = lo // bs, hi // bs
        multi = blo < bhi
        m = np.flatnonzero(multi)
        if len(m):
            a, z = lo[m], hi[m]
            b0, b1 = blo[m], bhi[m]
            smx, smn = self._running(b0, a - b0 * bs, suffix=True)
            pmx, pmn = self._running(b1, z - b1 * bs, suffix=False)
            mx, mn = np.maximum(smx, pmx), np.minimum(smn, pmn)
            # whole blocks strictly between (none when the two blocks are adjacent)
            b0, b1 = b0 + 1, b1 - 1
            inner = np.flatnonzero(b0 <= b1)
            if len(inner):
                b0, b1 = b0[inner], b1[inner]
                lvl = np.log2(b1 - b0 + 1).astype(np.int64)  # floor; exact at powers of two
                self._levels(int(lvl.max()))
                for k in np.unique(lvl).tolist():  # a loop over levels (at most log2 of the blocks)
                    sel = np.flatnonzero(lvl == k)
                    x, y = b0[sel], b1[sel] - (1 << k) + 1
                    t_mx, t_mn = self.bmx[k], self.bmn[k]
                    at = inner[sel]
                    mx[at] = np.maximum(mx[at], np.maximum(t_mx.take(x), t_mx.take(y)))
                    mn[at] = np.minimum(mn[at], np.minimum(t_mn.take(x), t_mn.take(y)))
            out[m] = mx - mn
        s = np.flatnonzero(~multi)
        if len(s):  # inside one block: a scan of at most BLOCK values
            a, z = lo[s], hi[s]
            mx, mn = self.v.take(a), self.v.take(a)
            length = z - a
            for d in range(1, int(length.max()) + 1):
                on = np.flatnonzero(length >= d)
                x = self.v.take(a[on] + d)
                mx[on] = np.maximum(mx[on], x)
                mn[on] = np.minimum(mn[on], x)
            out[s] = mx - mn
        return out


def window_start(seg: IntA, ts_ms: IntA, pos: IntA, window_ms: IntA) -> IntA:
    """Index of the earliest point with ts >= ts[pos] - window in the same segment, per query.

    `seg` is a non-decreasing segment key per point (ts ascending inside a segment); `pos` are query
    positions with their own `window_ms`. One searchsorted on the composite key (segment, relative ts)
    serves all segments at once.

    >>> window_start(np.array([0, 0, 0, 1, 1]), np.array([0, 10, 20, 5, 30]), np.array([2, 4]), np.array([10, 100])).tolist()
    [1, 3]
    """
    if len(pos) == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = int(ts_ms.min())
    span = int(ts_ms.max()) - t0 + int(window_ms.max()) + 2
    key = seg.astype(np.int64) * span + (ts_ms - t0)
    j = np.searchsorted(key, key[pos] - window_ms, side="left")
    seg_first = np.searchsorted(seg, seg[pos], side="left")
    return np.maximum(j, seg_first).astype(np.int64)
