"""Building blocks of a simulated plant: tag specs, a 1 s signal trace, discrete state edges, seeding.

A plant run is first synthesised as noise-free *truth* on a one-second grid (`Trace.analog`) plus discrete
state edges with millisecond resolution (`Trace.states`); scenarios edit that truth; only then does
`simulators.payload` sample each tag at its own period, add Gaussian noise and quantise. Keeping noise out of
the truth lets a scenario say "cw_pressure drops 0.25 -> 0.05 in 3 s" exactly, and keeps every tag's noise
independent of every other tag's (adding a scenario never reshuffles another tag's noise).
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TagKind = Literal["analog", "bool", "enum", "count"]

#: Quality codes as they appear in the payload's optional "q" field.
QUALITY_GOOD = 0
QUALITY_UNCERTAIN = 1
QUALITY_BAD = 2
QUALITY_LABELS = ("good", "uncertain", "bad")

#: China local time (UTC+8): shifts change at 08/16/24 h local and the diurnal ambient peaks mid-afternoon.
LOCAL_OFFSET_MS = 8 * 3600 * 1000

GRID_S = 1.0  # the truth grid; every analog sample period is a whole number of grid steps


def rng_for(seed: int, *parts: str) -> np.random.Generator:
    """An independent, reproducible generator for one purpose (`seed` + e.g. site id + tag name).

    crc32 rather than `hash()`: Python's string hash is salted per process, which would break
    "same seed -> same bytes" across runs.
    """
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF]
    words += [zlib.crc32(p.encode("utf-8")) for p in parts]
    return np.random.default_rng(words)


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One published tag.

    `period_s` is the upload period of an analog tag (discrete tags are published on change, period 0).
    `noise` is the Gaussian sigma in engineering units, `decimals` the quantisation of the published value,
    `range` the instrument range (published values are clipped to it, like a transmitter saturating).
    """

    name: str
    unit: str
    kind: TagKind = "analog"
    period_s: int = 0
    noise: float = 0.0
    decimals: int = 2
    range: tuple[float, float] = (0.0, 100.0)
    description: str = ""


class StateSeries:
    """A discrete tag as a step function: sorted edges `(offset_ms, value)` from the run start.

    The value before the first edge is `initial`. Edits are local in time, so a scenario can force a state
    for a window and the plant's own schedule resumes afterwards.
    """

    __slots__ = ("initial", "times_ms", "values")

    def __init__(self, initial: float) -> None:
        self.initial = float(initial)
        self.times_ms: list[int] = []
        self.values: list[float] = []

    def value_at(self, offset_ms: int) -> float:
        """The state at `offset_ms` (an edge at exactly `offset_ms` already counts)."""
        i = bisect.bisect_right(self.times_ms, offset_ms)
        return self.values[i - 1] if i else self.initial

    def set(self, offset_ms: int, value: float) -> None:
        """Add an edge (replacing one at the same instant)."""
        offset_ms = int(offset_ms)
        i = bisect.bisect_left(self.times_ms, offset_ms)
        if i < len(self.times_ms) and self.times_ms[i] == offset_ms:
            self.values[i] = float(value)
        else:
            self.times_ms.insert(i, offset_ms)
            self.values.insert(i, float(value))

    def hold(self, start_ms: int, end_ms: int | None, value: float) -> None:
        """Force `value` over `[start_ms, end_ms)`; afterwards the schedule's own value resumes.

        `end_ms=None` holds to the end of the run.
        """
        start_ms = int(start_ms)
        resume = None if end_ms is None else self.value_at(int(end_ms))
        lo = bisect.bisect_left(self.times_ms, start_ms)
        hi = len(self.times_ms) if end_ms is None else bisect.bisect_left(self.times_ms, int(end_ms))
        del self.times_ms[lo:hi]
        del self.values[lo:hi]
        self.set(start_ms, value)
        if end_ms is not None and resume is not None:
            self.set(int(end_ms), resume)

    def pulse(self, start_ms: int, width_ms: int, value: float) -> None:
        """A short excursion to `value`, then back to whatever held before (sparks, extinguisher bursts)."""
        self.hold(start_ms, start_ms + width_ms, value)

    def on_grid(self, n: int) -> np.ndarray:
        """The state sampled at each whole second `0 .. n-1` (for process models that depend on it)."""
        out = np.full(n, self.initial, dtype=np.float64)
        for t_ms, v in zip(self.times_ms, self.values, strict=True):
            i = -(-t_ms // 1000)  # first grid second at or after the edge
            if i < n:
                out[max(i, 0):] = v
        return out

    def edges(self, end_ms: int) -> list[tuple[int, float]]:
        """The published changes within `[0, end_ms)`: the initial value at 0, then every real change."""
        out = [(0, self.initial)]
        for t_ms, v in zip(self.times_ms, self.values, strict=True):
            if t_ms >= end_ms:
                break
            if t_ms <= 0:
                out[0] = (0, v)
            elif v != out[-1][1]:
                out.append((t_ms, v))
        return out


@dataclass
class Trace:
    """The noise-free truth of one site over one run, on a 1 s grid starting at `start_ms`."""

    site: str
    plant: str
    start_ms: int
    n: int
    specs: dict[str, TagSpec]
    analog: dict[str, np.ndarray] = field(default_factory=dict)
    states: dict[str, StateSeries] = field(default_factory=dict)
    #: per analog tag, a grid mask where the transmitter output is frozen (published exactly, without noise)
    frozen: dict[str, np.ndarray] = field(default_factory=dict)
    #: per analog tag, a grid array of quality codes (absent = all good)
    quality: dict[str, np.ndarray] = field(default_factory=dict)
    #: per analog tag, a grid mask where the tag is not published (sensor unplugged, card failure)
    silent: dict[str, np.ndarray] = field(default_factory=dict)
    #: discrete tags are re-published every this many seconds besides on change (0 = on change only)
    state_refresh_s: float = 10.0
    #: offsets (ms) at which the gateway re-publishes every state tag (integrity upload after a reconnect)
    refresh_ms: list[int] = field(default_factory=list)

    @property
    def duration_s(self) -> int:
        return self.n

    @property
    def t_s(self) -> np.ndarray:
        return np.arange(self.n, dtype=np.float64)

    def idx(self, offset_s: float) -> int:
        """Grid index of an offset in seconds, clipped into the run."""
        return int(min(max(round(offset_s), 0), self.n))

    def freeze(self, tag: str, start_s: float, end_s: float, value: float) -> None:
        """A stuck transmitter: the tag reads exactly `value` over `[start_s, end_s)`."""
        i0, i1 = self.idx(start_s), self.idx(end_s)
        self.analog[tag][i0:i1] = value
        mask = self.frozen.setdefault(tag, np.zeros(self.n, dtype=bool))
        mask[i0:i1] = True

    def silence_all(self, start_s: float, end_s: float) -> None:
        """The gateway loses `[start_s, end_s)` entirely (no backlog); it re-publishes states on reconnect."""
        i0, i1 = self.idx(start_s), self.idx(end_s)
        for tag in self.specs:
            mask = self.silent.setdefault(tag, np.zeros(self.n, dtype=bool))
            mask[i0:i1] = True
        if i1 < self.n:
            self.refresh_ms.append(i1 * 1000)

    def set_quality(self, tag: str, start_s: float, end_s: float, code: int) -> None:
        """Mark a window of a tag with a quality code (e.g. bad while the card reports a fault)."""
        q = self.quality.setdefault(tag, np.zeros(self.n, dtype=np.int8))
        q[self.idx(start_s):self.idx(end_s)] = code


def first_order(target: np.ndarray, tau_s: float, initial: float | None = None) -> np.ndarray:
    """A first-order lag (tank temperature behind ambient, pressure behind temperature) on the 1 s grid.

    A short Python loop: the grids are at most a few hundred thousand steps and this runs once per tag.
    """
    out = np.empty_like(target, dtype=np.float64)
    if len(target) == 0:
        return out
    a = 1.0 - np.exp(-GRID_S / tau_s) if tau_s > 0 else 1.0
    y = float(target[0] if initial is None else initial)
    tl = target.tolist()
    for i, x in enumerate(tl):
        y += a * (x - y)
        out[i] = y
    return out


def dead_time(x: np.ndarray, delay_s: float) -> np.ndarray:
    """`x` delayed by `delay_s` (the start is padded with the first value)."""
    k = round(delay_s / GRID_S)
    if k <= 0:
        return x.copy()
    return np.concatenate([np.full(min(k, len(x)), x[0]), x[: max(len(x) - k, 0)]])


def local_hour(start_ms: int, n: int) -> np.ndarray:
    """Local (UTC+8) hour of day, fractional, at each grid second."""
    t_ms = start_ms + LOCAL_OFFSET_MS + np.arange(n, dtype=np.int64) * 1000
    return (t_ms % 86_400_000) / 3_600_000.0


def ambient_c(start_ms: int, n: int, mean_c: float = 24.0, swing_c: float = 6.0) -> np.ndarray:
    """Diurnal ambient temperature: ±`swing_c` around `mean_c`, coolest about 03:00, warmest about 15:00 local."""
    h = local_hour(start_ms, n)
    return mean_c + swing_c * np.sin(2 * np.pi * (h - 9.0) / 24.0)


def ramp(n_steps: int, start: float, end: float) -> np.ndarray:
    """`n_steps` values going linearly from `start` (first) to `end` (last)."""
    return np.linspace(start, end, max(n_steps, 0)) if n_steps > 1 else np.full(max(n_steps, 0), end)
