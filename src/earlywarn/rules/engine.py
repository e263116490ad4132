"""RuleEngine: vectorized evaluation of micro-batches of readings into raise / clear Signals.

Semantics (product.md §5 is authoritative; the choices below fill in what it leaves open):

* Readings of sites without rules are ignored (neither evaluated nor late). Per (site, tag), a reading
  whose ts <= the last evaluated ts of that sensor is *late* (or a duplicate): counted, not evaluated.
  Inside a batch readings are sorted by ts, stably, so equal timestamps keep arrival order; of two
  readings of one sensor with the same ts only the first is evaluated. Bad readings (quality BAD, or a
  null / NaN value) count as evaluated readings of their sensor but feed only `quality` and `stale`.
* A tag in an expression (`when`, `expr`, `trigger`, `expect`, and vote members) means the latest good
  value of that (site, tag) at or before the evaluated reading *in stream order* ((ts, arrival) order
  within the site): ties at one ts are resolved by arrival, which is what makes any split into batches
  give the same result. A comparison on a tag without a value yet is false (also for `!=`).
* Delay kinds (threshold, rate, flatline, quality, trend, vote, expr) compute, per evaluation point, a
  raise condition `c` and a clear condition `d` (exclusive; a point may be neither, which breaks both
  runs), then one shared kernel (kernels.delay_kernel) applies on_delay / off_delay: raise at the first
  point where `c` held over the whole current run for >= on_delay, clear at the first point where `d`
  held over its current run for >= off_delay, alternating from the carried alarm state.
  A `when` gate applies to every delay kind: c &= gate, d |= not gate (at every evaluation point).
* threshold: c = v op limit, d = opposite side by >= deadband.
* rate: rate_i = (v_i - v_j) / (t_i - t_j) * 60000 with r_j the latest good reading with
  t_j <= t_i - window (t_j < t_i for a zero window), so the change spans at least the window; without
  such r_j (a cold start) the point is neither c nor d. The history tail keeps that reading.
* flatline: evaluable once t_i - first good ts >= window; c = max - min over [t_i - window, t_i]
  <= epsilon, d = not c.
* quality: at every reading (bad ones too): c = bad or value outside `range`, d = not c.
* trend: evaluable once t_i - first good ts >= window (like flatline: no forecast from a partly
  filled window at a cold start); OLS over good readings with ts in [t_i - window, t_i] (>= 3 points), forecast at
  t_i + horizon; c = forecast op limit and R^2 >= min_r2; flat data (centred sum of squares of values
  <= 1e-9 * n * (1 + mean^2)) is not c; d = not c when evaluable.
* vote: at each good reading of a member: n = members whose latest value satisfies op limit,
  m = members with a value outside the deadband clear zone; c = n >= k, d = m < k.
* expr: at each good reading of a tag of the expression: c = expr, d = not c.
* stale (no delays): instances are per (site, tag) for `tag = "x"` and ONE per site for `tag = "*"`
  (the gateway: its readings of every tag, merged in stream order). Every evaluated reading, good or
  bad, is a sign of life; alive = max(its ts, the engine clock before its batch) -- live, a reading did
  not arrive before that clock, so a backlog flushed after an outage is not stale again; in a replay the
  clock is event time and alive is the newest ts. The clock of a site is max(engine clock, newest ts of
  that site so far) (the engine clock is the max of every now_ms passed in; within a batch it is applied
  only at the end, so that a replay split anywhere gives the same result). A gap alive -> next reading is
  stale when that clock exceeds alive + timeout before or at the next reading: raise at alive + timeout,
  clear at the next reading's ts (for "*": the site's next reading of any tag). An instance that never
  saw a reading is never stale. `when` only on "*" rules: read on the site's latest good values at
  alive + timeout (no site reading lies in between: the values when the site went silent); false =
  no raise and no clear for that gap.
* interlock (no delays, no gate): evaluation points are good readings of trigger or expect tags. A
  trigger edge (false -> true between consecutive readings of trigger tags; initially false) at t0 arms
  a check; it is satisfied if `expect` holds at the edge point or at a later expect-tag reading processed
  while the site clock was still <= t0 + within (so ts <= t0 + within). Otherwise, once the site clock
  exceeds t0 + within (at a later reading of the site, or at the end of a batch / a tick), the rule
  raises at t0 + within (detail "interlock_failed", value NaN), unless its alarm is still active; it
  clears at the first evaluation point after that where expect holds or trigger is false.
* Batch-split invariance: for streams in which each site's readings are in non-decreasing ts order, any
  cut into batches gives the same signals, because every clock used in a batch is per site and now_ms
  only counts at the end of the batch. A now_ms ahead of a lagging site's data (live wall clock, or the
  replay convention max(now, batch max ts) over interleaved sites) is real information about that site
  and can legitimately make a gap stale or an interlock overdue earlier; with globally ts-ordered
  replays the convention is split-invariant too (both are property-tested).
* Signal tags: the rule's tag; vote: first member; expr: first tag of the expression; interlock: first
  trigger tag; stale "*": "*".
* Signals of one call are sorted by (ts, site, rule position in the site's list, tag, raise before
  clear). A signal found in a later batch (e.g. stale detected late) may carry an older ts.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import polars as pl

from earlywarn.model import (
    SITE_HASH_SEED,
    TAG_HASH_SEED,
    Quality,
    ReadingBatch,
    Signal,
    SignalKind,
    name_hashes,
)
from earlywarn.rules.kernels import (
    NONE_TS,
    OP_CODES,
    SparseRange,
    delay_kernel,
    expand_ranges,
    ffill_index,
    folded_conditions,
    folded_limits,
    segment_first,
    segment_last,
)
from earlywarn.rules.state import EngineState, KeyTable, _grow, bisect
from earlywarn.rules.types import And, Cmp, Expr, Not, Or, RuleKind, RuleSpec, expr_tags

_BAD = int(Quality.BAD)
_RAISE, _CLEAR = SignalKind.RAISE, SignalKind.CLEAR
_I64 = np.int64
_I32 = np.int32

# delay-kind codes
_K_THRESHOLD, _K_RATE, _K_FLATLINE, _K_QUALITY, _K_TREND, _K_VOTE, _K_EXPR = range(7)
_SINGLE_KINDS = {
    RuleKind.THRESHOLD: _K_THRESHOLD,
    RuleKind.RATE: _K_RATE,
    RuleKind.FLATLINE: _K_FLATLINE,
    RuleKind.QUALITY: _K_QUALITY,
    RuleKind.TREND: _K_TREND,
}
_WINDOWED = (_K_RATE, _K_FLATLINE, _K_TREND)
_TREND_FLAT_REL = 1e-9
_SIG_ORDER = itemgetter(0, 1, 2, 3, 4)  # (ts, site, rule position, tag, raise before clear)


@dataclass(frozen=True, slots=True)
class EvalResult:
    """What one `evaluate` call produced."""

    signals: list[Signal]  # in event-time order (ts_ms, then a stable order)
    late: int  # readings not evaluated because ts <= the last evaluated ts of their (site, tag)
    evaluated: int


@dataclass(frozen=True, slots=True)
class NameCodes:
    """The `site` and `tag` of every row of a batch as codes into lists of distinct names.

    A caller that holds a whole input (a replay) codes its names once, which is cheaper than hashing two
    string columns per batch; the engine maps these codes to its own through a small table per name list
    (the same list object from batch to batch: keep passing it). Codes must be exact (`names[code]` is
    the row's name): they replace the names, nothing checks them against the frame.
    """

    site: np.ndarray  # per row: index into site_names (any integer dtype)
    tag: np.ndarray  # per row: index into tag_names
    site_names: Sequence[str]
    tag_names: Sequence[str]

    def slice(self, start: int, end: int) -> NameCodes:
        """The codes of rows [start, end) (views; the same name lists)."""
        return NameCodes(self.site[start:end], self.tag[start:end], self.site_names, self.tag_names)


@dataclass(frozen=True, slots=True)
class _Meta:
    """What a Signal needs to know about its rule instance."""

    site: str
    rule_pos: int
    spec: RuleSpec
    tag: str


def _cmp(v: np.ndarray, op: str, x: float) -> np.ndarray:
    """`v op x` for an expression operator (NaN compares false except for `!=`: callers mask it)."""
    fn = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
          ">=": np.greater_equal}[op]
    return np.asarray(fn(v, x), dtype=bool)


class RuleEngine:
    """Evaluates all rules of all sites over micro-batches, with state carried between batches.

    Memory layout (the target is a couple of hundred bytes per sensor-rule, whatever the number of
    sensors): no Python object per sensor or per rule instance. A site's rule list becomes a *template*
    built once per distinct list (sites sharing a pack share it); a delay rule of a template is a
    *param row* (its constants); a delay instance is (site, row), numbered site by site, so the
    instances of site s are `inst_base[s] + j` for the template's j-th delay rule. Sensors are integer
    codes (site name code, tag code) in int32 arrays; rule instances attach to sensors as (sensor,
    instance) pair arrays per kind.
    """

    def __init__(self, site_rules: Mapping[str, Sequence[RuleSpec]]) -> None:
        # enabled rules per site; sites given the same sequence share one list (and one template below)
        enabled: dict[int, list[RuleSpec]] = {}
        for rules in site_rules.values():
            if id(rules) not in enabled:
                enabled[id(rules)] = [r for r in rules if r.enabled]
        self._sites = [s for s, rules in site_rules.items() if enabled[id(rules)]]
        self._site_idx = {s: i for i, s in enumerate(self._sites)}
        n_sites = len(self._sites)
        # every site name seen: ruled sites first (their code is their index), then others as they appear
        self._site_names: list[str] = list(self._sites)
        self._site_code: dict[str, int] = {}  # codes of the sites without rules
        self._st = EngineState(site_newest_ms=np.full(n_sites, NONE_TS, _I64))
        self._tag_idx: dict[str, int] = {}
        self._tag_names: list[str] = []
        # (site code, tag code) -> sensor id (-1: none yet), every site seen (ruled first) and every tag,
        # with spare rows and columns
        self._sidm_buf = np.full((0, 0), -1, _I32)
        self._sidm = self._sidm_buf
        self._sensor_site = self._sensor_site_buf = np.zeros(0, _I32)  # ruled site index, -1: no rules
        self._sensor_scode = self._sensor_scode_buf = np.zeros(0, _I32)  # code in _site_names
        self._sensor_tag = self._sensor_tag_buf = np.zeros(0, _I32)
        # per sensor: longest window of its windowed rules (-1 none); int32 unless a window is >= 24.8 days
        max_window = max((r.window_ms for rules in enabled.values() for r in rules), default=0)
        self._maxwin = self._maxwin_buf = np.zeros(0, _I32 if max_window < 2**31 - 1 else _I64)
        # --- templates and param rows
        cols: dict[str, list[Any]] = {k: [] for k in (
            "on", "off", "op", "limit", "db", "window", "eps", "lo", "hi", "has_range", "horizon",
            "min_r2", "gate", "k", "kind")}
        # per param row: (rule position, spec, signal tag)
        self._row_meta: list[tuple[int, RuleSpec, str]] = []
        self._gates: list[Expr] = []
        gate_ids: dict[Expr, int] = {}
        self._tpl_single: list[dict[str, list[tuple[int, int]]]] = []  # tag -> [(kind, j)]
        self._tpl_stale: list[dict[str, list[int]]] = []  # tag -> per-tag stale entries
        self._stale_ents: list[tuple[int, RuleSpec]] = []  # (rule position, spec) of per-tag stale rules
        tpl_row0: list[int] = []
        tpl_nlocal: list[int] = []
        tpl_multi: list[list[tuple[int, RuleSpec, int]]] = []  # (kind, spec, j) of vote / expr rules
        tpl_sstale: list[list[tuple[int, RuleSpec]]] = []
        tpl_il: list[list[tuple[int, RuleSpec]]] = []
        tpl_of: dict[int, int] = {}

        def template(rules: list[RuleSpec]) -> int:
            single: dict[str, list[tuple[int, int]]] = {}
            stale: dict[str, list[int]] = {}
            multi, sstale, il = [], [], []
            row0 = len(self._row_meta)
            for pos, r in enumerate(rules):
                if r.kind == RuleKind.STALE:
                    if r.tag == "*":
                        sstale.append((pos, r))
                    else:
                        assert r.tag is not None
                        stale.setdefault(r.tag, []).append(len(self._stale_ents))
                        self._stale_ents.append((pos, r))
                    continue
                if r.kind == RuleKind.INTERLOCK:
                    il.append((pos, r))
                    continue
                j = len(self._row_meta) - row0
                self._row_meta.append((pos, r, r.signal_tag))
                if r.kind in _SINGLE_KINDS:
                    kind = _SINGLE_KINDS[r.kind]
                    assert r.tag is not None
                    single.setdefault(r.tag, []).append((kind, j))
                else:
                    kind = _K_VOTE if r.kind == RuleKind.VOTE else _K_EXPR
                    multi.append((kind, r, j))
                gate = -1
                if r.when is not None:
                    if r.when not in gate_ids:
                        gate_ids[r.when] = len(self._gates)
                        self._gates.append(r.when)
                    gate = gate_ids[r.when]
                rng = r.range or (np.nan, np.nan)
                for key, v in (
                    ("on", r.on_delay_ms), ("off", r.off_delay_ms), ("op", OP_CODES.get(r.op or ">", 0)),
                    ("limit", r.limit if r.limit is not None else np.nan), ("db", r.deadband),
                    ("window", r.window_ms), ("eps", r.epsilon), ("lo", rng[0]), ("hi", rng[1]),
                    ("has_range", r.range is not None), ("horizon", r.horizon_ms), ("min_r2", r.min_r2),
                    ("gate", gate), ("k", r.k), ("kind", kind),
                ):
                    cols[key].append(v)
            self._tpl_single.append(single)
            self._tpl_stale.append(stale)
            tpl_row0.append(row0)
            tpl_nlocal.append(len(self._row_meta) - row0)
            tpl_multi.append(multi)
            tpl_sstale.append(sstale)
            tpl_il.append(il)
            return len(tpl_row0) - 1

        site_tpl = np.zeros(n_sites, _I32)
        for site in self._sites:
            key = id(site_rules[site])  # sites sharing one rule list share its template
            t = tpl_of.get(key)
            if t is None:
                t = tpl_of[key] = template(enabled[key])
            site_tpl[self._site_idx[site]] = t
        self._site_tpl = site_tpl
        n_local = np.asarray(tpl_nlocal, _I64)[site_tpl] if n_sites else np.zeros(0, _I64)
        ends = np.cumsum(n_local)
        self._inst_base = (ends - n_local).astype(_I64)
        n_inst = int(ends[-1]) if n_sites else 0
        self._inst_site = np.repeat(np.arange(n_sites, dtype=_I32), n_local)
        self._inst_row = expand_ranges(np.asarray(tpl_row0, _I64)[site_tpl], n_local).astype(_I32)
        # site-level instances: vote / expr groups, site-wide stale, interlocks (a few per site)
        self._groups: dict[tuple[int, RuleSpec], np.ndarray] = {}  # (kind, spec) -> inst by site
        self._sstale_meta: list[_Meta] = []  # site-wide stale instances (tag "*"), one per (site, rule)
        ss_site: list[int] = []
        ss_timeout: list[int] = []
        il_groups: dict[RuleSpec, np.ndarray] = {}
        self._il_meta: list[_Meta] = []
        il_site: list[int] = []
        for site in self._sites:
            si = self._site_idx[site]
            t = int(site_tpl[si])
            for kind, r, j in tpl_multi[t]:
                arr = self._groups.setdefault((kind, r), np.full(n_sites, -1, _I64))
                arr[si] = self._inst_base[si] + j
            for pos, r in tpl_sstale[t]:
                self._sstale_meta.append(_Meta(site, pos, r, "*"))
                ss_site.append(si)
                ss_timeout.append(r.timeout_ms)
            for pos, r in tpl_il[t]:
                arr = il_groups.setdefault(r, np.full(n_sites, -1, _I64))
                arr[si] = len(self._il_meta)
                self._il_meta.append(_Meta(site, pos, r, r.signal_tag))
                il_site.append(si)
        self._p = {
            k: np.asarray(v, dtype=bool if k == "has_range" else (np.float64 if k in (
                "limit", "db", "eps", "lo", "hi", "min_r2") else _I64)) for k, v in cols.items()
        }
        self._p["sign"], self._p["above"], self._p["below"] = folded_limits(
            self._p["op"], self._p["limit"], self._p["db"])
        # tags whose readings must be put in site-stream order (as-of lookups, multi-tag evaluation)
        interest: set[str] = set()
        for rules in enabled.values():
            for r in rules:
                for e in (r.when, r.expr, r.trigger, r.expect):
                    if e is not None:
                        interest.update(expr_tags(e))
                interest.update(r.tags)
                if r.when is not None and r.tag is not None:
                    interest.add(r.tag)
        self._interest_names = interest
        self._kind_gated = {
            k: bool(np.any((self._p["gate"] >= 0) & (self._p["kind"] == k))) for k in range(7)
        } if len(self._row_meta) else {}
        self._st.c_start_ms = np.full(n_inst, NONE_TS, _I64)
        self._st.d_start_ms = np.full(n_inst, NONE_TS, _I64)
        self._st.active = np.zeros(n_inst, bool)
        self._il_groups = il_groups
        self._il_site = np.asarray(il_site, _I64)
        self._st.il_trig_last = np.zeros(len(self._il_meta), bool)
        self._st.il_active = np.zeros(len(self._il_meta), bool)
        # (sensor, instance) pairs by kind: chunks appended at registration, merged by _refresh
        self._pair_new: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {
            k: [] for k in _SINGLE_KINDS.values()}
        self._pair_arr: dict[int, tuple[np.ndarray, np.ndarray]] = {
            k: (np.zeros(0, _I32), np.zeros(0, _I32)) for k in _SINGLE_KINDS.values()}
        # threshold and quality: sensor -> its first instance of the kind (-1: none), and the other pairs
        # of sensors with several rules of the kind
        self._sensor_inst: dict[int, np.ndarray] = {}
        self._pair_extra: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._n_unruled = 0  # sensors of sites without rules
        # per-tag stale instances: sensor and entry in _stale_ents
        self._stale_sid = np.zeros(0, _I32)
        self._stale_ent = np.zeros(0, _I32)
        self._stale_new: list[tuple[np.ndarray, np.ndarray]] = []
        self._stale_arr: dict[str, np.ndarray] = {}
        self._ss_site = np.asarray(ss_site, _I64)
        self._ss_timeout = np.asarray(ss_timeout, _I64)
        # per site: shortest site-wide stale timeout (a cheap filter for gap candidates)
        self._site_min_sto = np.full(n_sites, np.iinfo(_I64).max // 4, _I64)
        if len(ss_site):
            np.minimum.at(self._site_min_sto, self._ss_site, self._ss_timeout)
        self._site_has_sstale = np.zeros(n_sites, bool)
        self._site_has_sstale[self._ss_site] = True
        self._st.site_alive_ms = np.full(n_sites, NONE_TS, _I64)
        self._st.site_stale_active = np.zeros(len(ss_site), bool)
        self._st.site_stale_gated = np.zeros(len(ss_site), bool)
        # names -> codes: two-choice hash table on the 64-bit hash of a name, see _names_table
        self._hk = [np.zeros(0, np.uint64), np.zeros(0, np.uint64)]
        self._hv = [np.zeros(0, _I32), np.zeros(0, _I32)]
        self._h_m = 0  # slots of the first table (a power of two)
        self._h_m1 = 0  # slots of the second
        self._h_shift = np.uint64(63)
        self._h_count = 0  # names in the tables (incl. the overflow table)
        self._ovf_h, self._ovf_v = np.zeros(0, np.uint64), np.zeros(0, _I32)
        self._hash_exact_only = False
        self._new_names: tuple[list[int], list[int]] = (list(range(n_sites)), [])  # not yet in the table
        # NameCodes: per kind (site, tag), the caller's name list and its code -> our code table (-1: not
        # looked up yet); and the codes primed for the next evaluate (see prime_names)
        self._ext_lut: list[tuple[Sequence[str], np.ndarray] | None] = [None, None]
        # good readings in a batch from which the windowed kinds run on a worker thread (_evaluate_points):
        # replay chunks, not live micro-batches (a hand-over costs more than it saves on small batches)
        self.overlap_min_points = 200_000
        self._pool: Any = None
        self._primed: tuple[pl.DataFrame, NameCodes] | None = None
        self._grow_sidm(n_sites, 0)
        self._dirty = True
        # the keys of a snapshot that do not grow with sensors, built once (snapshot parts share them: never
        # mutated). Sensor and stale-instance keys grow with sensors: a snapshot copies their codes (a few
        # bytes each) and `pack` spells them out off the engine thread. Keeping them spelled out would cost
        # ~170 B of Python objects per sensor, which is the whole rule-state budget (<= 200 B a sensor-rule).
        self._snap_fixed_keys: dict[str, Any] = {
            "sites": list(self._sites),
            # one row per rule instance (about one per sensor-rule): codes, spelled out by `pack`. The
            # instance arrays are fixed at construction, so the table shares them.
            "inst_keys": KeyTable(
                (self._sites, [spec.id for _, spec, _ in self._row_meta], [tag for _, _, tag in self._row_meta]),
                (self._inst_site, self._inst_row, self._inst_row),
            ),
            "il_keys": [[m.site, m.spec.id] for m in self._il_meta],
            "site_stale_keys": [[m.site, m.spec.id] for m in self._sstale_meta],
        }

    # --- sensors --------------------------------------------------------------------------------

    def _grow_sidm(self, rows: int, cols: int) -> None:
        """Room in the (site code, tag code) -> sensor id matrix; capacity doubles (linear to fill)."""
        r0, c0 = self._sidm_buf.shape
        if rows > r0 or cols > c0:
            new_r = max(rows, 2 * r0 if rows > r0 else r0, 8)
            new_c = max(cols, 2 * c0 if cols > c0 else c0, 8)
            buf = np.full((new_r, new_c), -1, _I32)
            buf[:r0, :c0] = self._sidm_buf
            self._sidm_buf = buf
        self._sidm = self._sidm_buf[: len(self._site_names), : len(self._tag_names)]

    def _tag(self, tag: str) -> int:
        t = self._tag_idx.get(tag)
        if t is None:
            t = self._tag_idx[tag] = len(self._tag_names)
            self._tag_names.append(tag)
            self._new_names[1].append(t)
            self._grow_sidm(len(self._site_names), t + 1)
            self._dirty = True
        return t

    def _site(self, site: str) -> int:
        c = self._site_idx.get(site)
        if c is None:
            c = self._site_code.get(site)
        if c is None:
            c = self._site_code[site] = len(self._site_names)
            self._site_names.append(site)
            self._new_names[0].append(c)
            self._grow_sidm(c + 1, len(self._tag_names))
            self._dirty = True
        return c

    def _register(self, site: str, tag: str) -> int:
        """A (site, tag) seen for the first time (see _register_codes)."""
        return int(self._register_many([site], [tag])[0])

    def _register_many(self, sites: Sequence[str], tags: Sequence[str]) -> np.ndarray:
        k = len(sites)
        scode = np.fromiter((self._site(s) for s in sites), _I32, k)
        tcode = np.fromiter((self._tag(t) for t in tags), _I32, k)
        return self._register_codes(scode, tcode)

    def _register_codes(self, scode: np.ndarray, tcode: np.ndarray) -> np.ndarray:
        """New (site code, tag code) pairs (distinct, not yet known): number them and attach the rule
        instances that read them, vectorized over the sensors of each (template, tag)."""
        k = len(scode)
        scode, tcode = scode.astype(_I32), tcode.astype(_I32)
        st = self._st
        sid0 = st.add_sensors(k)
        n = sid0 + k
        sids = np.arange(sid0, n, dtype=_I32)
        self._sidm[scode, tcode] = sids
        n_ruled = len(self._sites)
        si = np.where(scode < n_ruled, scode, -1).astype(_I32)
        self._sensor_site_buf = _grow(self._sensor_site_buf, n, -1)
        self._sensor_scode_buf = _grow(self._sensor_scode_buf, n, -1)
        self._sensor_tag_buf = _grow(self._sensor_tag_buf, n, -1)
        self._maxwin_buf = _grow(self._maxwin_buf, n, -1)
        self._sensor_site_buf[sid0:n] = si
        self._sensor_scode_buf[sid0:n] = scode
        self._sensor_tag_buf[sid0:n] = tcode
        self._maxwin_buf[sid0:n] = -1
        self._sensor_site = self._sensor_site_buf[:n]
        self._sensor_scode = self._sensor_scode_buf[:n]
        self._sensor_tag = self._sensor_tag_buf[:n]
        self._maxwin = self._maxwin_buf[:n]
        ruled = np.flatnonzero(si >= 0)
        self._n_unruled += k - len(ruled)
        if len(ruled):
            r_si, r_tag, r_sid = si[ruled], tcode[ruled], sids[ruled]
            tpl = self._site_tpl[r_si].astype(_I64)
            combo = tpl * (len(self._tag_names) + 1) + r_tag
            o = np.argsort(combo, kind="stable")
            cs = combo[o]
            starts = np.flatnonzero(segment_first(cs))
            ends = np.append(starts[1:], len(cs))
            for a, z in zip(starts.tolist(), ends.tolist()):
                sel = o[a:z]
                t, tag = int(tpl[sel[0]]), self._tag_names[int(r_tag[sel[0]])]
                sel_sid = r_sid[sel]
                base = self._inst_base[r_si[sel]]
                for kind, j in self._tpl_single[t].get(tag, ()):
                    insts = (base + j).astype(_I32)
                    self._pair_new[kind].append((sel_sid, insts))
                    if kind in _WINDOWED:
                        w = int(self._p["window"][self._inst_row[insts[0]]])
                        self._maxwin[sel_sid] = np.maximum(self._maxwin[sel_sid], w)
                for e in self._tpl_stale[t].get(tag, ()):
                    self._stale_new.append((sel_sid, np.full(len(sel), e, _I32)))
        self._dirty = True
        return sids

    def _refresh(self) -> None:
        if not self._dirty:
            return
        n_sensors = self._st.n_sensors
        for k, new in self._pair_new.items():
            if not new:
                continue
            ps = np.concatenate([self._pair_arr[k][0]] + [a for a, _ in new])
            pi = np.concatenate([self._pair_arr[k][1]] + [b for _, b in new])
            new.clear()
            o = np.argsort(ps, kind="stable")  # by sensor: expansions come out in sensor order
            ps, pi = ps[o], pi[o]
            self._pair_arr[k] = (ps, pi)
            self._sensor_inst.pop(k, None)
        for k in (_K_THRESHOLD, _K_QUALITY):  # per-reading kinds: the first pair of each sensor by a map
            ps, pi = self._pair_arr[k]
            if len(ps) and (k not in self._sensor_inst or len(self._sensor_inst[k]) < n_sensors):
                first = segment_first(ps)
                si = np.full(n_sensors, -1, _I32)
                si[ps[first]] = pi[first]
                self._sensor_inst[k] = si
                self._pair_extra[k] = (ps[~first], pi[~first])
        if self._stale_new:
            self._stale_sid = np.concatenate([self._stale_sid] + [a for a, _ in self._stale_new])
            self._stale_ent = np.concatenate([self._stale_ent] + [b for _, b in self._stale_new])
            self._stale_new.clear()
        self._st.ensure_stale(len(self._stale_sid))
        if len(self._stale_sid):
            timeout = np.asarray([r.timeout_ms for _, r in self._stale_ents], _I64)
            sa = self._stale_arr = {
                "sid": self._stale_sid.astype(_I64), "timeout": timeout[self._stale_ent],
                "site": self._sensor_site[self._stale_sid].astype(_I64),
            }
            o = np.argsort(sa["sid"], kind="stable")
            self._stale_by_sid = o  # stale instances grouped by sensor
            self._stale_sid_lo = np.searchsorted(sa["sid"][o], np.arange(n_sensors), "left")
            self._stale_sid_hi = np.searchsorted(sa["sid"][o], np.arange(n_sensors), "right")
            min_to = np.full(n_sensors, np.iinfo(_I64).max // 4, _I64)
            np.minimum.at(min_to, sa["sid"], sa["timeout"])
            self._stale_min_timeout = min_to
            self._stale_sensor = self._stale_sid_hi > self._stale_sid_lo
        else:
            self._stale_arr = {}
        lut = np.zeros(len(self._tag_names), bool)
        for name in self._interest_names:
            if name in self._tag_idx:
                lut[self._tag_idx[name]] = True
        self._interest_sensor = lut[self._sensor_tag] & (self._sensor_site >= 0)
        self._names_table()
        self._dirty = False

    def _names_table(self) -> None:
        """Put new site and tag names into the two-choice table from a name's 64-bit hash (sites hashed
        with SITE_HASH_SEED, tags with TAG_HASH_SEED, as `model.name_hashes` does) to its code (value = code * 2 + 1 for a tag).

        A batch's rows are mapped to (site code, tag code) by hashing two string columns in polars and
        probing this table (small: one entry per distinct name, so it stays in cache however many sensors
        there are), then to the sensor id through the (site, tag) matrix. A lookup matches on the full
        64-bit hash; if two names ever shared one, the engine falls back to exact joins for good. The
        first table (slot = high bits) has 2-4 slots per name, the second (slot = low 32 bits scaled to
        its size) half a slot; names that find no free slot go to a small sorted side table, searched
        only for missed rows. Rebuilt (all names) when the first passes half full.
        """
        new_s, new_t = self._new_names
        if not new_s and not new_t:
            return
        n = len(self._site_names) + len(self._tag_names)
        if self._h_count + len(new_s) + len(new_t) > self._h_m // 2:  # rebuild with room to grow
            self._h_m = 1 << max(10, int(np.ceil(np.log2(max(2 * n, 1)))))
            self._h_m1 = max(256, n // 2)
            self._h_shift = np.uint64(64 - int(np.log2(self._h_m)))
            self._hk = [np.zeros(self._h_m, np.uint64), np.zeros(self._h_m1, np.uint64)]
            self._hv = [np.full(self._h_m, -1, _I32), np.full(self._h_m1, -1, _I32)]
            self._ovf_h, self._ovf_v = np.zeros(0, np.uint64), np.zeros(0, _I32)
            self._h_count = 0
            new_s, new_t = list(range(len(self._site_names))), list(range(len(self._tag_names)))
        h = np.concatenate([
            pl.Series([self._site_names[c] for c in new_s], dtype=pl.String)
            .hash(seed=SITE_HASH_SEED).to_numpy(),
            pl.Series([self._tag_names[c] for c in new_t], dtype=pl.String)
            .hash(seed=TAG_HASH_SEED).to_numpy(),
        ]).astype(np.uint64)
        v = np.concatenate([np.asarray(new_s, _I64) * 2, np.asarray(new_t, _I64) * 2 + 1]).astype(_I32)
        self._new_names = ([], [])
        # a new name equal to a known one, or two new ones alike: 64-bit collision, exact joins from now on
        if len(np.unique(h)) != len(h) or (self._h_count and bool(np.any(self._lookup(h) >= 0))):
            self._hash_exact_only = True
        self._h_count += len(h)
        todo = np.arange(len(h))
        for t in range(2):
            if not len(todo):
                break
            slot = self._slot(h[todo], t)
            free = self._hv[t][slot] < 0
            u, i = np.unique(slot[free], return_index=True)
            put = todo[np.flatnonzero(free)[i]]
            self._hk[t][u] = h[put]
            self._hv[t][u] = v[put]
            placed = np.zeros(len(h), bool)
            placed[put] = True
            todo = todo[~placed[todo]]
        if len(todo):
            oh = np.concatenate([self._ovf_h, h[todo]])
            ov = np.concatenate([self._ovf_v, v[todo]])
            o = np.argsort(oh)
            self._ovf_h, self._ovf_v = oh[o], ov[o]

    def _slot(self, h: np.ndarray, t: int) -> np.ndarray:
        if t == 0:  # the high bits
            return (h >> self._h_shift).astype(np.intp)
        # the low 32 bits scaled to the second table's size (any size: no power-of-two rounding)
        return (((h & np.uint64(0xFFFFFFFF)) * np.uint64(self._h_m1)) >> np.uint64(32)).astype(np.intp)

    def _lookup(self, h: np.ndarray) -> np.ndarray:
        """Table value per 64-bit hash (int32, -1 where unknown)."""
        if not self._h_m:
            return np.full(len(h), -1, _I32)
        s1 = self._slot(h, 0)
        val = np.where(self._hk[0].take(s1) == h, self._hv[0].take(s1), np.int32(-1))
        miss = np.flatnonzero(val < 0)
        if len(miss):
            hm = h.take(miss)
            s2 = self._slot(hm, 1)
            val[miss] = np.where(self._hk[1].take(s2) == hm, self._hv[1].take(s2), np.int32(-1))
            miss = miss[val[miss] < 0]
        if len(miss) and len(self._ovf_h):
            k = np.minimum(np.searchsorted(self._ovf_h, h[miss]), len(self._ovf_h) - 1)
            val[miss] = np.where(self._ovf_h[k] == h[miss], self._ovf_v[k], np.int32(-1))
        return val

    def _codes(self, h: np.ndarray, kind: int) -> np.ndarray:
        """Site (kind 0) or tag (kind 1) codes of hashes, -1 where unknown."""
        val = self._lookup(h)
        return np.where((val >= 0) & ((val & 1) == kind), val >> 1, -1)

    def _map_sids(self, frame: pl.DataFrame) -> np.ndarray:
        """Sensor id (int64) of every row; registers new sites, tags and (site, tag) pairs."""
        return self._map_rows(frame)[0]

    def _map_rows(self, frame: pl.DataFrame, names: NameCodes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(sensor id, site code) of every row, int64."""
        self._refresh()
        if names is not None:
            return self._map_rows_coded(names)
        if self._hash_exact_only:
            return self._map_rows_exact(frame)
        hs, ht = name_hashes(frame)
        n = len(hs)
        # a message's readings share their site: look up the first row of each run of equal hashes
        head = np.ones(n, bool)
        np.not_equal(hs[1:], hs[:-1], out=head[1:])
        heads = np.flatnonzero(head)
        sc = self._codes(hs.take(heads), 0)
        if len(heads) < n:
            sc = np.repeat(sc, np.diff(np.append(heads, n)))
        tc = self._codes(ht, 1)
        if bool(np.any(sc < 0)) or bool(np.any(tc < 0)):  # a site or tag never seen: the exact way
            return self._map_rows_exact(frame)
        return self._sids_of(sc, tc), sc

    def _sids_of(self, sc: np.ndarray, tc: np.ndarray) -> np.ndarray:
        """Sensor ids of (site code, tag code) rows; registers the new pairs."""
        ncol = self._sidm_buf.shape[1]
        flat = sc * ncol + tc
        sid = self._sidm_buf.ravel().take(flat)
        new = np.flatnonzero(sid < 0)
        if len(new):
            # one per new pair, numbered in order of first appearance
            first = np.sort(new[np.unique(flat[new], return_index=True)[1]])
            self._register_codes(sc[first], tc[first])
            self._refresh()
            sid = self._sidm_buf.ravel().take(flat)
        return sid.astype(_I64)

    def _map_rows_coded(self, names: NameCodes) -> tuple[np.ndarray, np.ndarray]:
        """Rows given as the caller's name codes (exact, no hashing): through one small table per kind.
        Names not yet in a table are registered as `_map_rows_exact` does: sites before tags, each in
        order of first appearance in the batch, so codes and sensor ids come out the same."""
        sc = self._ext_codes(0, names.site, names.site_names, self._site)
        tc = self._ext_codes(1, names.tag, names.tag_names, self._tag)
        return self._sids_of(sc, tc), sc

    def _ext_codes(self, kind: int, rows: np.ndarray, names: Sequence[str], register: Any) -> np.ndarray:
        ent = self._ext_lut[kind]
        if ent is None or ent[0] is not names:
            ent = self._ext_lut[kind] = (names, np.full(len(names), -1, _I32))
        lut = ent[1]
        codes = lut.take(rows)
        miss = np.flatnonzero(codes < 0)
        if len(miss):
            # each missing code's first row (a scatter-min over the few codes, not a sort of the rows)
            first = np.full(len(names), len(rows), _I64)
            np.minimum.at(first, rows.take(miss), miss)
            u = np.flatnonzero(first < len(rows))
            for x in u[np.argsort(first[u])].tolist():
                lut[x] = register(names[x])
            codes = lut.take(rows)
        return codes

    def _map_sids_exact(self, frame: pl.DataFrame) -> np.ndarray:
        return self._map_rows_exact(frame)[0]

    def _map_rows_exact(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The exact way (joins on the names): new sites, tags and sensors, or after a hash collision."""
        codes = []
        for col, reg in (("site", self._site), ("tag", self._tag)):
            names = frame[col].unique(maintain_order=True).to_list()
            lut = pl.DataFrame({col: names, "code": [reg(x) for x in names]},
                               schema={col: pl.String, "code": pl.Int64})
            joined = frame.select(col).join(lut, on=col, how="left", maintain_order="left")
            codes.append(joined["code"].to_numpy())
        sc, tc = codes
        return self._sids_of(sc, tc), sc

    # --- public API -----------------------------------------------------------------------------

    def prime_names(self, batch: ReadingBatch, names: NameCodes) -> None:
        """Name codes for the next `evaluate` of exactly this batch (the same frame object), for callers
        that reach `evaluate` through code that does not pass them (the pipeline's Engine in a replay).
        Used once; another batch ignores them."""
        self._primed = (batch.frame, names)

    def evaluate(self, batch: ReadingBatch, now_ms: int, names: NameCodes | None = None) -> EvalResult:
        """Evaluate one micro-batch; `now_ms` is the engine clock after it (see module docstring).

        `names`: the rows' site and tag as codes (see NameCodes), instead of hashing the name columns;
        the same result either way."""
        st = self._st
        frame = batch.frame
        primed, self._primed = self._primed, None
        if names is None and primed is not None and primed[0] is frame:
            names = primed[1]
        if names is not None and len(names.site) != frame.height:
            msg = f"NameCodes for {len(names.site)} rows, batch of {frame.height}"
            raise ValueError(msg)
        clock_prev = st.clock_ms
        out: list[tuple[Any, ...]] = []
        if frame.height == 0:
            st.clock_ms = max(clock_prev, now_ms)
            self._end_of_batch(out, None)
            return EvalResult(self._sorted(out), 0, 0)
        sid_all, scode = self._map_rows(frame, names)
        if self._n_unruled:  # readings of sites without rules are ignored (ruled sites: the low codes)
            keep = scode < len(self._sites)
            all_kept = bool(keep.all())
        else:
            all_kept = True
        sid = sid_all if all_kept else sid_all[keep]
        m = len(sid)
        if m == 0:
            st.clock_ms = max(clock_prev, now_ms)
            self._end_of_batch(out, None)
            return EvalResult(self._sorted(out), 0, 0)
        ts = frame["ts_ms"].to_numpy().astype(_I64, copy=False)
        val = frame["value"].to_numpy().astype(np.float64, copy=False)
        qual = frame["quality"].to_numpy()
        if not all_kept:
            ts, val, qual = ts[keep], val[keep], qual[keep]

        # sensor order (sid, ts), stable (ties keep arrival order)
        so = _sensor_order(sid, st.n_sensors)
        s_sid, s_ts = sid.take(so), ts.take(so)
        same = s_sid[1:] == s_sid[:-1]
        flat = (s_ts[1:] <= s_ts[:-1]) & same  # a sensor's ts not increasing: out of order or duplicate
        if flat.any() and np.any((s_ts[1:] < s_ts[:-1]) & same):  # out of ts order inside the batch
            t0 = int(ts.min())
            span = int(ts.max()) - t0 + 1
            if st.n_sensors < (1 << 62) // span:
                # nearly sorted composite key: timsort finds the runs
                so = so[np.argsort(s_sid * span + (s_ts - t0), kind="stable")]
            else:
                so = np.lexsort((ts, sid))
            s_sid, s_ts = sid.take(so), ts.take(so)
            same = s_sid[1:] == s_sid[:-1]
            flat = (s_ts[1:] <= s_ts[:-1]) & same  # now only duplicates
        # late: ts <= the sensor's last evaluated ts. Within a sensor ts ascend, so only a sensor whose
        # first reading here is late can have late readings: check the firsts, the rest only if needed
        firsts = np.flatnonzero(~same) + 1
        late_first = bool(np.any(s_ts[firsts] <= st.sensor_last_ts_ms[s_sid[firsts]])) or bool(
            s_ts[0] <= st.sensor_last_ts_ms[s_sid[0]])
        if late_first or flat.any():
            late = np.zeros(m, bool)
            late[1:] = flat
            if late_first:
                late |= s_ts <= st.sensor_last_ts_ms[s_sid]
            ok = np.flatnonzero(~late)
            ra = so.take(ok)  # arrival index of each evaluated reading, in sensor order
            s_sid, s_ts = s_sid.take(ok), s_ts.take(ok)
        else:
            ra = so
        b = _Batch(
            sid=s_sid, ts=s_ts, val=val.take(ra), q=qual.take(ra), a=ra, n_arrival=m,
            site_of_sid=self._sensor_site, tag_of_sid=self._sensor_tag,
        )
        b.interest_sensor = self._interest_sensor
        n_eval = len(b.sid)
        # the new engine clock counts only at the end of the batch: in-batch kernels get clock_prev
        st.clock_ms = max(clock_prev, now_ms)
        if n_eval:
            self._evaluate_points(b, clock_prev, out)
        self._end_of_batch(out, b if n_eval else None)
        return EvalResult(self._sorted(out), late=m - n_eval, evaluated=n_eval)

    def tick(self, now_ms: int) -> list[Signal]:
        """Advance the engine clock without readings: stale sensors and missed interlock deadlines."""
        st = self._st
        st.clock_ms = max(st.clock_ms, now_ms)
        out: list[tuple[Any, ...]] = []
        self._end_of_batch(out, None)
        return self._sorted(out)

    def _inst_meta(self, i: int) -> _Meta:
        pos, spec, tag = self._row_meta[int(self._inst_row[i])]
        return _Meta(self._sites[int(self._inst_site[i])], pos, spec, tag)

    def _stale_inst_meta(self, k: int) -> _Meta:
        pos, spec = self._stale_ents[int(self._stale_ent[k])]
        assert spec.tag is not None
        return _Meta(self._sites[int(self._sensor_site[self._stale_sid[k]])], pos, spec, spec.tag)

    def _inst_keys(self) -> list[tuple[str, str, str]]:
        rows = [(spec.id, tag) for _, spec, tag in self._row_meta]
        return [(self._sites[s], *rows[r]) for s, r in zip(self._inst_site.tolist(), self._inst_row.tolist())]

    def _stale_keys(self, start: int = 0) -> list[list[str]]:
        """(site, rule id, tag) of the per-tag stale instances from `start` on."""
        ents = [spec.id for _, spec in self._stale_ents]
        sid = self._stale_sid[start:]
        return [[self._sites[s], ents[e], self._tag_names[t]] for s, e, t in zip(
            self._sensor_site[sid].tolist(), self._stale_ent[start:].tolist(),
            self._sensor_tag[sid].tolist())]

    def snapshot(self) -> bytes:
        """All rule state as immutable bytes (an npz archive); see `restore`."""
        return EngineState.pack(*self.snapshot_parts())

    def snapshot_parts(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The consistent copy of all rule state, to be turned into the bytes of `snapshot` later by
        `EngineState.pack(arrays, doc)`, on any thread, while this engine evaluates on: the parts share
        nothing this engine mutates. The costly parts of a snapshot (the JSON text and the npz archive)
        are left to `pack`; here only copies of the state arrays and of the history (a few ms for
        millions of history readings) and slices of key lists kept up to date as sensors appear."""
        self._refresh()
        n, n_stale, fixed = self._st.n_sensors, len(self._stale_sid), self._snap_fixed_keys
        sid = self._stale_sid
        meta = {  # the key order of the document as it always was
            # names lists are append-only: a slice is a consistent copy of the few distinct names
            "sensor_keys": KeyTable(
                (self._site_names[:], self._tag_names[:]),
                (self._sensor_scode[:n].copy(), self._sensor_tag[:n].copy()),
            ),
            "sites": fixed["sites"],
            "inst_keys": fixed["inst_keys"],
            "il_keys": fixed["il_keys"],
            "stale_keys": KeyTable(
                (self._sites, [spec.id for _, spec in self._stale_ents], self._tag_names[:]),
                (self._sensor_site[sid], self._stale_ent.copy(), self._sensor_tag[sid]),
            ),
            "n_stale": n_stale,
            "site_stale_keys": fixed["site_stale_keys"],
        }
        return self._st.parts(meta)

    @classmethod
    def restore(cls, site_rules: Mapping[str, Sequence[RuleSpec]], snapshot: bytes) -> RuleEngine:
        """A new engine for `site_rules` that continues from `snapshot`; state of rules that no longer
        exist is dropped, new rules start fresh. A blob that is not a rule-state snapshot raises
        ValueError (KeyError / zipfile errors are turned into it)."""
        eng = cls(site_rules)
        try:
            arrays, doc = EngineState.load(snapshot)
            keys = doc["sensor_keys"]
            need = ("sensor_last_ts_ms", "sensor_last_good", "sensor_first_good_ts_ms", "site_newest_ms",
                    "c_start_ms", "d_start_ms", "active", "hist_sid", "hist_ts_ms", "hist_value")
            missing = [k for k in need if k not in arrays]
        except Exception as exc:
            msg = f"not a rule-state snapshot: {exc!r}"
            raise ValueError(msg) from exc
        if missing:
            msg = f"rule-state snapshot lacks {missing}"
            raise ValueError(msg)
        st = eng._st
        if keys:
            eng._register_many([k[0] for k in keys], [k[1] for k in keys])
            eng._refresh()
        n = len(keys)
        st.sensor_last_ts_ms[:n] = arrays["sensor_last_ts_ms"]
        st.sensor_last_good[:n] = arrays["sensor_last_good"]
        st.sensor_first_good_ts_ms[:n] = arrays["sensor_first_good_ts_ms"]
        # snapshots from before the sign-of-life column: the last ts is what it meant then
        st.sensor_alive_ms[:n] = arrays.get("sensor_alive_ms", arrays["sensor_last_ts_ms"])
        st.clock_ms = int(doc["clock_ms"])
        old_sites = {s: i for i, s in enumerate(doc["sites"])}
        for s, i in eng._site_idx.items():
            if s in old_sites:
                st.site_newest_ms[i] = arrays["site_newest_ms"][old_sites[s]]
                st.site_alive_ms[i] = arrays.get("site_alive_ms", arrays["site_newest_ms"])[old_sites[s]]
        new_inst = {k: i for i, k in enumerate(eng._inst_keys())}
        for j, key in enumerate(doc["inst_keys"]):
            ni = new_inst.get(tuple(key))
            if ni is not None:
                st.c_start_ms[ni] = arrays["c_start_ms"][j]
                st.d_start_ms[ni] = arrays["d_start_ms"][j]
                st.active[ni] = arrays["active"][j]
        new_il = {(m.site, m.spec.id): i for i, m in enumerate(eng._il_meta)}
        for j, key in enumerate(doc["il_keys"]):
            ni = new_il.get(tuple(key))
            if ni is not None:
                st.il_trig_last[ni] = arrays["il_trig_last"][j]
                st.il_active[ni] = arrays["il_active"][j]
                pend = doc["il_pending"].get(str(j))
                if pend:
                    st.il_pending[ni] = [(int(a), int(b)) for a, b in pend]
        new_stale = {tuple(k): i for i, k in enumerate(eng._stale_keys())}
        for j, key in enumerate(doc["stale_keys"]):
            ni = new_stale.get(tuple(key))
            if ni is not None:
                st.stale_active[ni] = arrays["stale_active"][j]
        new_ss = {(m.site, m.spec.id): i for i, m in enumerate(eng._sstale_meta)}
        for j, key in enumerate(doc.get("site_stale_keys", [])):
            ni = new_ss.get(tuple(key))
            if ni is not None:
                st.site_stale_active[ni] = arrays["site_stale_active"][j]
                st.site_stale_gated[ni] = arrays["site_stale_gated"][j]
        keep = eng._maxwin[arrays["hist_sid"]] >= 0 if len(arrays["hist_sid"]) else np.zeros(0, bool)
        st.hist_import(arrays["hist_sid"][keep].astype(_I64), arrays["hist_ts_ms"][keep],
                       arrays["hist_value"][keep])
        return eng

    # --- evaluation -----------------------------------------------------------------------------

    def _evaluate_points(self, b: _Batch, clock_prev: int, out: list[tuple[Any, ...]]) -> None:
        st = self._st
        good = (b.q != _BAD) & ~np.isnan(b.val)
        b.good = good
        # carried sensor state before this batch (as-of carries, flatline coverage, stale gaps)
        b.last_good_prev = st.sensor_last_good.copy()
        alive_prev = st.sensor_alive_ms.copy()
        site_newest_prev = st.site_newest_ms.copy()
        site_alive_prev = st.site_alive_ms.copy()
        b.clock_prev, b.site_newest_prev = clock_prev, site_newest_prev
        lp = np.flatnonzero(segment_last(b.sid))  # each sensor's last reading
        ls, ls_ts = b.sid[lp], b.ts[lp]
        # sensor-level state updates (used by later kernels only through the *_prev copies)
        st.sensor_last_ts_ms[ls] = ls_ts
        # sign of life for stale: a reading arrived no earlier than the clock before its batch, so a
        # backlog flushed after an outage (old timestamps, live clock far ahead) is not stale again
        st.sensor_alive_ms[ls] = np.maximum(np.maximum(st.sensor_alive_ms[ls], ls_ts), clock_prev)
        all_good = bool(good.all())
        # each sensor's first and last good reading of the batch: its first / last reading, moved past
        # bad ones where needed (bad readings are rare: the walk is over a few sensors)
        fp = np.empty(len(lp), _I64)  # and its first
        fp[0] = 0
        fp[1:] = lp[:-1] + 1
        seg_lo, seg_n = fp, lp - fp + 1  # the batch's sensor segments
        if not all_good:
            lp, fp = _walk_to_good(lp, fp, good, -1), _walk_to_good(fp, lp, good, 1)
            has = lp >= 0
            lp, fp = lp[has], fp[has]
        st.sensor_last_good[b.sid[lp]] = b.val[lp]
        fg = st.sensor_first_good_ts_ms
        fsid = b.sid[fp]
        fg[fsid] = np.where(fg[fsid] == NONE_TS, b.ts[fp], fg[fsid])
        site_last = self._sensor_site.take(ls)
        _scatter_max(st.site_newest_ms, site_last, ls_ts)
        _scatter_max(st.site_alive_ms, site_last, np.maximum(ls_ts, clock_prev))

        # chunks of evaluation points: (kind, inst, ts, c, d, value, arrival index, mask); mask (None =
        # all) marks the points that take part, so that the batch-size arrays of the common case (one
        # rule of the kind per sensor) are filtered once, together with the relevance filter below
        chunks: list[tuple[Any, ...]] = []

        n_sensors = st.n_sensors
        bounds_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

        def seg_bounds(seg_sid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(first index, count) of every sensor's readings in a sid-sorted array (by counting)."""
            key = id(seg_sid)
            if key not in bounds_cache:
                cnt = np.bincount(seg_sid, minlength=n_sensors)
                bounds_cache[key] = (np.cumsum(cnt) - cnt, cnt)
            return bounds_cache[key]

        good_cache: list[tuple[np.ndarray, np.ndarray]] = []

        def good_rows() -> tuple[np.ndarray, np.ndarray]:
            """Positions and sensors of the good readings (one array object per batch: seg_bounds keys
            its cache on it)."""
            if not good_cache:
                gi = np.flatnonzero(good)
                good_cache.append((gi, b.sid[gi]))
            return good_cache[0]

        def expand(
            pairs: tuple[np.ndarray, np.ndarray], seg_sid: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
            """Points of every (sensor, instance) pair: positions into seg_sid and instances (pairs
            sorted by sensor: grouped by instance, in ts order inside)."""
            psid, pinst = pairs
            if len(psid) == 0 or len(seg_sid) == 0:
                return np.zeros(0, _I64), np.zeros(0, _I64)
            starts, counts = seg_bounds(seg_sid)
            lo, lens = starts[psid], counts[psid]
            return expand_ranges(lo, lens), np.repeat(pinst.astype(_I64), lens)

        # Windowed kinds (rate, flatline, trend) read the batch and write only the history tail
        # (state.h_*), which nothing else here touches: on a large batch (a replay chunk) they run on a
        # worker thread while this thread builds the other kinds' conditions and the site stream; numpy
        # releases the GIL in the big array operations, so both cores work. Their chunks take the same
        # place in the list as when run inline (after threshold and quality), so nothing else changes.
        win_chunks: list[tuple[Any, ...]] = []
        win_future: Any = None
        if any(len(self._pair_arr[k][0]) for k in _WINDOWED):
            if all_good:
                g_sid, g_ts, g_val, g_a = b.sid, b.ts, b.val, b.a
            else:
                gi, g_sid = good_rows()
                g_ts, g_val, g_a = b.ts[gi], b.val[gi], b.a[gi]
            if len(g_sid) >= self.overlap_min_points:
                win_future = self._worker().submit(self._windowed, g_sid, g_ts, g_val, g_a)
            else:
                win_chunks = self._windowed(g_sid, g_ts, g_val, g_a)
        try:
            multi_chunks = self._other_chunks(b, chunks, good, all_good, ls, seg_lo, seg_n, good_rows, expand)
        finally:
            if win_future is not None:  # joined even when this thread failed: no writer left behind
                win_chunks = win_future.result()
        chunks.extend(win_chunks)
        chunks.extend(multi_chunks)
        self._apply_chunks(b, chunks, out)
        self._stale_in_batch(b, alive_prev, site_newest_prev, clock_prev, out)
        if len(self._sstale_meta):
            self._site_stale_in_batch(b, alive_prev, site_alive_prev, site_newest_prev, clock_prev, out)
        if self._il_groups:
            self._interlocks(b, out)

    def _worker(self) -> Any:
        """One worker thread per engine for the windowed kinds of large batches (see _evaluate_points)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="earlywarn-rules")
        return self._pool

    def _other_chunks(
        self, b: _Batch, chunks: list[tuple[Any, ...]], good: np.ndarray, all_good: bool, ls: np.ndarray,
        seg_lo: np.ndarray, seg_n: np.ndarray, good_rows: Any, expand: Any,
    ) -> list[tuple[Any, ...]]:
        """Threshold and quality chunks (appended to `chunks`), then the multi-tag kinds' chunks (returned),
        and the site stream they and the gates read."""
        for kind in (_K_THRESHOLD, _K_QUALITY):
            if not len(self._pair_arr[kind][0]):
                continue
            thr = kind == _K_THRESHOLD  # threshold: good readings only; quality: every reading
            # each sensor's first rule of the kind: per sensor segment, spread over its readings by
            # np.repeat (a fraction of the cost of a gather per reading), no expansion, a mask. When
            # most of the batch's sensors have no rule of the kind, the points of the pairs instead.
            inst_s = self._sensor_inst[kind].take(ls).astype(np.intp)
            has_s = inst_s >= 0
            n_has = int(np.count_nonzero(has_s))
            dense = 2 * n_has >= len(has_s)
            if dense:
                all_s = n_has == len(has_s)
                mask: np.ndarray | None = None if all_s else np.repeat(has_s, seg_n)
                if thr and not all_good:
                    mask = good if mask is None else mask & good
                chunks.append(self._single_chunk(
                    kind, inst_s, b.ts, b.val, b.a, b.q, mask, (has_s, all_s, seg_lo, seg_n)))
            pairs = self._pair_extra[kind] if dense else self._pair_arr[kind]
            if n_has and len(pairs[0]):  # (further) rules of the kind on a sensor: expanded by pair
                if thr and not all_good:
                    gi, g_sid = good_rows()
                    pts, inst = expand(pairs, g_sid)
                    pts = gi[pts]
                else:
                    pts, inst = expand(pairs, b.sid)
                if len(inst):
                    chunks.append(self._single_chunk(
                        kind, inst, b.ts[pts], b.val[pts], b.a[pts], b.q[pts], None, None))

        # --- multi-tag kinds (vote, expr) over the site stream
        p = self._p
        multi: list[tuple[Any, ...]] = []
        if self._kind_gated and any(self._kind_gated.values()):
            b.site_rows()  # the gates read it after the join: built here, in the overlap
        for (kind, spec), inst_by_site in self._groups.items():
            rows = b.site_rows()
            tags = spec.tags if kind == _K_VOTE else expr_tags(spec.expr)  # type: ignore[arg-type]
            tidx = [self._tag_idx[t] for t in tags if t in self._tag_idx]
            if not tidx or not len(rows.ts):
                continue
            pts_r = rows.tags_rows(tidx)
            pts_r = pts_r[inst_by_site.take(rows.site.take(pts_r)) >= 0]
            if not len(pts_r):
                continue
            inst = inst_by_site[rows.site[pts_r]]
            if kind == _K_VOTE:
                n_trip = np.zeros(len(pts_r), np.int64)
                n_out = np.zeros(len(pts_r), np.int64)
                r0 = int(self._inst_row[int(inst[0])])  # one spec: the same constants for every instance
                sign, above, below = p["sign"][r0], p["above"][r0], p["below"][r0]
                for t in spec.tags:
                    v = self._asof(b, t, pts_r)
                    cm, dm = folded_conditions(v, sign, above, below)
                    n_trip += cm
                    n_out += ~np.isnan(v) & ~dm
                c = n_trip >= spec.k
                d = n_out < spec.k
            else:
                c = self._eval_expr(b, spec.expr, pts_r)  # type: ignore[arg-type]
                d = ~c
            multi.append((kind, inst, rows.ts[pts_r], c, d, rows.val[pts_r], rows.a[pts_r], None, None))
        return multi

    def _apply_chunks(self, b: _Batch, chunks: list[tuple[Any, ...]], out: list[tuple[Any, ...]]) -> None:
        """Gates, then the delay kernel over every chunk's points, then the delay kinds' signals."""
        st, p = self._st, self._p
        if chunks:
            for ch in chunks:
                if self._kind_gated.get(ch[0]):
                    self._apply_gates(b, ch)
            # Only instances that are active, in a raise-condition run, or have a `c` point in this
            # batch can produce a signal; the others (usually most) skip the kernel. Their carried
            # c-run stays "none" (no c point), and their d-run does not matter while inactive: the
            # point that raises breaks it.
            rel = st.active | (st.c_start_ms != NONE_TS)
            for _, inst, _, c, _, _, _, mask, seg in chunks:
                cm = c if mask is None else c & mask
                if seg is None:
                    rel[inst[cm]] = True
                else:  # per segment: any c point (one reading per sensor: the point itself)
                    has_s, _, lo, _ = seg
                    any_c = cm if len(lo) == len(cm) else np.logical_or.reduceat(cm, lo)
                    rel[inst[any_c & has_s]] = True
            parts = []
            for _, inst, ts, c, d, v, _, mask, seg in chunks:
                if seg is None:
                    keep = rel[inst]
                else:
                    has_s, all_s, _, n_s = seg
                    keep_s = rel.take(inst)
                    if not all_s:
                        keep_s &= has_s
                    if len(n_s) != len(ts):
                        keep_s = np.repeat(keep_s, n_s)
                        inst = np.repeat(inst, n_s)
                    keep = keep_s
                if mask is not None:
                    keep &= mask
                if keep.all():
                    parts.append((inst, ts, c, d, v))
                else:
                    k = np.flatnonzero(keep)
                    parts.append((inst.take(k), ts.take(k), c.take(k), d.take(k), v.take(k)))
            if len(parts) == 1:
                inst, ts, c, d, v = parts[0]
            else:
                inst, ts, c, d, v = (np.concatenate([pt[k] for pt in parts]) for k in range(5))
            row = self._inst_row[inst].astype(np.intp)
            res = delay_kernel(inst, ts, c, d, p["on"][row], p["off"][row], st.c_start_ms, st.d_start_ms,
                               st.active)
            st.c_start_ms[res.inst] = res.c_start_ms
            st.d_start_ms[res.inst] = res.d_start_ms
            st.active[res.inst] = res.active
            ep = res.event_pos
            if len(ep):
                self._delay_signals(inst[ep], ts[ep], v[ep], res.event_raise, out)

    def _single_chunk(
        self, kind: int, inst: np.ndarray, ts: np.ndarray, v: np.ndarray, a: np.ndarray, q: np.ndarray,
        mask: np.ndarray | None, seg: tuple[Any, ...] | None,
    ) -> tuple[Any, ...]:
        """Conditions of threshold (c = v op limit, d = past the deadband) or quality points.

        With `seg` = (has instance, all have one, segment starts, segment lengths), `inst` is per sensor
        segment of the batch (-1: none) and the per-rule constants are spread over the readings.
        """
        p = self._p
        row = self._inst_row.take(inst).astype(np.intp)

        spread = seg is not None and len(seg[3]) != len(v)  # not one reading per sensor

        def const(name: str) -> np.ndarray:
            x = p[name].take(row)
            return np.repeat(x, seg[3]) if spread else x  # type: ignore[index]

        if kind == _K_THRESHOLD:
            sign = p["sign"].take(row)
            if sign.min() == sign.max() == 1.0:  # all `>` / `>=` (often): no sign to apply
                c, d = v > const("above"), v < const("below")
            elif sign.min() == sign.max():  # one direction: a scalar sign, no per-reading array
                c, d = folded_conditions(v, float(sign[0]), const("above"), const("below"))
            else:
                c, d = folded_conditions(v, const("sign"), const("above"), const("below"))
        else:
            c = (q == _BAD) | np.isnan(v)
            c |= const("has_range") & ((v < const("lo")) | (v > const("hi")))
            d = ~c
        return (kind, inst, ts, c, d, v, a, mask, seg)

    def _delay_signals(
        self, inst: np.ndarray, ts: np.ndarray, v: np.ndarray, is_raise: np.ndarray,
        out: list[tuple[Any, ...]],
    ) -> None:
        """Signals of delay instances (what _sig does, without a _Meta per signal: hundreds per batch)."""
        sites, row_meta, make = self._sites, self._row_meta, _make_signal
        for si, r, t, x, up in zip(self._inst_site[inst].tolist(), self._inst_row[inst].tolist(), ts.tolist(),
                                   v.tolist(), is_raise.tolist()):
            pos, spec, tag = row_meta[r]
            site = sites[si]
            out.append((t, site, pos, tag, 0 if up else 1, make(
                site, tag, spec.id, spec.severity, _RAISE if up else _CLEAR, t, x, spec.message, "")))

    def _apply_gates(self, b: _Batch, ch: tuple[Any, ...]) -> None:
        """`when` gates: c &= gate, d |= not gate, with the gate evaluated as of each point."""
        _, inst, _, c, d, _, a, mask, seg = ch
        gate_of = self._p["gate"]
        if seg is not None:  # inst per sensor segment: the gated segments' points only
            has_s, _, lo, n_s = seg
            gate_s = np.where(has_s, gate_of.take(self._inst_row.take(inst)), -1)
            gs = np.flatnonzero(gate_s >= 0)
            pos = expand_ranges(lo[gs], n_s[gs])
            gate = np.repeat(gate_s[gs], n_s[gs])
        else:
            gate = gate_of.take(self._inst_row.take(inst))
            pos = np.flatnonzero(gate >= 0)
            gate = gate.take(pos)
        if mask is not None:
            keep = mask.take(pos)
            pos, gate = pos[keep], gate[keep]
        if not len(pos):
            return
        srow_of_a = b.site_rows().row_of_a
        # the distinct gate ids, ascending: gate ids are small, so a count instead of a sort of the points
        g_lo, g_hi = int(gate.min()), int(gate.max())
        ids = [g_lo] if g_lo == g_hi else (np.flatnonzero(np.bincount(gate - g_lo)) + g_lo).tolist()
        for g in ids:
            sel = pos if len(ids) == 1 else pos[gate == g]
            gv = self._eval_expr(b, self._gates[int(g)], srow_of_a.take(a.take(sel)))
            c[sel] &= gv
            d[sel] |= ~gv

    def _windowed(
        self, g_sid: np.ndarray, g_ts: np.ndarray, g_val: np.ndarray, g_a: np.ndarray
    ) -> list[tuple[Any, ...]]:
        """rate, flatline, trend: windows reach into a carried history tail of good readings.

        The batch's readings are appended to their sensors' history regions (state.hist_append), so each
        sensor's window is one ascending run [h_lo, h_hi) of the flat arrays; window starts and rate
        references are binary searches inside the runs. Nothing here touches the history of sensors
        without readings in the batch.
        """
        st, p = self._st, self._p
        win = self._maxwin[g_sid] >= 0
        chunks: list[tuple[Any, ...]] = []
        if not win.any():
            return chunks
        n_sid = g_sid[win].astype(_I64)
        n_ts, n_val, n_a = g_ts[win], g_val[win], g_a[win]
        starts = np.flatnonzero(segment_first(n_sid))
        u = n_sid[starts]
        cnt = np.diff(np.append(starts, len(n_sid)))
        st.hist_append(u, cnt, n_ts, n_val)
        pos_new = expand_ranges(st.h_hi[u] - cnt, cnt)  # flat position of each new reading
        h_ts, h_val = st.h_ts, st.h_val
        for kind in _WINDOWED:
            psid, pinst = self._pair_arr[kind]
            if not len(psid):
                continue
            n_lo = np.searchsorted(n_sid, psid, "left")
            n_cnt = np.searchsorted(n_sid, psid, "right") - n_lo
            idx = expand_ranges(n_lo, n_cnt)
            if not len(idx):
                continue
            inst = np.repeat(pinst.astype(_I64), n_cnt)
            row = self._inst_row[inst]
            window = p["window"][row]
            sid_i, pos = n_sid[idx], pos_new[idx]
            t_i, v_i = n_ts[idx], n_val[idx]
            lo = st.h_lo[sid_i]
            if kind == _K_RATE:
                # reference: the latest reading at or before t_i - window, so the change spans at least
                # the window (a zero window means the previous reading)
                jr = bisect(h_ts, lo, pos, t_i - np.maximum(window, 1), right=True) - 1
                ok = jr >= lo
                jr = np.where(ok, jr, pos)
                with np.errstate(divide="ignore", invalid="ignore"):
                    rate = (v_i - h_val[jr]) / (t_i - h_ts[jr]) * 60000.0
                rate[~ok] = np.nan
                c, d = folded_conditions(rate, p["sign"][row], p["above"][row], p["below"][row])
                chunks.append((kind, inst, t_i, c, d, v_i, n_a[idx], None, None))
                continue
            # flatline, trend: the first point of the window [t_i - window, t_i]
            j = bisect(h_ts, lo, pos, t_i - window, right=False)
            # the runs of this kind's sensors with points here, gathered into one buffer
            su = sid_i[segment_first(sid_i)]  # pairs are sorted by sensor: sid_i ascends
            s_lo, s_len = st.h_lo[su], st.h_hi[su] - st.h_lo[su]
            src = expand_ranges(s_lo, s_len)
            base = np.cumsum(s_len) - s_len - s_lo  # flat position + base = position in the buffer
            k_of = np.searchsorted(su, sid_i)
            shift = base[k_of]
            e_val = h_val[src]
            covered = (t_i - st.sensor_first_good_ts_ms[sid_i]) >= window
            if kind == _K_FLATLINE:
                c = covered & (SparseRange(e_val).spread(j + shift, pos + shift) <= p["eps"][row])
                d = covered & ~c
            else:
                # evaluable only once the sensor's history covers the whole window (no forecast from
                # the first few points after a cold start)
                prefix = _trend_prefix(np.repeat(su, s_len), h_ts[src], e_val)
                c, d = _trend_conditions(prefix, j + shift, pos + shift, t_i, row, p)
                c &= covered
                d &= covered
            chunks.append((kind, inst, t_i, c, d, v_i, n_a[idx], None, None))
        # keep the tail each sensor can still need: ts >= last good ts - longest window, and the latest
        # reading before that (a rate's reference reading, at or before t - window)
        st.hist_trim(u, self._maxwin[u].astype(_I64))
        return chunks

    # --- expressions ----------------------------------------------------------------------------

    def _asof(self, b: _Batch, tag: str, pts: np.ndarray) -> np.ndarray:
        """Latest good value of (site, tag) at or before each row `pts` of the site stream (NaN: none).

        The good rows of the tag are sorted positions of the site stream (`_Rows.tag_rows`): a binary
        search gives the latest one at or before each query, which counts if it lies in the query's site
        segment, else the value carried from earlier batches.
        """
        rows = b.site_rows()
        ti = self._tag_idx.get(tag)
        if ti is None or not len(pts):
            return np.full(len(pts), np.nan)
        gx = b.asof_rows.get(ti)
        if gx is None:  # the tag's good rows after a -1 ("none before")
            gx = b.asof_rows[ti] = np.concatenate((np.full(1, -1, _I64), rows.tag_rows(ti)))
        last = gx.take(np.searchsorted(gx[1:], pts, "right"))
        res = rows.val.take(last)  # (last = -1: a wrong value, replaced below)
        out = np.flatnonzero(last < rows.seg_first.take(pts))  # none in the query's site segment
        if len(out):
            carry = b.asof_carry.get(ti)
            if carry is None:  # per site: the latest good value before this batch (NaN: none)
                sid_col = self._sidm[:, ti]
                carry = b.asof_carry[ti] = np.where(
                    sid_col >= 0, b.last_good_prev[np.maximum(sid_col, 0)], np.nan)
            res[out] = carry.take(rows.site.take(pts.take(out)))
        return res

    def _eval_expr(self, b: _Batch, e: Expr, pts: np.ndarray) -> np.ndarray:
        """An expression as of each row `pts` of the site stream. `and` / `or` evaluate an item only at
        the points their earlier items left open (the items are pure: the same result, less work)."""
        if isinstance(e, Cmp):
            v = self._asof(b, e.tag, pts)
            return np.asarray(~np.isnan(v) & _cmp(v, e.op, e.value), dtype=bool)
        if isinstance(e, (And, Or)):
            is_and = isinstance(e, And)
            r = self._eval_expr(b, e.items[0], pts)
            for it in e.items[1:]:
                open_ = np.flatnonzero(r) if is_and else np.flatnonzero(~r)
                if not len(open_):
                    break
                if len(open_) == len(r):
                    r = self._eval_expr(b, it, pts)
                else:
                    r[open_] = self._eval_expr(b, it, pts.take(open_))
            return r
        assert isinstance(e, Not)
        return ~self._eval_expr(b, e.item, pts)

    # --- engine-clock kinds ---------------------------------------------------------------------

    def _stale_in_batch(
        self, b: _Batch, alive_prev: np.ndarray, site_newest_prev: np.ndarray, clock_prev: int,
        out: list[tuple[Any, ...]],
    ) -> None:
        """Per-tag stale: gaps closed by this batch's readings raise at alive + timeout (if the site clock
        passed it before the next reading) and clear at the next reading; carried stale alarms clear."""
        sa = self._stale_arr
        if not len(sa.get("sid", ())):
            return
        st = self._st
        n = len(b.sid)
        has = self._stale_sensor[b.sid]
        first = segment_first(b.sid)
        prev = np.empty(n, _I64)
        prev[1:] = np.maximum(b.ts[:-1], clock_prev)  # the sign of life of the reading before
        prev[first] = alive_prev[b.sid[first]]
        clock = np.maximum(np.maximum(clock_prev, site_newest_prev[self._sensor_site[b.sid]]), b.ts)
        has_prev = prev != NONE_TS
        # candidates: the first reading of a sensor in the batch (it may clear a carried alarm) and
        # readings after a gap longer than the sensor's shortest stale timeout
        k = np.flatnonzero(has & has_prev & (first | (clock > prev + self._stale_min_timeout[b.sid])))
        if len(k):
            lo, hi = self._stale_sid_lo[b.sid[k]], self._stale_sid_hi[b.sid[k]]
            si = self._stale_by_sid[expand_ranges(lo, hi - lo)]
            rk = np.repeat(k, hi - lo)
            due = prev[rk] + sa["timeout"][si]
            carried = first[rk] & st.stale_active[si]
            gap = ~carried & (clock[rk] > due)
            for j in np.flatnonzero(gap | carried).tolist():
                mt = self._stale_inst_meta(int(si[j]))
                if gap[j]:
                    out.append(self._sig(mt, int(due[j]), float("nan"), True))
                r = int(rk[j])
                out.append(self._sig(mt, int(b.ts[r]), float(b.val[r]), False))
        seen = b.sid[first & has]
        lo, hi = self._stale_sid_lo[seen], self._stale_sid_hi[seen]
        st.stale_active[self._stale_by_sid[expand_ranges(lo, hi - lo)]] = False

    def _site_stale_in_batch(
        self, b: _Batch, alive_prev: np.ndarray, site_alive_prev: np.ndarray, site_newest_prev: np.ndarray, clock_prev: int,
        out: list[tuple[Any, ...]],
    ) -> None:
        """Site-wide stale (tag "*"): gaps in the site's merged stream of readings of any tag.

        Only sites that may have a gap are put in (site, ts) order: a gap of the site is a gap of at
        least as long in the sensor that ends it (or that sensor is new and starts after the gap), so
        sensors without such a gap, in sites without a carried stale alarm, rule their site out cheaply.
        """
        st = self._st
        site = self._sensor_site[b.sid]
        has = self._site_has_sstale[site]
        if not has.any():
            return
        n = len(b.sid)
        first = segment_first(b.sid)
        min_to = self._site_min_sto[site]
        prev = np.empty(n, _I64)
        prev[1:] = np.maximum(b.ts[:-1], clock_prev)
        prev[first] = alive_prev[b.sid[first]]
        n_sites = len(self._sites)
        clk = np.maximum(np.maximum(clock_prev, site_newest_prev[site]), b.ts)
        cand = has & (clk > prev + min_to)  # (a new sensor's NONE_TS prev is replaced below)
        fpos = np.flatnonzero(first)
        new_sensor = fpos[prev[fpos] == NONE_TS]  # only a sensor's first reading can have no sign of life
        if len(new_sensor):
            # a new sensor of a site: a gap if it starts more than the timeout after the site's sign of
            # life (or the site's first reading in this batch: readings are ts-ascending per sensor)
            site_min_ts = np.full(n_sites, np.iinfo(_I64).max, _I64)
            np.minimum.at(site_min_ts, site[fpos], b.ts[fpos])
            ns_site = site[new_sensor]
            alive_ns = site_alive_prev[ns_site]
            base = np.where(alive_ns != NONE_TS, alive_ns, site_min_ts[ns_site])
            cand[new_sensor] = has[new_sensor] & (b.ts[new_sensor] > base + min_to[new_sensor])
        cand_sites = np.zeros(n_sites, bool)
        cand_sites[site[cand]] = True
        act = st.site_stale_active | st.site_stale_gated
        cand_sites[self._ss_site[act]] = True
        seen = np.zeros(n_sites, bool)
        seen[site[fpos]] = True
        cand_sites &= seen
        if cand_sites.any():
            m = np.flatnonzero(cand_sites[site])
            o = m[np.lexsort((b.a[m], b.ts[m], site[m]))]  # ties: arrival order (stream order)
            o_site, o_ts = site[o], b.ts[o]
            sf = segment_first(o_site)
            alive = np.empty(len(o), _I64)  # the site's sign of life before each reading
            alive[1:] = np.maximum(o_ts[:-1], clock_prev)
            alive[sf] = site_alive_prev[o_site[sf]]
            # within a site the readings are in ts order, so only a carried sign of life (a clock) can
            # be ahead of later rows: take the max with the segment's first value
            alive = np.maximum(alive, alive[ffill_index(sf)])
            o_clk = np.maximum(np.maximum(clock_prev, site_newest_prev[o_site]), o_ts)
            lo = np.flatnonzero(sf)
            hi = np.append(lo[1:], len(o))
            seg_of_site = {int(o_site[a]): (int(a), int(z)) for a, z in zip(lo, hi)}
            for k, mt in enumerate(self._sstale_meta):
                si = int(self._ss_site[k])
                if si not in seg_of_site:
                    continue
                a, z = seg_of_site[si]
                to = int(self._ss_timeout[k])
                if st.site_stale_active[k]:
                    r = int(o[a])
                    out.append(self._sig(mt, int(b.ts[r]), float(b.val[r]), False))
                gap_from = a + 1 if (st.site_stale_active[k] or st.site_stale_gated[k]) else a
                st.site_stale_active[k] = False
                st.site_stale_gated[k] = False
                seg_alive, seg_clk = alive[gap_from:z], o_clk[gap_from:z]
                for j in np.flatnonzero((seg_alive != NONE_TS) & (seg_clk > seg_alive + to)).tolist():
                    due = int(seg_alive[j]) + to
                    r = int(o[gap_from + j])
                    if mt.spec.when is not None and not self._gate_at(b, mt.spec.when, si, due):
                        continue
                    out.append(self._sig(mt, due, float("nan"), True))
                    out.append(self._sig(mt, int(b.ts[r]), float(b.val[r]), False))

    def _gate_at(self, b: _Batch | None, e: Expr, si: int, t: int) -> bool:
        """A gate on the site's latest good values at or before time t (in stream order)."""
        st = self._st
        row = -1
        if b is not None:
            rows = b.site_rows()
            lo = int(np.searchsorted(rows.site, si, "left"))
            hi = int(np.searchsorted(rows.site, si, "right"))
            row = lo + int(np.searchsorted(rows.ts[lo:hi], t, "right")) - 1
            if row < lo:
                row = -1

        def value(tag: str) -> float:
            ti = self._tag_idx.get(tag)
            if ti is None:
                return float("nan")
            if row >= 0:
                return float(self._asof(b, tag, np.array([row]))[0])  # type: ignore[arg-type]
            sid = int(self._sidm[si, ti])
            if sid < 0:
                return float("nan")
            src = b.last_good_prev if b is not None else st.sensor_last_good
            return float(src[sid])

        return _eval_scalar(e, value)

    def _end_of_batch(self, out: list[tuple[Any, ...]], b: _Batch | None) -> None:
        """Apply the clock at the end of a batch (or a tick) to stale sensors and interlock deadlines."""
        st = self._st
        site_clock = np.maximum(st.site_newest_ms, st.clock_ms)
        self._refresh()
        sa = self._stale_arr
        if len(sa.get("sid", ())):
            n = len(sa["sid"])
            last = st.sensor_alive_ms[sa["sid"]]
            has = last != NONE_TS
            due = np.where(has, last, 0) + sa["timeout"]
            fire = has & ~st.stale_active[:n] & (site_clock[sa["site"]] > due)
            for k in np.flatnonzero(fire).tolist():
                out.append(self._sig(self._stale_inst_meta(k), int(due[k]), float("nan"), True))
            st.stale_active[:n] |= fire
        if len(self._sstale_meta):
            alive = st.site_alive_ms[self._ss_site]
            due = np.where(alive != NONE_TS, alive, 0) + self._ss_timeout
            fire = ((alive != NONE_TS) & ~st.site_stale_active & ~st.site_stale_gated
                    & (site_clock[self._ss_site] > due))
            for k in np.flatnonzero(fire).tolist():
                mt = self._sstale_meta[k]
                # every reading of the site is in: the gate reads its latest values (the gap's start)
                if mt.spec.when is not None and not self._gate_at(None, mt.spec.when, int(self._ss_site[k]),
                                                                  int(due[k])):
                    st.site_stale_gated[k] = True
                    continue
                out.append(self._sig(mt, int(due[k]), float("nan"), True))
                st.site_stale_active[k] = True
        if self._il_groups and b is None:
            self._interlocks(None, out)

    def _interlocks(self, b: _Batch | None, out: list[tuple[Any, ...]]) -> None:
        """Interlock checks: vectorized trigger / expect evaluation, a small loop over trigger edges."""
        st = self._st
        site_clock = np.maximum(st.site_newest_ms, st.clock_ms)
        for spec, il_by_site in self._il_groups.items():
            self._interlock_group(spec, il_by_site, b, site_clock, out)

    def _interlock_group(
        self, spec: RuleSpec, il_by_site: np.ndarray, b: _Batch | None, site_clock: np.ndarray,
        out: list[tuple[Any, ...]],
    ) -> None:
        """All instances (sites) of one interlock rule."""
        st = self._st
        assert spec.trigger is not None and spec.expect is not None
        within = spec.within_ms
        if b is not None:
            rows = b.site_rows()
            ttags = [self._tag_idx[t] for t in expr_tags(spec.trigger) if t in self._tag_idx]
            xtags = [self._tag_idx[t] for t in expr_tags(spec.expect) if t in self._tag_idx]
            pts = rows.tags_rows(ttags + xtags)
            pts = pts[il_by_site.take(rows.site.take(pts)) >= 0]
        else:
            pts = np.zeros(0, _I64)
        n = len(pts)
        if n:
            assert b is not None
            inst = il_by_site[rows.site[pts]]
            ts = rows.ts[pts]
            # the site clock at each point: what decides "before the deadline passed"
            clk = np.maximum(np.maximum(b.clock_prev, b.site_newest_prev[rows.site[pts]]), ts)
            trig = self._eval_expr(b, spec.trigger, pts)
            expect = self._eval_expr(b, spec.expect, pts)
            lut = np.zeros(len(self._tag_names), bool)
            lut[ttags] = True
            pt_tag = rows.tag.take(pts)
            is_t = lut.take(pt_tag)
            lut[:] = False
            lut[xtags] = True
            is_x = lut.take(pt_tag)
            tp = np.flatnonzero(is_t)
            tinst = inst[tp]
            prev_t = np.empty(len(tp), bool)
            if len(tp):
                prev_t[1:] = trig[tp[:-1]]
                tf = segment_first(tinst)
                prev_t[tf] = st.il_trig_last[tinst[tf]]
                tl = segment_last(tinst)
                st.il_trig_last[tinst[tl]] = trig[tp[tl]]
            edges = tp[trig[tp] & ~prev_t]
            seg_f = segment_first(inst)
            seg_lo = np.flatnonzero(seg_f)
            seg_hi = np.append(seg_lo[1:], n)
            bounds = {int(inst[lo]): (int(lo), int(hi)) for lo, hi in zip(seg_lo, seg_hi)}
            cand = np.flatnonzero(is_x & expect)
            clear_cand = np.flatnonzero(expect | ~trig)
            vals = rows.val[pts]
        else:
            edges = np.zeros(0, _I64)
            bounds, cand, clear_cand = {}, np.zeros(0, _I64), np.zeros(0, _I64)
            inst = ts = vals = clk = np.zeros(0, _I64)
            trig = expect = np.zeros(0, bool)

        def satisfied(i: int, q: int, deadline: int) -> bool:
            k = int(np.searchsorted(cand, q))
            return k < len(cand) and cand[k] < bounds[i][1] and int(clk[cand[k]]) <= deadline

        # Each arm is (deadline, first point after it was armed). A failed arm is detected at the
        # first site reading after arming whose clock exceeds the deadline; in points, `start` =
        # max(arming point + 1, first point with clock > deadline). Clears are looked for from there.
        failed: dict[int, list[tuple[int, int]]] = {}  # inst -> [(start, deadline)]
        insts_here = set(bounds)

        def detect(i: int, after: int, dl: int) -> None:
            lo, hi = bounds.get(i, (0, 0))
            start = max(after, lo + int(np.searchsorted(clk[lo:hi], dl, "right"))) if hi > lo else 0
            failed.setdefault(i, []).append((start, dl))

        for i in list(st.il_pending):
            if int(il_by_site[self._il_site[i]]) != i:
                continue
            arms = st.il_pending.pop(i)
            keep: list[tuple[int, int]] = []
            for t0, dl in arms:
                if i in insts_here and satisfied(i, bounds[i][0], dl):
                    continue
                if site_clock[self._il_site[i]] > dl:
                    detect(i, bounds.get(i, (0, 0))[0], dl)
                else:
                    keep.append((t0, dl))
            if keep:
                st.il_pending[i] = keep
        for e in edges.tolist():
            i = int(inst[e])
            t0 = int(ts[e])
            dl = t0 + within
            if expect[e] or satisfied(i, e + 1, dl):
                continue
            if site_clock[self._il_site[i]] > dl:
                detect(i, e + 1, dl)
            else:
                st.il_pending.setdefault(i, []).append((t0, dl))
        # carried active alarms clear at their first clear point; failures raise (unless the alarm is
        # still active when they are detected) and then clear at the first clear point after that
        todo = set(failed) | {i for i in insts_here if st.il_active[i]}
        for i in sorted(todo):
            mt = self._il_meta[i]
            lo, hi = bounds.get(i, (0, 0))

            def next_clear(start: int, hi: int = hi) -> int | None:
                k = int(np.searchsorted(clear_cand, start))
                return int(clear_cand[k]) if k < len(clear_cand) and clear_cand[k] < hi else None

            active = bool(st.il_active[i])
            clear_pos = next_clear(lo) if active and lo < hi else None
            if clear_pos is not None:
                out.append(self._sig(mt, int(ts[clear_pos]), float(vals[clear_pos]), False))
            for start, dl in sorted(failed.get(i, [])):
                if active and (clear_pos is None or clear_pos >= start):
                    continue  # still active when this failure is detected: same episode
                out.append(self._sig(mt, dl, float("nan"), True, "interlock_failed"))
                active = True
                clear_pos = next_clear(start) if lo < hi else None
                if clear_pos is not None:
                    out.append(self._sig(mt, int(ts[clear_pos]), float(vals[clear_pos]), False))
            st.il_active[i] = active and clear_pos is None


    # --- signals --------------------------------------------------------------------------------

    @staticmethod
    def _sig(mt: _Meta, ts_ms: int, value: float, is_raise: bool, detail: str = "") -> tuple[Any, ...]:
        spec = mt.spec
        # positional: Signal(site, tag, rule_id, severity, kind, ts_ms, value, message, detail)
        sig = Signal(mt.site, mt.tag, spec.id, spec.severity, _RAISE if is_raise else _CLEAR, ts_ms, value,
                     spec.message, detail)
        return (ts_ms, mt.site, mt.rule_pos, mt.tag, 0 if is_raise else 1, sig)

    @staticmethod
    def _sorted(out: list[tuple[Any, ...]]) -> list[Signal]:
        out.sort(key=_SIG_ORDER)
        return [x[5] for x in out]


def _signal_maker() -> Any:
    """`Signal(site, tag, rule_id, severity, kind, ts_ms, value, message, detail)`, positional.

    Signal is a frozen slots dataclass: its generated __init__ sets each field through
    object.__setattr__ (~2.2 us a signal; a batch can emit hundreds). When Signal is exactly that (these
    fields in this order, slots, no __post_init__), the slots are filled directly (~1.4 us), which is
    what __init__ does; otherwise the constructor is used as is.
    """
    names = ("site", "tag", "rule_id", "severity", "kind", "ts_ms", "value", "message", "detail")
    plain = (
        dataclasses.is_dataclass(Signal) and tuple(f.name for f in dataclasses.fields(Signal)) == names
        and getattr(Signal, "__slots__", None) == names and not hasattr(Signal, "__post_init__")
        and all(isinstance(Signal.__dict__.get(n), types.MemberDescriptorType) for n in names)
    )
    if not plain:
        return Signal
    s1, s2, s3, s4, s5, s6, s7, s8, s9 = (Signal.__dict__[n].__set__ for n in names)
    new = object.__new__

    def make(site: str, tag: str, rule_id: str, severity: Any, kind: Any, ts_ms: int, value: float,
             message: str, detail: str) -> Signal:
        sig = new(Signal)
        s1(sig, site)
        s2(sig, tag)
        s3(sig, rule_id)
        s4(sig, severity)
        s5(sig, kind)
        s6(sig, ts_ms)
        s7(sig, value)
        s8(sig, message)
        s9(sig, detail)
        return sig

    return make


_make_signal = _signal_maker()


def _scatter_max(target: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    """target[idx] = max(target[idx], vals), repeated indices included (np.maximum.at). Sensor ids are
    numbered in order of first appearance, so a batch's sensors usually come site by site: then one
    reduceat over the runs of equal indices, much cheaper than ufunc.at."""
    if len(idx) > 1 and not bool(np.any(idx[1:] < idx[:-1])):
        starts = np.flatnonzero(segment_first(idx))
        u = idx.take(starts)
        target[u] = np.maximum(target[u], np.maximum.reduceat(vals, starts))
    else:
        np.maximum.at(target, idx, vals)


def _walk_to_good(pos: np.ndarray, stop: np.ndarray, good: np.ndarray, step: int) -> np.ndarray:
    """Move each position by `step` until it is on a good reading, not past `stop` (then -1)."""
    pos = pos.copy()
    todo = np.flatnonzero(~good[pos])
    while len(todo):
        pos[todo] += step
        out = (pos[todo] < stop[todo]) if step < 0 else (pos[todo] > stop[todo])
        pos[todo[out]] = -1
        todo = todo[~out]
        todo = todo[~good[pos[todo]]]
    return pos


def _sensor_order(sid: np.ndarray, n_sensors: int) -> np.ndarray:
    """Stable argsort of sensor ids (ties keep arrival order).

    Arrival order is usually a few long runs of ascending ids (each second or message lists its sensors
    in the same order): timsort merges the runs in a fraction of a radix sort. Otherwise a 16-bit radix
    sort (two passes, low half first, above 65 536 sensors).
    """
    n = len(sid)
    if n < 2 or np.count_nonzero(sid[1:] < sid[:-1]) <= n >> 7:
        return np.argsort(sid, kind="stable")
    if n_sensors <= 1 << 16:
        return np.argsort(sid.astype(np.uint16), kind="stable")
    o = np.argsort((sid & 0xFFFF).astype(np.uint16), kind="stable")
    return o[np.argsort((sid[o] >> 16).astype(np.uint16), kind="stable")]


def _eval_scalar(e: Expr, value: Any) -> bool:
    """An expression on one set of values (`value(tag)` -> float, NaN = no value yet)."""
    if isinstance(e, Cmp):
        v = value(e.tag)
        return not np.isnan(v) and bool(_cmp(np.asarray([v]), e.op, e.value)[0])
    if isinstance(e, And):
        return all(_eval_scalar(i, value) for i in e.items)
    if isinstance(e, Or):
        return any(_eval_scalar(i, value) for i in e.items)
    assert isinstance(e, Not)
    return not _eval_scalar(e.item, value)


def _trend_prefix(e_sid: np.ndarray, e_ts: np.ndarray, e_val: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sensor prefix sums for windowed least squares.

    Times are seconds relative to each sensor's first point in the window buffer and values relative to
    its first value, so that the sums stay small and differences of prefix sums keep their precision.
    """
    first = segment_first(e_sid)
    fi = ffill_index(first)
    x = (e_ts - e_ts[fi]) / 1000.0
    y = e_val - e_val[fi]
    res = {"origin_ms": e_ts[fi], "y0": e_val[fi]}
    for name, arr in (("x", x), ("y", y), ("xx", x * x), ("xy", x * y), ("yy", y * y)):
        cs = np.zeros(len(arr) + 1)
        np.cumsum(arr, out=cs[1:])
        res[name] = cs
    return res


def _trend_conditions(
    pf: dict[str, np.ndarray], j: np.ndarray, i: np.ndarray, t_i: np.ndarray, row: np.ndarray,
    p: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    n = (i - j + 1).astype(np.float64)
    s = {k: pf[k][i + 1] - pf[k][j] for k in ("x", "y", "xx", "xy", "yy")}
    cxx = s["xx"] - s["x"] * s["x"] / n
    cxy = s["xy"] - s["x"] * s["y"] / n
    cyy = s["yy"] - s["y"] * s["y"] / n
    ok = n >= 3
    mean = s["y"] / n + pf["y0"][i]
    flat = cyy <= _TREND_FLAT_REL * n * (1.0 + mean * mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = cxy / cxx
        icpt = (s["y"] - slope * s["x"]) / n
        xh = (t_i + p["horizon"][row] - pf["origin_ms"][i]) / 1000.0
        forecast = icpt + slope * xh + pf["y0"][i]
        r2 = cxy * cxy / (cxx * cyy)
    cf = forecast * p["sign"][row] > p["above"][row]  # forecast op limit (no deadband for trend)
    c = ok & ~flat & cf & (r2 >= p["min_r2"][row])
    return c, ok & ~c


class _Rows:
    """The batch's evaluated readings of *interesting* sensors (tags read by expressions, votes and gated
    rules) in site-stream order: (site, ts, arrival). Other readings never need this order."""

    __slots__ = ("_tag_lo", "_tag_pos", "a", "good", "row_of_a", "seg_first", "site", "tag", "ts", "val")

    def __init__(self, b: _Batch) -> None:
        m = np.flatnonzero(b.interest_sensor.take(b.sid))  # positions in sensor order
        sid, ts, a = b.sid.take(m), b.ts.take(m), b.a.take(m)
        site = b.site_of_sid.take(sid).astype(_I64)
        if len(ts):
            t0 = int(ts.min())
            span = int(ts.max()) - t0 + 1
            if (int(site.max()) + 1) * span * b.n_arrival < 1 << 62:
                # one sort on a unique composite key (site, ts, arrival); in sensor order the keys are a
                # run per sensor, which the stable sort (timsort) merges
                key = site * span
                key += ts - t0
                key *= b.n_arrival
                key += a
                order = np.argsort(key, kind="stable")
            else:
                order = np.lexsort((a, ts, site))
        else:
            order = np.zeros(0, _I64)
        pos = m.take(order)
        self.a = a.take(order)
        self.site = site.take(order)
        self.ts = ts.take(order)
        self.tag = b.tag_of_sid.take(sid.take(order)).astype(_I64)
        self.val = b.val.take(pos)
        self.good = b.good.take(pos)
        self.row_of_a = np.full(b.n_arrival, -1, _I64)
        self.row_of_a[self.a] = np.arange(len(self.a))
        self.seg_first = ffill_index(segment_first(self.site))
        self._tag_pos: np.ndarray | None = None
        self._tag_lo = np.zeros(1, _I64)

    def tag_rows(self, ti: int) -> np.ndarray:
        """Positions (ascending) of the good rows of tag code `ti`. All tags at once on first use: one
        stable sort of the good rows by tag keeps stream order inside each tag."""
        if self._tag_pos is None:
            gi = np.flatnonzero(self.good)
            gt = self.tag.take(gi)
            n_tags = int(gt.max()) + 1 if len(gt) else 0
            # a 16-bit key sorts by radix (stable, linear)
            o = np.argsort(gt.astype(np.uint16) if n_tags <= 1 << 16 else gt, kind="stable")
            self._tag_pos = gi.take(o)
            self._tag_lo = np.zeros(n_tags + 1, _I64)
            np.cumsum(np.bincount(gt, minlength=n_tags), out=self._tag_lo[1:])
        if ti + 1 >= len(self._tag_lo):
            return self._tag_pos[:0]
        return self._tag_pos[self._tag_lo[ti]:self._tag_lo[ti + 1]]

    def tags_rows(self, tis: Sequence[int]) -> np.ndarray:
        """Positions (ascending) of the good rows of any of the tag codes `tis`."""
        parts = [self.tag_rows(t) for t in sorted(set(tis))]
        if not parts:
            return np.zeros(0, _I64)
        if len(parts) == 1:
            return parts[0]
        return np.sort(np.concatenate(parts), kind="stable")  # sorted runs: merged by timsort


class _Batch:
    """Per-batch working arrays in sensor order (sid, ts), built once and shared by all kinds."""

    def __init__(
        self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray, q: np.ndarray, a: np.ndarray,
        n_arrival: int, site_of_sid: np.ndarray, tag_of_sid: np.ndarray,
    ) -> None:
        self.sid, self.ts, self.val, self.q, self.a = sid, ts, val, q, a
        self.n_arrival = n_arrival
        self.site_of_sid, self.tag_of_sid = site_of_sid, tag_of_sid
        self.interest_sensor = np.zeros(0, bool)
        self.good = np.zeros(0, bool)
        self.last_good_prev = np.zeros(0)
        self.clock_prev = NONE_TS
        self.site_newest_prev = np.zeros(0, _I64)
        self.asof_carry: dict[int, np.ndarray] = {}  # tag code -> per-site carried value (_asof)
        self.asof_rows: dict[int, np.ndarray] = {}  # tag code -> -1, then its good rows (_asof)
        self._rows: _Rows | None = None

    def site_rows(self) -> _Rows:
        if self._rows is None:
            self._rows = _Rows(self)
        return self._rows
