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

import polars as pl

from earlywarn.model import RawMessage, ReadingBatch

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


class Sequencer:
    """Per-sensor high-water marks of stored event time.

    `split()` is pure; `advance()` moves the marks once the batch is committed, so a failed commit can be
    retried with the same split.
    """

    def __init__(self, last_ts_ms: dict[tuple[str, str], int] | None = None) -> None:
        self._last: dict[tuple[str, str], int] = dict(last_ts_ms or {})

    def last_ts_ms(self, site: str, tag: str) -> int | None:
        return self._last.get((site, tag))

    def __len__(self) -> int:
        return len(self._last)

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
        last = self._last
        last_ts = None
        if last:
            # one dict look-up per sensor in the batch, not per reading
            marks = [last.get(k) for k in zip(sensors.get_column("site").to_list(), sensors.get_column("tag").to_list())]
            last_ts = pl.Series("last_ts", marks, dtype=pl.Int64)
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
        """Record the committed batch's high-water marks."""
        last = self._last
        for site, tag, ts in split.maxima.iter_rows():
            key = (site, tag)
            prev = last.get(key)
            if prev is None or ts > prev:
                last[key] = ts
