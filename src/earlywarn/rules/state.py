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

from earlywarn.rules.kernels import NONE_TS

_I64 = np.int64


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
    # history tail of good readings for windowed kinds, sorted by (sid, ts)
    hist_sid: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    hist_ts_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, _I64))
    hist_value: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add_sensors(self, k: int) -> int:
        """Room for k new sensors; returns the first new id."""
        sid = self.n_sensors
        n = self.n_sensors = sid + k
        self.sensor_last_ts_ms = _grow(self.sensor_last_ts_ms, n, NONE_TS)
        self.sensor_last_good = _grow(self.sensor_last_good, n, np.nan)
        self.sensor_first_good_ts_ms = _grow(self.sensor_first_good_ts_ms, n, NONE_TS)
        self.sensor_alive_ms = _grow(self.sensor_alive_ms, n, NONE_TS)
        return sid

    def ensure_stale(self, n: int) -> None:
        self.stale_active = _grow(self.stale_active, n, False)

    # --- snapshot -------------------------------------------------------------------------------

    def to_bytes(self, meta: dict[str, Any]) -> bytes:
        """Serialize to an npz archive; `meta` carries the engine's sensor and instance keys (JSON-able)."""
        n = self.n_sensors
        doc = {
            "clock_ms": self.clock_ms,
            "il_pending": {str(k): v for k, v in self.il_pending.items()},
            **meta,
        }
        arrays = {
            "sensor_last_ts_ms": self.sensor_last_ts_ms[:n],
            "sensor_last_good": self.sensor_last_good[:n],
            "sensor_first_good_ts_ms": self.sensor_first_good_ts_ms[:n],
            "sensor_alive_ms": self.sensor_alive_ms[:n],
            "site_newest_ms": self.site_newest_ms,
            "site_alive_ms": self.site_alive_ms,
            "c_start_ms": self.c_start_ms,
            "d_start_ms": self.d_start_ms,
            "active": self.active,
            "stale_active": self.stale_active[: meta.get("n_stale", 0)],
            "site_stale_active": self.site_stale_active,
            "site_stale_gated": self.site_stale_gated,
            "il_trig_last": self.il_trig_last,
            "il_active": self.il_active,
            "hist_sid": self.hist_sid,
            "hist_ts_ms": self.hist_ts_ms,
            "hist_value": self.hist_value,
            "doc": np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @staticmethod
    def load(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and the JSON document of a snapshot, for the engine to re-attach by key."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k].copy() for k in z.files}
        doc = json.loads(arrays.pop("doc").tobytes().decode())
        return arrays, doc
