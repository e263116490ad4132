"""Rolling rule state carried between micro-batches, as arrays, with an immutable byte snapshot.

All per-sensor and per-rule-instance state lives in numpy arrays indexed by integer ids, so that a batch
updates it with a few scatter operations. The snapshot is a numpy `.npz` archive (no pickle): arrays plus
one JSON document for the string keys, so a restore can re-attach state to rules by name even if the
rule set was rebuilt.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from earlywarn.rules.kernels import NONE_TS, expand_ranges

_I64 = np.int64
#: Dead history slots below which no repack is done (however large their share).
H_REPACK_MIN = 4096


def _grow(a: np.ndarray, n: int, fill: Any) -> np.ndarray:
    """`a` with room for at least n entries (new ones = fill). Grows by half (amortized O(1) per entry,
    at most a third of the buffer unused); a first bulk registration allocates exactly n."""
    if len(a) >= n:
        return a
    out = np.full(max(n, len(a) + len(a) // 2, 16 if len(a) else 0), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


@dataclass
class EngineState:
    """Everything the engine remembers between batches.

    Sensors are (site, tag) pairs seen in readings, numbered in order of first appearance (the engine
    keeps their names as integer codes; per-sensor arrays have spare capacity beyond `n_sensors`).
    Delay instances (threshold, rate, flatline, quality, trend, vote, expr) are numbered by the engine at
    construction; per-tag stale instances per (site, rule, tag) as sensors appear; site-wide stale
    instances (tag "*") per (site, rule) at construction; interlocks per (site, rule).
    """

    clock_ms: int = NONE_TS  # the engine clock: max of every now_ms passed in
    # sensors
    n_sensors: int = 0
    sensor_last_ts_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    sensor_last_good: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sensor_first_good_ts_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    # last sign of life of a sensor for stale: max(last ts, engine clock before the batch it arrived in)
    sensor_alive_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    # per ruled site: newest event time seen (the replay clock of that site)
    site_newest_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    # per ruled site: last sign of life (newest ts of any tag, or the engine clock before its batch)
    site_alive_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    # delay instances
    c_start_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    d_start_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # stale instances
    stale_active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # site-wide stale instances (tag "*"): alarm active; gap seen but gated out (no alarm, no clear)
    site_stale_active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    site_stale_gated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    # interlocks
    il_trig_last: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    il_active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    il_pending: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # inst -> [(t0, deadline)]
    # history tail of good readings for windowed kinds: per sensor a region [h_off, h_off + h_cap) of
    # the flat arrays h_ts / h_val, its live readings (ts ascending) at [h_lo, h_hi). A batch appends
    # at h_hi and moves h_lo past what no window needs any more; a full region is compacted in place
    # (when that leaves room for at least its live part) or moved to the end with twice the room, so a
    # batch costs in proportion to its readings, not to the stored history (see hist_append). Positions
    # are int32 (16 bytes per sensor; the flat arrays stay below 2**31 entries).
    h_off: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    h_cap: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    h_lo: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    h_hi: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    h_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    h_val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    h_used: int = 0  # end of the allocated regions in h_ts / h_val
    h_dead: int = 0  # slots of regions given up by moves (reclaimed by a repack)

    def add_sensors(self, k: int) -> int:
        """Room for k new sensors; returns the first new id."""
        sid = self.n_sensors
        n = self.n_sensors = sid + k
        self.sensor_last_ts_ms = _grow(self.sensor_last_ts_ms, n, NONE_TS)
        self.sensor_last_good = _grow(self.sensor_last_good, n, np.nan)
        self.sensor_first_good_ts_ms = _grow(self.sensor_first_good_ts_ms, n, NONE_TS)
        self.sensor_alive_ms = _grow(self.sensor_alive_ms, n, NONE_TS)
        self.h_off = _grow(self.h_off, n, 0)
        self.h_cap = _grow(self.h_cap, n, 0)
        self.h_lo = _grow(self.h_lo, n, 0)
        self.h_hi = _grow(self.h_hi, n, 0)
        return sid

    # --- windowed history -------------------------------------------------------------------------

    def hist_append(self, u: np.ndarray, cnt: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
        """Append readings newer than each sensor's history: `u` distinct sensors (ascending), `cnt`
        readings each, `ts` / `val` grouped by sensor in that order, ts ascending inside.

        Amortized O(1) per reading: a region without room for its new readings is compacted in place
        when the room left afterwards is at least its live part, otherwise moved to the end of the flat
        arrays with room for twice its live part plus the new readings (+ 8). Moved regions leave dead
        slots; when they exceed half of the arrays everything is repacked.
        """
        lo, hi, off, cap = self.h_lo[u], self.h_hi[u], self.h_off[u], self.h_cap[u]
        live = hi - lo
        need = live + cnt
        full = np.flatnonzero(hi + cnt > off + cap)
        if len(full):
            # in place when the room left afterwards is at least the live part moved (so copies stay
            # below one per appended reading); a steady window compacts in place, with no dead slots
            compact = need[full] + live[full] <= cap[full]
            mv = full[~compact]
            new_cap = 2 * need[mv] + 8
            new_off = self.h_used + np.cumsum(new_cap) - new_cap
            self.h_dead += int(cap[mv].sum())
            self.h_used += int(new_cap.sum())
            self._h_room(self.h_used)
            cap[mv] = new_cap
            off[mv] = new_off
            src = expand_ranges(lo[full], live[full])
            dst = expand_ranges(off[full], live[full])
            self.h_ts[dst] = self.h_ts[src]  # fancy indexing copies the source first: overlaps are fine
            self.h_val[dst] = self.h_val[src]
            lo[full] = off[full]
            hi[full] = off[full] + live[full]
            self.h_off[u], self.h_cap[u] = off, cap
        dst = expand_ranges(hi, cnt)
        self.h_ts[dst] = ts
        self.h_val[dst] = val
        self.h_lo[u], self.h_hi[u] = lo, hi + cnt
        if self.h_dead > H_REPACK_MIN and 2 * self.h_dead > self.h_used:
            self._h_repack()

    def _h_room(self, n: int) -> None:
        if n >= 2**31 - 1:
            msg = f"windowed history of {n} readings: beyond int32 positions"
            raise OverflowError(msg)
        if len(self.h_ts) < n:
            size = max(n, 2 * len(self.h_ts), 1024)
            for name in ("h_ts", "h_val"):
                old = getattr(self, name)
                new = np.zeros(size, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)

    def _h_repack(self) -> None:
        """Regions packed again in sensor order (same capacities): the dead slots are dropped."""
        n = self.n_sensors
        s = np.flatnonzero(self.h_cap[:n] > 0)
        cap = self.h_cap[s]
        off = np.cumsum(cap) - cap
        live = self.h_hi[s] - self.h_lo[s]
        src = expand_ranges(self.h_lo[s], live)
        dst = expand_ranges(off, live)
        used = int(cap.sum())
        ts, val = np.zeros(max(used, 1024), _I64), np.zeros(max(used, 1024))
        ts[dst], val[dst] = self.h_ts[src], self.h_val[src]
        self.h_ts, self.h_val = ts, val
        self.h_off[s], self.h_lo[s], self.h_hi[s] = off, off, off + live
        self.h_used, self.h_dead = used, 0

    def hist_trim(self, u: np.ndarray, maxwin: np.ndarray) -> None:
        """Keep of each sensor in `u` the readings with ts >= its last ts - `maxwin`, and the latest one
        before them (a rate's reference reading, at or before t - window)."""
        lo, hi = self.h_lo[u], self.h_hi[u]
        cutoff = self.h_ts[hi - 1] - maxwin
        first = bisect(self.h_ts, lo, hi, cutoff, right=False)
        self.h_lo[u] = np.maximum(lo, first - 1)

    def hist_export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The live history as (sid, ts, value) sorted by (sid, ts): the snapshot format."""
        n = self.n_sensors
        s = np.flatnonzero(self.h_hi[:n] > self.h_lo[:n])
        live = self.h_hi[s] - self.h_lo[s]
        src = expand_ranges(self.h_lo[s], live)
        return np.repeat(s.astype(_I64), live), self.h_ts[src], self.h_val[src]

    def hist_import(self, sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> None:
        """Load a history sorted by (sid, ts) (a snapshot's) into sensors without history yet."""
        if not len(sid):
            return
        starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
        cnt = np.diff(np.append(starts, len(sid)))
        self.hist_append(sid[starts].astype(_I64), cnt, ts.astype(_I64), val.astype(np.float64))

    def ensure_stale(self, n: int) -> None:
        self.stale_active = _grow(self.stale_active, n, False)

    # --- snapshot -------------------------------------------------------------------------------

    def to_bytes(self, meta: dict[str, Any]) -> bytes:
        """Serialize to an npz archive; `meta` carries the engine's sensor and instance keys (JSON-able)."""
        return self.pack(*self.parts(meta))

    def parts(self, meta: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The consistent copy of a snapshot, for `pack` to serialize later (on another thread, while
        this state moves on): fresh arrays and a JSON-able document that share nothing mutable with the
        state. `meta` (the engine's keys) must not be mutated afterwards either."""
        n = self.n_sensors
        hist = self.hist_export()  # fancy indexing: fresh arrays
        doc = {
            "clock_ms": int(self.clock_ms),
            "il_pending": {str(k): list(v) for k, v in self.il_pending.items()},  # tuples inside: immutable
            **meta,
        }
        arrays = {
            "sensor_last_ts_ms": self.sensor_last_ts_ms[:n].copy(),
            "sensor_last_good": self.sensor_last_good[:n].copy(),
            "sensor_first_good_ts_ms": self.sensor_first_good_ts_ms[:n].copy(),
            "sensor_alive_ms": self.sensor_alive_ms[:n].copy(),
            "site_newest_ms": self.site_newest_ms.copy(),
            "site_alive_ms": self.site_alive_ms.copy(),
            "c_start_ms": self.c_start_ms.copy(),
            "d_start_ms": self.d_start_ms.copy(),
            "active": self.active.copy(),
            "stale_active": self.stale_active[: meta.get("n_stale", 0)].copy(),
            "site_stale_active": self.site_stale_active.copy(),
            "site_stale_gated": self.site_stale_gated.copy(),
            "il_trig_last": self.il_trig_last.copy(),
            "il_active": self.il_active.copy(),
            "hist_sid": hist[0],
            "hist_ts_ms": hist[1],
            "hist_value": hist[2],
        }
        return arrays, doc

    @staticmethod
    def pack(arrays: dict[str, np.ndarray], doc: dict[str, Any]) -> bytes:
        """The snapshot bytes of `parts` (an npz archive: the arrays, then the JSON document as "doc").
        `KeyTable` values of the document are spelled out here, as lists of name lists."""
        text = np.frombuffer(json.dumps(doc, default=_spell_out).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays, doc=text)  # type: ignore[arg-type]
        return buf.getvalue()

    @staticmethod
    def load(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and the JSON document of a snapshot, for the engine to re-attach by key."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k].copy() for k in z.files}
        doc = json.loads(arrays.pop("doc").tobytes().decode())
        return arrays, doc


class KeyTable:
    """Keys of a snapshot document kept as codes until `EngineState.pack` spells them out: row i is
    `[names[0][codes[0][i]], names[1][codes[1][i]], ...]`. The code arrays and name lists are copies (or
    append-only lists' slices) the engine does not touch again."""

    __slots__ = ("codes", "names")

    def __init__(self, names: tuple[list[str], ...], codes: tuple[np.ndarray, ...]) -> None:
        self.names = names
        self.codes = codes

    def rows(self) -> list[list[str]]:
        cols = [[names[c] for c in codes.tolist()] for names, codes in zip(self.names, self.codes, strict=True)]
        return [list(r) for r in zip(*cols, strict=True)] if cols else []

    def __len__(self) -> int:
        return len(self.codes[0]) if self.codes else 0


def _spell_out(obj: Any) -> Any:
    if isinstance(obj, KeyTable):
        return obj.rows()
    msg = f"not JSON-able in a snapshot document: {type(obj).__name__}"
    raise TypeError(msg)


def bisect(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, x: np.ndarray, right: bool) -> np.ndarray:
    """Per query, the first index in [lo, hi) of the ascending run `a[lo:hi]` with a > x (`right`) or
    a >= x (hi if none): a branchless binary search for all queries at once (log2 of the longest
    range rounds of a few array operations each)."""
    base = lo.astype(_I64)
    n = hi.astype(_I64) - base
    cmp = np.less_equal if right else np.less
    while True:
        half = n >> 1
        if not half.any():
            break
        go = cmp(a.take(base + half, mode="clip"), x)  # half = 0 (a range of 0 or 1) moves nothing
        base += half * go
        n -= half
    # n is 0 or 1 now: one last comparison where a candidate is left
    return base + ((n > 0) & cmp(a.take(base, mode="clip"), x))
