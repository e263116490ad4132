"""Micro-batching: cut the message stream into batches, and sequence readings per sensor.

Two jobs, both on the hot path:

- `collect()` drains the ingest queue into a list of messages, flushing on size, on age, or as soon as the
  stream goes idle for a few milliseconds. The idle flush matters because acknowledgements wait for the
  commit: a broker with a small in-flight window (mosquitto's default is 20) stops sending until we ack,
  so waiting for a full batch would stall the stream.
- `Sequencer` splits a decoded batch into readings that are certainly new (`fresh`: later than anything
  stored for their sensor) and readings that may repeat a stored one (`maybe_dup`: QoS 1 redeliveries,
  late data). Only `maybe_dup` needs a look-up in the store, and only `fresh` readings are evaluated by the
  rules, so a redelivered reading is stored once and evaluated once.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from earlywarn.model import RawMessage, ReadingBatch, name_hashes

_KEY = ["site", "tag", "ts_ms"]


def collect(
    source: queue.SimpleQueue[RawMessage],
    *,
    max_messages: int,
    max_age_ms: int,
    idle_ms: int,
    first_wait_ms: int = 100,
    max_bytes: int | None = None,
) -> list[RawMessage]:
    """Take up to `max_messages` (and about `max_bytes` of payload) from `source`.

    Waits up to `first_wait_ms` for the first message; then returns when the batch is full, when it is
    `max_age_ms` old, or when no message arrived for `idle_ms`. Returns [] if nothing came. The byte bound
    is what keeps a batch near its reading budget when one message carries hundreds of readings.
    """
    out: list[RawMessage] = []
    try:
        first = source.get(timeout=first_wait_ms / 1000)
    except queue.Empty:
        return out
    out.append(first)
    size = len(first.payload)
    limit = max_bytes if max_bytes is not None else 1 << 62
    started = time.monotonic()
    age_s = max_age_ms / 1000
    idle_s = max(idle_ms, 0) / 1000
    get_nowait = source.get_nowait
    while len(out) < max_messages and size < limit:
        # drain what is already there without any timeout machinery: the common case under load
        try:
            m = get_nowait()
            out.append(m)
            size += len(m.payload)
            continue
        except queue.Empty:
            pass
        remaining_s = age_s - (time.monotonic() - started)
        if remaining_s <= 0 or idle_s <= 0:
            break
        try:
            m = source.get(timeout=min(idle_s, remaining_s))
        except queue.Empty:
            break  # idle: flush now so the acks go out
        out.append(m)
        size += len(m.payload)
    return out


@dataclass(frozen=True, slots=True)
class Split:
    """A decoded batch split for the store and the rules."""

    fresh: ReadingBatch  # ts > last stored ts of the sensor: new for sure; the rules evaluate these
    maybe_dup: ReadingBatch  # ts <= last stored ts: a redelivery (dropped by the store) or late data (stored)
    in_batch_dups: int  # copies of the same (site, tag, ts) inside this batch, dropped here
    maxima: pl.DataFrame  # (site, tag, max_ts) of the fresh readings: the sequencer's new high-water marks


def _per_sensor(frame: pl.DataFrame) -> pl.DataFrame:
    ts = pl.col("ts_ms")
    return frame.group_by(["site", "tag"]).agg(
        ts.min().alias("min_ts"), ts.max().alias("max_ts"), pl.len().alias("n"), ts.n_unique().alias("distinct")
    )


_U64 = np.uint64
_MIX = _U64(0x9E3779B97F4A7C15)  # odd: (site hash * _MIX) ^ tag hash spreads both over the 64 bits


def _hashes(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(site hash, tag hash, search key) of every row. Polars' fixed-seed hashes are stable within a
    process, and the marks are rebuilt per process from the store, so nothing hashed outlives them."""
    hs, ht = name_hashes(frame)
    with np.errstate(over="ignore"):
        key = (hs * _MIX) ^ ht
    return hs, ht, key


class _Marks:
    """(site, tag) -> high-water mark, for whole columns of sensors at once.

    A dict keyed by (site, tag) costs ~0.7-1 us per sensor per batch once it holds 100 k sensors (a fresh
    string hash and a few cache misses per look-up), which is most of the sequencing cost when every
    sensor reports about once per batch. Here a sensor is its two 64-bit name hashes; a sorted array of a
    64-bit key mixed from both answers a whole batch with one `searchsorted`, and a look-up counts only
    when both full hashes match. Two sensors whose keys collide (odds ~n^2 / 2^65) cannot both live here:
    `add` then returns False and the Sequencer goes back to the exact dict for good.
    """

    def __init__(self) -> None:
        self.n = 0
        self._key = np.zeros(0, _U64)  # sorted search keys
        self._slot = np.zeros(0, np.int64)  # slot of each sorted key
        self._hs = np.zeros(0, _U64)  # by slot
        self._ht = np.zeros(0, _U64)
        self.mark = np.zeros(0, np.int64)
        self.names: list[pl.DataFrame] = []  # (site, tag) frames in slot order: for the exact fallback

    def find(self, hs: np.ndarray, ht: np.ndarray, key: np.ndarray) -> np.ndarray:
        """Slot of each sensor, -1 where unknown."""
        if not self.n or not len(key):
            return np.full(len(key), -1, np.int64)
        # the queries sorted first: one sweep through the table instead of a cache miss per probe (3x)
        o = np.argsort(key)
        i = np.empty(len(key), np.int64)
        i[o] = np.searchsorted(self._key, key[o])
        np.minimum(i, self.n - 1, out=i)
        slot = self._slot[i]
        ok = (self._key[i] == key) & (self._hs[slot] == hs) & (self._ht[slot] == ht)
        return np.where(ok, slot, -1)

    def add(self, names: pl.DataFrame, hs: np.ndarray, ht: np.ndarray, key: np.ndarray, mark: np.ndarray) -> bool:
        """Append new sensors (distinct, not present); False if a search key collides (nothing added)."""
        k = len(key)
        if not k:
            return True
        order = np.argsort(key, kind="stable")
        sk = key[order]
        pos = np.searchsorted(self._key, sk)
        at = np.minimum(pos, max(self.n - 1, 0))
        if (k > 1 and bool(np.any(sk[1:] == sk[:-1]))) or (self.n and bool(np.any(self._key[at] == sk))):
            return False
        slots = np.arange(self.n, self.n + k, dtype=np.int64)
        self._key = np.insert(self._key, pos, sk)
        self._slot = np.insert(self._slot, pos, slots[order])
        self._hs = np.concatenate([self._hs, hs])
        self._ht = np.concatenate([self._ht, ht])
        self.mark = np.concatenate([self.mark, mark])
        self.names.append(names)
        self.n += k
        return True

    def as_dict(self) -> dict[tuple[str, str], int]:
        if not self.n:
            return {}
        names = pl.concat(self.names)
        return dict(zip(names.iter_rows(), self.mark.tolist(), strict=True))


class Sequencer:
    """Per-sensor high-water marks of stored event time.

    `split()` is pure; `advance()` moves the marks once the batch is committed, so a failed commit can be
    retried with the same split. The marks live in `_Marks` (whole batches at a time); should two sensors'
    search keys ever collide they move to a plain dict, exact and slower, for the rest of the process.
    """

    def __init__(self, last_ts_ms: dict[tuple[str, str], int] | None = None) -> None:
        self._marks: _Marks | None = _Marks()
        self._exact: dict[tuple[str, str], int] = {}
        if last_ts_ms:
            names = pl.DataFrame(
                {"site": [k[0] for k in last_ts_ms], "tag": [k[1] for k in last_ts_ms]},
                schema={"site": pl.String, "tag": pl.String},
            )
            self._add(names, np.fromiter(last_ts_ms.values(), np.int64, len(last_ts_ms)))

    def _add(self, names: pl.DataFrame, mark: np.ndarray) -> None:
        marks = self._marks
        if marks is None:
            self._exact.update(zip(names.iter_rows(), mark.tolist(), strict=True))
        elif not marks.add(names, *_hashes(names), mark):
            self._exact = marks.as_dict()
            self._exact.update(zip(names.iter_rows(), mark.tolist(), strict=True))
            self._marks = None

    def last_ts_ms(self, site: str, tag: str) -> int | None:
        marks = self._marks
        if marks is None:
            return self._exact.get((site, tag))
        one = pl.DataFrame({"site": [site], "tag": [tag]}, schema={"site": pl.String, "tag": pl.String})
        slot = int(marks.find(*_hashes(one))[0])
        return None if slot < 0 else int(marks.mark[slot])

    def __len__(self) -> int:
        return len(self._exact) if self._marks is None else self._marks.n

    def _last_ts(self, sensors: pl.DataFrame) -> pl.Series:
        """The mark of every sensor row (null: none yet)."""
        marks = self._marks
        if marks is None:
            last = self._exact
            vals = [last.get(k) for k in zip(sensors.get_column("site").to_list(),
                                             sensors.get_column("tag").to_list(), strict=True)]
            return pl.Series("last_ts", vals, dtype=pl.Int64)
        slot = marks.find(*_hashes(sensors))
        known = slot >= 0
        vals = marks.mark[np.maximum(slot, 0)]
        return pl.Series("last_ts", vals, dtype=pl.Int64).scatter(np.flatnonzero(~known), None)

    def split(self, batch: ReadingBatch) -> Split:
        frame = batch.frame
        n = frame.height
        if n == 0:
            empty = ReadingBatch.empty()
            return Split(empty, empty, 0, pl.DataFrame(schema={"site": pl.String, "tag": pl.String, "max_ts": pl.Int64}))
        # One group-by answers the common case whole: per sensor the oldest ts (fresh or not), the newest
        # (the new high-water mark) and whether any ts repeats (count != distinct count: an in-batch copy).
        # Only a batch holding copies or readings at/before a mark pays for a second pass.
        sensors = _per_sensor(frame)
        if (sensors.get_column("n") != sensors.get_column("distinct")).any():
            deduped = frame.unique(subset=_KEY, keep="first", maintain_order=True)
            sensors = _per_sensor(deduped)
        else:
            deduped = frame
        dups = n - deduped.height
        last_ts = None
        if len(self):
            last_ts = self._last_ts(sensors)  # one look-up per sensor in the batch, not per reading
            all_fresh = bool((sensors.get_column("min_ts") > last_ts).fill_null(True).all())
        else:
            all_fresh = True
        if all_fresh:
            # common case: every reading is later than what is stored
            return Split(ReadingBatch(deduped), ReadingBatch(deduped.clear()), dups,
                         sensors.select("site", "tag", "max_ts"))
        assert last_ts is not None  # not all fresh: some sensor has a mark
        joined = deduped.join(sensors.select("site", "tag").with_columns(last_ts), on=["site", "tag"], how="left",
                              maintain_order="left")
        is_fresh = joined.get_column("last_ts").is_null() | (joined.get_column("ts_ms") > joined.get_column("last_ts"))
        fresh_frame = deduped.filter(is_fresh)
        dup_frame = deduped.filter(~is_fresh)
        maxima = fresh_frame.group_by(["site", "tag"]).agg(pl.col("ts_ms").max().alias("max_ts"))
        return Split(ReadingBatch(fresh_frame), ReadingBatch(dup_frame), dups, maxima)

    def advance(self, split: Split) -> None:
        """Record the committed batch's high-water marks (`maxima` holds each sensor once)."""
        maxima = split.maxima
        if not maxima.height:
            return
        marks = self._marks
        if marks is None:
            last = self._exact
            for site, tag, ts in maxima.iter_rows():
                key = (site, tag)
                prev = last.get(key)
                if prev is None or ts > prev:
                    last[key] = ts
            return
        hs, ht, key = _hashes(maxima)
        slot = marks.find(hs, ht, key)
        ts = maxima.get_column("max_ts").to_numpy()
        known = slot >= 0
        ks = slot[known]
        marks.mark[ks] = np.maximum(marks.mark[ks], ts[known])
        if not bool(known.all()):
            new = ~known
            names = maxima.select("site", "tag").filter(pl.Series(new))
            if not marks.add(names, hs[new], ht[new], key[new], ts[new].astype(np.int64)):
                self._exact = marks.as_dict()
                self._exact.update(zip(names.iter_rows(), ts[new].tolist(), strict=True))
                self._marks = None
