"""From truth to published readings and MQTT payloads in the public format (product.md §3).

`render` samples each analog tag at its own period (with a fixed per-tag phase and PLC-scan millisecond
offset), adds Gaussian noise (except where the transmitter is frozen), clips to the instrument range and
quantises; discrete tags are published on change. `encode` groups readings into messages:

- single: `{"tag": "...", "ts": 1764316800250, "value": 0.25}` (`"q"` only when not good);
- batch:  `{"ts": T, "readings": [{"tag": ..., "value": ...}, {"tag": ..., "ts": ..., "value": ...}]}` with one
  message per gateway upload window; a reading omits `ts` when it equals the batch's.

Booleans are published as JSON true/false, enums and counts as integers. Formatting is hand-rolled and fixed
(no dict ordering or float-repr surprises), so the same seed gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from simulators.signals import QUALITY_GOOD, QUALITY_LABELS, Trace, rng_for


class Message(NamedTuple):
    """One MQTT message: when the gateway publishes it (epoch ms), topic and payload bytes."""

    publish_ms: int
    topic: str
    payload: bytes


@dataclass
class Readings:
    """Columnar readings of one site, sorted by (ts_ms, tag order). `tag_idx` indexes `tags`."""

    site: str
    tags: list[str]
    kinds: list[str]
    decimals: list[int]
    tag_idx: np.ndarray   # int32
    ts_ms: np.ndarray     # int64, epoch ms
    value: np.ndarray     # float64 (booleans 0/1)
    quality: np.ndarray   # int8 codes

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def of(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        """`(ts_ms, value)` of one tag, in time order."""
        m = self.tag_idx == self.tags.index(tag)
        return self.ts_ms[m], self.value[m]

    def rows(self) -> list[tuple[str, str, int, float, str]]:
        """`(site, tag, ts_ms, value, quality)` tuples for file writers."""
        tags = self.tags
        return [(self.site, tags[i], int(t), float(v), QUALITY_LABELS[q])
                for i, t, v, q in zip(self.tag_idx.tolist(), self.ts_ms.tolist(), self.value.tolist(),
                                      self.quality.tolist(), strict=True)]


def sample_analog(trace: Trace, name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the gateway publishes for one analog tag: `(ts_ms, value, quality)`, silent samples left out.

    Also used by scenarios: a plant's interlock acts on the *measured* value (noise included), so the
    effect of "ESD closes 4 s after the level first reads above 90" is placed from these samples.
    """
    spec = trace.specs[name]
    rng = rng_for(seed, trace.site, "sample", name)
    period = max(int(spec.period_s), 1)
    phase = int(rng.integers(0, period))
    scan_ms = int(rng.integers(0, 10)) * 100  # PLC scan 0.1 s: a fixed sub-second offset per tag
    # Noise is drawn for the whole grid (not only the sampled points), so its values do not depend on
    # which samples a scenario silences.
    noise_all = rng.normal(0.0, spec.noise, size=trace.n) if spec.noise > 0 else None
    i = np.arange(phase, trace.n, period)
    truth = trace.analog[name]
    v = truth[i] + (noise_all[i] if noise_all is not None else 0.0)
    if name in trace.frozen:
        v = np.where(trace.frozen[name][i], truth[i], v)
    lo, hi = spec.range
    v = np.round(np.clip(v, lo, hi), spec.decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    q = trace.quality[name][i] if name in trace.quality else np.zeros(len(i), dtype=np.int8)
    ts = trace.start_ms + i.astype(np.int64) * 1000 + scan_ms
    if name in trace.silent:
        keep = ~trace.silent[name][i]
        return ts[keep], v[keep], q[keep].astype(np.int8)
    return ts, v, q.astype(np.int8)


def state_samples(trace: Trace, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What the gateway publishes for one discrete tag: `(ts_ms, value)`.

    Every change immediately, plus the current state every `trace.state_refresh_s` (the gateway's cyclic
    upload of all points, domain §1: 1–10 s for safety tags): without it a state that does not change
    would look stale, and a duration rule ("agitator off while feeding for 30 s") would have no reading
    to raise on.
    """
    series = trace.states[name]
    end_ms = trace.n * 1000
    edges = series.edges(end_ms)
    e_t = np.array([e[0] for e in edges], dtype=np.int64)
    e_v = np.array([e[1] for e in edges], dtype=np.float64)
    if trace.state_refresh_s > 0:
        period_ms = int(trace.state_refresh_s * 1000)
        phase_ms = int(rng_for(seed, trace.site, "sample", name).integers(0, period_ms // 100)) * 100
        r_t = np.arange(phase_ms, end_ms, period_ms, dtype=np.int64)
        r_t = np.union1d(r_t, np.array([r for r in trace.refresh_ms if r < end_ms], dtype=np.int64))
        r_t = r_t[~np.isin(r_t, e_t)]
        # value at each refresh instant: the last edge at or before it (edge list starts at 0)
        r_v = e_v[np.searchsorted(e_t, r_t, side="right") - 1]
        t_all = np.concatenate([e_t, r_t])
        v_all = np.concatenate([e_v, r_v])
        o = np.argsort(t_all, kind="stable")
        e_t, e_v = t_all[o], v_all[o]
    return trace.start_ms + e_t, e_v


def render(trace: Trace, seed: int) -> Readings:
    """Sample, add noise, quantise: the readings a gateway would upload for this trace."""
    tags = list(trace.specs)
    idx_parts, ts_parts, val_parts, q_parts = [], [], [], []
    for k, name in enumerate(tags):
        spec = trace.specs[name]
        if spec.kind == "analog":
            if name not in trace.analog:
                continue
            ts, v, q = sample_analog(trace, name, seed)
        else:
            series = trace.states.get(name)
            if series is None:
                continue
            ts, v = state_samples(trace, name, seed)
            q = np.zeros(len(ts), dtype=np.int8)
            if name in trace.silent:  # a state tag is silent where the grid says so (gateway data lost)
                sec = np.clip((ts - trace.start_ms) // 1000, 0, trace.n - 1)
                keep = ~trace.silent[name][sec]
                ts, v, q = ts[keep], v[keep], q[keep]
        idx_parts.append(np.full(len(ts), k, dtype=np.int32))
        ts_parts.append(ts)
        val_parts.append(v)
        q_parts.append(q)
    tag_idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int32)
    ts_ms = np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64)
    value = np.concatenate(val_parts) if val_parts else np.zeros(0)
    quality = np.concatenate(q_parts) if q_parts else np.zeros(0, np.int8)
    order = np.lexsort((tag_idx, ts_ms))
    return Readings(trace.site, tags, [trace.specs[t].kind for t in tags], [trace.specs[t].decimals for t in tags],
                    tag_idx[order], ts_ms[order], value[order], quality[order])


def topic_for(site: str) -> str:
    return f"ew/{site}/telemetry"


def _literal(kind: str, decimals: int, v: float) -> str:
    """A JSON value literal: true/false for booleans, integers for enums/counts/0-decimal analogs."""
    if kind == "bool":
        return "true" if v else "false"
    if kind in ("enum", "count") or decimals == 0:
        return str(int(v))
    return repr(float(v))


def value_literals(r: Readings) -> list[str]:
    kinds, decs = r.kinds, r.decimals
    return [_literal(kinds[i], decs[i], v) for i, v in zip(r.tag_idx.tolist(), r.value.tolist(), strict=True)]


def encode(r: Readings, *, batch_window_ms: int | None = 1000) -> list[Message]:
    """Messages of one site in upload order.

    `batch_window_ms=None`: one message per reading, published at its own timestamp. Otherwise one batch per
    window of `batch_window_ms`, published at the window's end (the gateway collects, then uploads).
    """
    topic = topic_for(r.site)
    lits = value_literals(r)
    tags = r.tags
    tag_idx, ts_list, q_list = r.tag_idx.tolist(), r.ts_ms.tolist(), r.quality.tolist()
    out: list[Message] = []
    if batch_window_ms is None:
        for i, t, lit, q in zip(tag_idx, ts_list, lits, q_list, strict=True):
            qs = "" if q == QUALITY_GOOD else f',"q":"{QUALITY_LABELS[q]}"'
            out.append(Message(t, topic, f'{{"tag":"{tags[i]}","ts":{t},"value":{lit}{qs}}}'.encode()))
        return out
    w = int(batch_window_ms)
    n = len(ts_list)
    j = 0
    while j < n:
        window = ts_list[j] // w
        batch_ts = ts_list[j]
        parts = []
        while j < n and ts_list[j] // w == window:
            t, q = ts_list[j], q_list[j]
            ts_part = "" if t == batch_ts else f',"ts":{t}'
            qs = "" if q == QUALITY_GOOD else f',"q":"{QUALITY_LABELS[q]}"'
            parts.append(f'{{"tag":"{tags[tag_idx[j]]}"{ts_part},"value":{lits[j]}{qs}}}')
            j += 1
        payload = f'{{"ts":{batch_ts},"readings":[{",".join(parts)}]}}'.encode()
        out.append(Message((window + 1) * w, topic, payload))
    return out
