"""The DuckDB store: one micro-batch, one transaction; history and restart queries.

One writer process owns the database file (DuckDB allows a single writing process). The engine calls
`Store.commit` once per micro-batch and acknowledges the batch's MQTT messages only after it returns:
everything of the batch (readings, rejects, signals, alarms, alarm events, notices, maintenance windows,
engine state, and a row in the `store_commits` log) is in one transaction, so after a crash (kill -9
included) a batch is either wholly stored or wholly absent, and the broker redelivers what was not
acknowledged. DuckDB fsyncs its write-ahead log at COMMIT and replays it on open.

On failure `commit` rolls back and raises StoreError: nothing of the batch is stored and the caller
retries the same batch. A dead connection (closed, or invalidated by DuckDB after a fatal I/O error) is
reopened before the error is raised; a COMMIT that raises is checked against `store_commits`, so a
batch that did become durable is reported as committed and never written twice.

Readings are appended columnar from the batch's polars frame (Arrow, zero copy), never row by row.
Redelivered readings (QoS 1) are dropped by an anti-join against the stored readings of the candidates'
time ranges (pruned by zone maps) on (site, tag, ts), so a reading is stored once however often it
arrives (product.md §3 "Duplicates"); the new ones among them are stored with `late = true`.

Readers: analysts open a *copy* (`snapshot_to`) or a stopped engine's file (`open_readonly`); a live
engine's file is locked by its writer process, so live queries go through the engine (HTTP API, which
uses `read_cursor`).

Example:
    >>> store = Store.open(path)                                       # doctest: +SKIP
    >>> result = store.commit(CommitBatch(fresh=batch, maybe_dup=ReadingBatch.empty()))  # doctest: +SKIP
    >>> store.last_ts_by_sensor()                                      # doctest: +SKIP
    {('SZ-AL-0001', 'cw_pressure_mpa'): 1764316800250}
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Self

import duckdb
import polars as pl
import pyarrow as pa

from earlywarn.clock import Clock, SystemClock
from earlywarn.config import DEFAULT_DEADLINES, Deadline
from earlywarn.errors import StoreError
from earlywarn.model import (
    QUALITY_LABELS,
    READING_SCHEMA,
    Alarm,
    AlarmEvent,
    AlarmState,
    Disposition,
    EventKind,
    MaintenanceWindow,
    NoticeRecord,
    ReadingBatch,
    Reject,
    Severity,
    Signal,
    Tier,
)

log = logging.getLogger(__name__)

__all__ = [
    "ALARM_FIELDS",
    "ROW_GROUP_SIZE",
    "CommitBatch",
    "CommitResult",
    "MaintenanceWindow",
    "NoticeRow",
    "Store",
]

_TS_MS = pa.timestamp("ms", tz="UTC")  # Arrow type DuckDB reads as TIMESTAMPTZ
_CATALOG = "ew"  # the writer's name for its attached database file

#: Rows per row group of the writer's database. DuckDB writes full row groups of a large append straight
#: to the database file, compressed, before COMMIT ("optimistic writes"), and logs only the rest in the
#: WAL. With DuckDB's default (122 880) a 50 000-reading batch never fills one, so every reading went
#: through the WAL and was compressed again by the next checkpoint; at 16 384 most of a batch skips both,
#: which halves the CPU per reading (benchmarks/bench_store.py) and removes the checkpoint stalls. It
#: also makes zone maps finer (ts and batch_seq pruning). Files stay ordinary DuckDB files.
ROW_GROUP_SIZE = 16_384

#: Row-group merges ("vacuum" tasks) DuckDB may run per table and per checkpoint (its default: 100). A commit
#: of more than a row group of readings is written as its own row groups, the last one partial (and, with
#: several DuckDB threads, a partial one per thread); every checkpoint then merged each run of partial row
#: groups that fits in fewer, decompressing and compressing them again: with 40 000-reading commits that
#: rewrote most readings once more, inside the background checkpoint, which blocks commits while it runs
#: (benchmarks/bench_store.py --live-only: 1.07-1.24 CPU us per reading, 1.18-1.29x a bare INSERT of the same
#: Arrow tables; capped at 2: 0.80-0.87 us, 0.87-0.98x; commit p95 159-174 -> 79-82 ms). A few merges per
#: checkpoint keep what vacuuming is for: the alarms table, where every change deletes the stored row and
#: appends the new state, gives its deleted rows back (tests/integration/test_store_vacuum.py: 12 000 alarms
#: written three times each keep 12 200 rows with 2 merges a checkpoint, 35 700 with none), and partial
#: reading row groups are still merged, a few at a time, oldest first.
MAX_VACUUM_TASKS = 2
#: The background thread checkpoints once the WAL is this big (or on the checkpoint interval). Live
#: micro-batches of 100 ms are smaller than a row group, so their readings go through the WAL and a
#: checkpoint compresses them (≈ 1 µs per reading); a checkpoint blocks appends while it runs, so it is
#: kept small (≈ 60 000 readings) and started right after a commit, while the engine thread decodes and
#: evaluates the next batch. More often costs no more CPU in total (measured: 1.30-1.34 µs per reading
#: committed and checkpointed, 3 to 12 commits of 10 000 readings per checkpoint).
BG_CHECKPOINT_WAL_BYTES = 4 << 20
#: A background checkpoint that is due waits while the engine says another commit is queued
#: (`commit(..., more_coming=...)`): it would block that commit's appends. At most this many commits in a
#: row, so that an engine that always has a commit queued (overload) still bounds its WAL.
MAX_HELD_CHECKPOINT_COMMITS = 8
#: DuckDB's own WAL-size checkpoint runs inside COMMIT, on the engine thread; with the background thread on
#: it is only a back-stop (its default, 16 MiB, is ≈ 250 000 readings: every 2.5 s at 100 000 readings/s).
DUCKDB_CHECKPOINT_THRESHOLD = "256MiB"
#: After a checkpoint, once the tables have grown by this many rows since the database was opened, the
#: background thread closes the writer connection and opens a new one (see _maybe_reopen). A DuckDB
#: instance keeps memory that only closing it gives back (measured with heaptrack and glibc's mallinfo2,
#: nothing of it visible to tracemalloc): the metadata of every row group it wrote (≈ 0.3-0.7 bytes per
#: stored reading) and ≈ 130 bytes per Arrow scan in its source registry, ≈ 0.5 KB per commit in all.
#: Over 12 800 commits of 500 readings: no reopen 22.6 -> 25.5 MB in use and RSS 169 -> 207 MB;
#: DETACH + ATTACH every 400 k rows 21.8 -> 22.5 MB (the registry stays); a reopen every 400 k rows
#: 18.8 MB flat, RSS 151-152 MB. An engine running for a year at 10 000 readings/s would otherwise hold
#: gigabytes. A reopen takes 50-170 ms (CHECKPOINT included) and also empties DuckDB's buffer cache,
#: which refills from the OS page cache.
REOPEN_ROWS = 4_000_000
#: ... and at least this long after the last one, so that a fast stream (a replay at 2 M readings/s, an
#: engine at 1 M) pays for a reopen at most once a minute (≈ 0.1-0.3 % of its time) while memory between
#: two reopens stays bounded by a minute of data. Wall time: this is resource housekeeping, not semantics.
REOPEN_MIN_INTERVAL_S = 60.0
#: How long a due reopen waits for open reader cursors to be closed before it gives up until the next
#: checkpoint (readers are never cut off: a report keeps its cursor as long as it needs).
REOPEN_WAIT_S = 2.0
#: Small-table writes (signals, alarms, alarm events, notices, rejects) of at most this many rows go through
#: a DuckDB appender, more through an Arrow table (see Store._append). A live engine writes a few rows to each
#: of these tables per commit while alarms come in (~8 per commit during a flood of 10 000 a minute); an
#: appender flush is bound and planned once, when the appender is made, and calls back into Python for
#: nothing. Measured (process CPU with the COMMIT, DuckDB 2.0.1): 7 events 1.06 -> 0.77 ms, 30 events 1.76 ->
#: 0.88 ms, 7 alarms 4.05 -> 3.58 ms; at 100 rows the Arrow table is cheaper (1.75 vs 2.22 ms; 100 alarms 6.5
#: vs 8.9 ms).
APPEND_MAX_ROWS = 48

# Quality code -> stored label. An unknown code gives NULL, which the NOT NULL constraint on
# readings.quality turns into an error. A CASE, not a list literal indexed by code + 1: that builds the list
# for every row (measured on 1 M readings: the INSERT took 1.2-1.3 s with the list, 0.7-0.95 s with the CASE).
_QUALITY_LABEL_SQL = (
    "CASE quality " + " ".join(f"WHEN {i} THEN '{label}'" for i, label in enumerate(QUALITY_LABELS)) + " END"
)
_QUALITY_CODE_SQL = (
    "CASE quality " + " ".join(f"WHEN '{label}' THEN {i}" for i, label in enumerate(QUALITY_LABELS)) + " END"
)


# ---------------------------------------------------------------------------------------------
# What a commit carries


#: A row of `notices`. The type lives in model.py (notify produces it and may not import the store);
#: this name is the one the store's API was specified with.
NoticeRow = NoticeRecord


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """Everything one micro-batch writes, committed in one transaction.

    `fresh` holds readings whose ts is newer than the last stored ts of their (site, tag): they are
    inserted without a duplicate check (the caller vouches for it: `last_ts_by_sensor` at start, then
    its own bookkeeping). `maybe_dup` holds the others (redeliveries or late readings): only those whose
    (site, tag, ts) is not stored yet are inserted, marked `late` (the rules do not evaluate them).
    Within each frame the caller guarantees that (site, tag, ts) is unique.
    """

    fresh: ReadingBatch
    maybe_dup: ReadingBatch
    rejects: Sequence[Reject] = ()
    signals: Sequence[Signal] = ()
    alarms: Sequence[Alarm] = ()  # final state of each alarm changed in this batch; upsert by alarm_id
    events: Sequence[AlarmEvent] = ()
    notices: Sequence[NoticeRecord] = ()
    state: Mapping[str, bytes] = field(default_factory=dict)  # engine_state upserts
    windows: Sequence[MaintenanceWindow] = ()  # maintenance windows added or changed; upsert by window_id
    #: the engine clock at this batch (event time in a replay); kept with the commit so that a rule-state
    #: catch-up re-evaluates each batch at the time it was evaluated (batches_since). None: the store clock.
    now_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What a commit stored. `late` = readings of `maybe_dup` inserted; `duplicates` = dropped."""

    batch_seq: int
    inserted: int
    late: int
    duplicates: int


class _AlarmRowStored(Exception):
    """An alarm the batch raised has a row already (see Store._upsert_alarms); not an error the caller sees:
    the batch is written again."""


# ---------------------------------------------------------------------------------------------
# Row <-> Arrow helpers (small tables)


def _nan_to_none(x: float | None) -> float | None:
    """NaN means "no value" in the model; SQL's NULL says so to analysts (avg() skips it, NaN poisons it)."""
    return None if x is None or math.isnan(x) else float(x)


def _none_to_nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _ident(name: str) -> str:
    """Quote an SQL identifier (a catalog name taken from DuckDB itself, never from data)."""
    return '"' + name.replace('"', '""') + '"'


def _arrow(columns: dict[str, tuple[pa.DataType, list[Any]]]) -> pa.Table:
    """Build an Arrow table from {name: (type, values)}; raises on a value of the wrong type."""
    return pa.table({name: pa.array(values, type=typ) for name, (typ, values) in columns.items()})


def _tier_label(t: Tier | str | None) -> str | None:
    """Return a tier as stored: its label ('plant' .. 'city'); accepts a Tier or a label."""
    if t is None or t == "":
        return None
    return Tier(t).label if isinstance(t, int) else Tier[str(t).upper()].label


def _ms(x: int | None) -> int | None:
    return None if x is None else int(x)


def _label(x: Any) -> str | None:
    return None if x is None else str(x)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _dt(ms: int | None) -> datetime | None:
    """Epoch ms as an aware UTC datetime (exact), the value an appender stores in a TIMESTAMPTZ column."""
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)


def _dt_of(write: Callable[[Any], int | None]) -> Callable[[Any], datetime | None]:
    return lambda v: _dt(write(v))


# model.Alarm field -> alarms column: (field, column, Arrow type, to column, from column). Timestamps are
# epoch ms in the model and TIMESTAMPTZ in the table (read back with epoch_ms, exact). NaN floats are NULL
# in the table. tests/integration/test_store.py checks that every Alarm field is listed here, so a field
# added to the model cannot be silently lost at a restart.
_ALARM_MAP: tuple[tuple[str, str, pa.DataType, Any, Any], ...] = (
    ("alarm_id", "alarm_id", pa.string(), str, str),
    ("site", "site", pa.string(), str, str),
    ("plant", "plant", pa.string(), str, str),
    ("district", "district", pa.string(), str, str),
    ("tag", "tag", pa.string(), str, str),
    ("rule_id", "rule_id", pa.string(), str, str),
    ("severity", "severity", pa.string(), str, Severity),
    ("state", "state", pa.string(), str, AlarmState),
    ("raised_at_ms", "raised_at", _TS_MS, int, int),
    ("message", "message", pa.string(), str, lambda v: v if v is not None else ""),
    ("acked_at_ms", "acked_at", _TS_MS, _ms, _ms),
    ("acked_by", "acked_by", pa.string(), _label, _label),
    ("cleared_at_ms", "cleared_at", _TS_MS, _ms, _ms),
    ("closed_at_ms", "closed_at", _TS_MS, _ms, _ms),
    ("closed_by", "closed_by", pa.string(), _label, _label),
    ("disposition", "disposition", pa.string(), _label, lambda v: None if v is None else Disposition(v)),
    ("note", "note", pa.string(), _label, _label),
    ("occurrences", "occurrences", pa.int32(), int, int),
    ("value", "value", pa.float64(), _nan_to_none, _none_to_nan),
    ("peak_value", "peak_value", pa.float64(), _nan_to_none, _none_to_nan),
    ("escalation_tier", "escalation_tier", pa.string(), lambda t: Tier(t).label, lambda v: Tier[v.upper()]),
    ("last_activation_ms", "last_activation_at", _TS_MS, int, lambda v: 0 if v is None else int(v)),
    ("shelved_until_ms", "shelved_until", _TS_MS, _ms, _ms),
    ("shelved_by", "shelved_by", pa.string(), _label, _label),
    ("shelve_reason", "shelve_reason", pa.string(), _label, _label),
    ("suppressed", "suppressed", pa.bool_(), bool, bool),
    ("chattering", "chattering", pa.bool_(), bool, bool),
    ("flood", "flood", pa.bool_(), bool, bool),
    ("last_notified_ms", "last_notified_at", _TS_MS, _ms, _ms),
    ("unacked_since_ms", "unacked_since_at", _TS_MS, _ms, _ms),
    ("ack_escalations", "ack_escalations", pa.int32(), int, lambda v: 0 if v is None else int(v)),
    ("close_escalated", "close_escalated", pa.bool_(), bool, bool),
    ("last_reminded_ms", "last_reminded_at", _TS_MS, _ms, _ms),
)
#: Alarm fields the store persists (a test compares this with dataclasses.fields(Alarm)).
ALARM_FIELDS: frozenset[str] = frozenset(f for f, *_ in _ALARM_MAP)

# Columns the model does not carry: derived by the store at each upsert.
_ALARM_EXTRA = ("ack_due_at", "close_due_at", "updated_at")
_ALARM_COLUMNS = ", ".join([c for _, c, *_ in _ALARM_MAP] + list(_ALARM_EXTRA))
_ALARM_SELECT = (
    "SELECT "
    + ", ".join(f"epoch_ms({c})" if t == _TS_MS else c for _, c, t, *_ in _ALARM_MAP)
    + " FROM alarms"
)


_WINDOW_COLUMNS = "window_id, site, tag, starts_at, ends_at, reason, created_by, created_at"


# Columns of the small tables as the store writes them (appenders name them: a column added by hand takes its
# default, as with INSERT ... BY NAME).
_SIGNAL_COLUMNS = ("site", "tag", "rule_id", "severity", "kind", "ts", "value", "message", "detail")
_EVENT_COLUMNS = ("alarm_id", "ts", "kind", "actor", "detail")
_NOTICE_COLUMNS = ("notice_id", "alarm_id", "channel", "recipient", "tier", "reason", "sent_at", "outcome",
                   "error", "attempt")
_REJECT_COLUMNS = ("received_at", "topic", "reason", "payload")
_ALARM_APPEND_COLUMNS = (*(c for _, c, *_ in _ALARM_MAP), *_ALARM_EXTRA)
# model.Alarm field -> its appender value (timestamps as datetimes)
_ALARM_APPEND = tuple((f, _dt_of(write) if t == _TS_MS else write) for f, _, t, write, _ in _ALARM_MAP)


def _alarm_from_row(row: tuple[Any, ...]) -> Alarm:
    return Alarm(**{f: read(v) for (f, _, _, _, read), v in zip(_ALARM_MAP, row, strict=True)})


def _alarms_arrow(alarms: Sequence[Alarm], extra: dict[str, list[int | None]]) -> pa.Table:
    cols = {c: (t, [write(getattr(a, f)) for a in alarms]) for f, c, t, write, _ in _ALARM_MAP}
    cols.update({c: (_TS_MS, extra[c]) for c in _ALARM_EXTRA})
    return _arrow(cols)


def _ts_ranges(ts_ms: pl.Series, gap_ms: int = 60_000, max_ranges: int = 8) -> list[tuple[int, int]]:
    """Cover the timestamps with at most `max_ranges` [lo, hi] ranges.

    Splits at the widest gaps longer than `gap_ms` (a redelivery of the last seconds plus a reading from
    hours ago: two ranges).

    >>> _ts_ranges(pl.Series([5, 1, 200_000, 3]))
    [(1, 5), (200000, 200000)]
    """
    t = ts_ms.unique().sort()
    gaps = t.diff().slice(1)
    # indices (into gaps) of the widest gaps above gap_ms, at most max_ranges - 1, in time order
    wide = (
        pl.DataFrame({"gap": gaps, "i": pl.int_range(len(gaps), eager=True)})
        .filter(pl.col("gap") > gap_ms)
        .sort("gap", descending=True)
        .head(max_ranges - 1)["i"]
        .sort()
        .to_list()
    )
    bounds: list[tuple[int, int]] = []
    start = 0
    for i in wide:  # gap i lies between t[i] and t[i + 1]
        bounds.append((int(t[start]), int(t[i])))
        start = i + 1
    bounds.append((int(t[start]), int(t[len(t) - 1])))
    return bounds


# ---------------------------------------------------------------------------------------------
# The store


class _ReaderCursor:
    """A reader cursor that tells the store when it is closed (explicitly, by `with`, or when collected).

    Everything else is the DuckDB cursor's own (attribute access is delegated). The store counts open
    readers so that a reopen (see Store._maybe_reopen) never closes the database under one.
    """

    __slots__ = ("__weakref__", "_cur", "_done")

    def __init__(self, cur: duckdb.DuckDBPyConnection, on_close: Callable[[], None]) -> None:
        self._cur = cur
        # on_close runs once: at close(), or when the cursor is garbage collected unclosed
        self._done = weakref.finalize(self, on_close)

    def close(self) -> None:
        try:
            self._cur.close()
        finally:
            self._done()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class Store:
    """The DuckDB database of one engine. Build it with `Store.open` or `Store.open_readonly`.

    Methods are safe to call from several threads: writes serialize on a lock (one transaction at a
    time on the writer connection); reads run on their own DuckDB cursor and see committed data only,
    so an API thread never waits for, nor sees half of, a commit.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: Path,
        *,
        read_only: bool,
        clock: Clock,
        deadlines: Mapping[Severity, Deadline],
        checkpoint_interval_ms: int,
    ) -> None:
        self._con = con
        self.path = path
        self.read_only = read_only
        self._clock = clock
        self._deadlines = dict(deadlines)
        self._checkpoint_interval_ms = checkpoint_interval_ms
        self._lock = threading.RLock()
        self._views: set[str] = set()  # registered Arrow views (see _view)
        self._appenders: dict[str, duckdb.Appender] = {}  # table -> appender on self._con (see _append)
        self._threads: int | None = None
        self._row_group_size = ROW_GROUP_SIZE
        self._closed = False
        self._in_doubt: tuple[int, CommitBatch] | None = None  # (seq, batch) whose COMMIT failed unreadably
        self._batch_seq = self._load_batch_seq()
        self._last_checkpoint_ms = clock.now_ms()
        self._wal_path = f"{path}.wal"
        # Background maintenance (see _bg_loop): rule-state snapshots handed over by the engine, the
        # sensor_last_ts fold and CHECKPOINT run on a thread of their own with their own cursor, so the
        # engine thread never stalls on them. _maint_lock: one fold / checkpoint at a time.
        # _state_lock: one engine_state write at a time (two transactions upserting the same key conflict).
        self._maint_lock = threading.Lock()
        self._state_lock = threading.RLock()
        self._bg_cond = threading.Condition()
        self._bg_thread: threading.Thread | None = None
        self._bg_stop = False
        self._bg_checkpoint_due = False
        self._bg_hold = False  # the engine has another commit queued: a due checkpoint waits (see commit)
        self._bg_held_commits = 0  # commits in a row that held a due checkpoint
        self._bg_busy = False
        self._pending_state: dict[str, tuple[bytes, int, int]] = {}  # key -> (blob, batch_seq, now_ms)
        # Reader cursors handed out and not yet closed (see read_cursor), and whether a reopen is
        # waiting for them: closing the writer connection closes every cursor made from it.
        self._readers_cond = threading.Condition()
        self._open_readers = 0
        self._reopening = False
        self._rows_at_open: int | None = None  # table rows when the writer connection was (re)opened
        self.reopens = 0
        self.reopen_rows = REOPEN_ROWS
        self.reopen_min_interval_s = REOPEN_MIN_INTERVAL_S
        self._opened_mono = time.monotonic()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        deadlines: Mapping[Severity, Deadline] | None = None,
        checkpoint_interval_ms: int = 10_000,
        threads: int | None = None,
        row_group_size: int = ROW_GROUP_SIZE,
        memory_limit: str | None = None,
    ) -> Store:
        """Open (creating if needed) the database at `path` for writing and apply the schema.

        Safe after a crash: DuckDB replays its write-ahead log, so every committed batch is there and
        no uncommitted one is. `deadlines` (per severity) fill `alarms.ack_due_at` / `close_due_at`.
        `checkpoint_interval_ms` bounds the WAL (and so the replay time at the next open): after a
        commit, the store checkpoints if that long has passed since the last checkpoint (0 = only
        DuckDB's own size-based checkpoints). `row_group_size`: see ROW_GROUP_SIZE. `memory_limit`
        (e.g. "1GB"): DuckDB keeps the table blocks it wrote in its buffer pool up to this limit (its own
        default is 80 % of the machine's memory), so without it the process grows by ~10 MB per million
        readings stored until then.
        """
        p = Path(path)
        store = cls(
            cls._connect_writer(p, threads, row_group_size, memory_limit),
            p,
            read_only=False,
            clock=clock if clock is not None else SystemClock(),
            deadlines=deadlines if deadlines is not None else DEFAULT_DEADLINES,
            checkpoint_interval_ms=checkpoint_interval_ms,
        )
        store._threads = threads
        store._row_group_size = row_group_size
        store._memory_limit = memory_limit
        store._configure_checkpoints()
        return store

    def _configure_checkpoints(self) -> None:
        """With checkpoints on the interval, they run on the background thread (see _maybe_checkpoint),
        small and often (the WAL is checkpointed past BG_CHECKPOINT_WAL_BYTES); DuckDB's own size-based
        checkpoint, which runs inside a COMMIT and so on the engine thread, stays only as a back-stop."""
        if self._checkpoint_interval_ms > 0:
            self._con.execute(f"SET checkpoint_threshold = '{DUCKDB_CHECKPOINT_THRESHOLD}'")

    @staticmethod
    def _connect_writer(
        p: Path, threads: int | None, row_group_size: int, memory_limit: str | None = None
    ) -> duckdb.DuckDBPyConnection:
        # The file is ATTACHed to an in-memory host rather than opened directly: only ATTACH takes the
        # ROW_GROUP_SIZE option (see ROW_GROUP_SIZE). USE makes it the default catalog, so every query
        # (and every cursor, see read_cursor) names tables unqualified, as analysts do.
        con = duckdb.connect()
        try:
            con.execute(f"ATTACH ? AS {_CATALOG} (ROW_GROUP_SIZE {int(row_group_size)})", [str(p)])
        except duckdb.Error as e:
            con.close()
            msg = f"cannot open {p} for writing (is another engine running on it?): {e}"
            raise StoreError(msg) from e
        try:
            con.execute(f"USE {_CATALOG}")
            # GLOBAL so that the reader cursors get it too: TIMESTAMP -> TIMESTAMPTZ casts and what an
            # analyst sees are UTC whatever the host's zone is.
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            if threads is not None:
                con.execute("SET threads = ?", [threads])
            if memory_limit:
                con.execute("SET memory_limit = ?", [memory_limit])
            con.execute(f"SET max_vacuum_tasks = {int(MAX_VACUUM_TASKS)}")
            con.execute(files("earlywarn").joinpath("store_schema.sql").read_text(encoding="utf-8"))
        except duckdb.Error as e:
            con.close()
            msg = f"cannot prepare {p}: {e}"
            raise StoreError(msg) from e
        return con

    def _heal(self) -> None:
        """Reopen the writer connection after a failed commit if it is dead.

        Dead: closed, or the database invalidated by DuckDB after a fatal I/O error such as a full disk;
        the new connection replays the WAL. Without this, every retry of the caller would fail the same
        way until a restart.
        """
        try:
            self._con.execute("SELECT 1").fetchone()
            return
        except Exception:  # noqa: BLE001, S110 - dead: reconnect below
            pass
        self._appenders.clear()  # made on the dead connection
        try:
            self._con.close()
        except Exception:  # noqa: BLE001, S110
            pass
        try:
            self._con = self._connect_writer(self.path, self._threads, self._row_group_size,
                                             getattr(self, "_memory_limit", None))
        except StoreError as e:
            log.error("store connection lost and cannot be reopened (will try again): %s", e)
            return
        self._views.clear()
        try:
            self._configure_checkpoints()
        except duckdb.Error as e:
            log.warning("checkpoint settings not applied after reconnecting: %s", e)
        self._batch_seq = self._load_batch_seq()
        log.warning("store connection reopened at batch %d", self._batch_seq)

    @classmethod
    def open_readonly(cls, path: str | os.PathLike[str], *, clock: Clock | None = None) -> Store:
        """Open an existing database read-only (analysts, reports on a stopped engine or a snapshot).

        DuckDB lets one process write a file and, while it does, no other process open it at all:
        to query a live engine use its HTTP API, or a copy made with `snapshot_to`.
        """
        p = Path(path)
        if not p.exists():
            msg = f"no database at {p}"
            raise StoreError(msg)
        try:
            con = duckdb.connect(str(p), read_only=True)
            con.execute("SET GLOBAL TimeZone = 'UTC'")
        except duckdb.Error as e:
            msg = (
                f"cannot open {p} read-only: {e}. A running engine holds the file; query it through "
                "the engine's API or a snapshot (Store.snapshot_to)."
            )
            raise StoreError(msg) from e
        return cls(
            con,
            p,
            read_only=True,
            clock=clock if clock is not None else SystemClock(),
            deadlines=DEFAULT_DEADLINES,
            checkpoint_interval_ms=0,
        )

    def close(self) -> None:
        """Checkpoint (writer) and close. Idempotent."""
        self._stop_bg()
        with self._state_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.read_only:
                    self._write_pending_state(self._con)
                    self._fold_last_ts(self._con)
                    self._con.execute("CHECKPOINT")
            except duckdb.Error as e:  # the WAL still holds everything committed; replayed at next open
                log.warning("checkpoint at close failed: %s", e)
            finally:
                self._appenders.clear()
                self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def batch_seq(self) -> int:
        """Number of the last committed batch (0 for a new database)."""
        return self._batch_seq

    def _load_batch_seq(self) -> int:
        row = self._con.execute("SELECT coalesce(max(batch_seq), 0) FROM store_commits").fetchone()
        return int(row[0]) if row else 0

    def _require_writer(self) -> None:
        if self.read_only:
            msg = f"store {self.path} is open read-only"
            raise StoreError(msg)
        if self._closed:
            msg = f"store {self.path} is closed"
            raise StoreError(msg)

    # -- the commit ----------------------------------------------------------------------------

    def _commit_locked(
        self, cb: CommitBatch, more_coming: bool | Callable[[], bool] = False
    ) -> CommitResult:
        """The commit itself (see `commit`), under the writer lock."""
        with self._lock:
            self._require_writer()
            if self._in_doubt is not None:
                done = self._resolve_doubt(cb)
                if done is not None:
                    return done
            seq = self._batch_seq + 1
            wall_ms = self._clock.now_ms()
            now_ms = cb.now_ms if cb.now_ms is not None else wall_ms
            con = self._con
            # alarms raised by this batch are appended without a DELETE first (see _upsert_alarms); if one of
            # them is in the table after all, the primary key refuses it and the batch is written again
            # with a DELETE of every id
            raised = {e.alarm_id for e in cb.events if e.kind == EventKind.RAISED}
            while True:
                try:
                    con.begin()
                    fresh, late = self._write_batch(cb, seq, wall_ms, now_ms, raised)
                    break
                except _AlarmRowStored as e:
                    self._rollback_quietly()
                    log.warning("batch %d: %s; writing it again with a DELETE of every alarm id", seq, e)
                    raised = set()
                except Exception as e:  # any failure means: roll back, the caller keeps the batch
                    self._rollback_quietly()
                    self._heal()
                    msg = f"batch {seq} not committed: {type(e).__name__}: {e}"
                    raise StoreError(msg) from e
            try:
                con.commit()
            except Exception as e:
                # COMMIT itself failed: the batch may or may not be durable (e.g. the WAL was written
                # and an automatic checkpoint then failed). store_commits is the witness.
                committed = self._committed_despite(seq, e)
                if committed is None:  # cannot tell: remember, so a retry of this batch cannot double it
                    self._in_doubt = (seq, cb)
                if not committed:
                    msg = f"batch {seq} not committed: {type(e).__name__}: {e}"
                    raise StoreError(msg) from e
            self._batch_seq = seq
            result = CommitResult(
                batch_seq=seq, inserted=fresh + late, late=late, duplicates=len(cb.maybe_dup) - late
            )
            self._maybe_checkpoint(wall_ms)
            self._release_checkpoint(more_coming)
            return result

    def _write_batch(
        self, cb: CommitBatch, seq: int, wall_ms: int, now_ms: int, raised: set[str]
    ) -> tuple[int, int]:
        """Every statement of a commit, in the open transaction; (fresh, late) readings written."""
        fresh = self._insert_fresh(cb.fresh, seq)
        late = self._insert_maybe_dup(cb.maybe_dup, seq)
        self._insert_rejects(cb.rejects)
        self._insert_signals(cb.signals)
        n_alarms = self._upsert_alarms(cb.alarms, now_ms, raised)
        self._insert_events(cb.events)
        self._insert_notices(cb.notices)
        self._upsert_windows(cb.windows)
        self._upsert_state(cb.state, seq, now_ms)
        self._con.execute(
            "INSERT INTO store_commits (batch_seq, committed_at, engine_now_ms, fresh, late, "
            "duplicates, rejects, signals, alarms, events, notices) "
            "VALUES (?, make_timestamptz(?::BIGINT * 1000), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                seq,
                wall_ms,
                now_ms,
                fresh,
                late,
                len(cb.maybe_dup) - late,
                len(cb.rejects),
                len(cb.signals),
                n_alarms,
                len(cb.events),
                len(cb.notices),
            ],
        )
        return fresh, late

    def _release_checkpoint(self, more_coming: bool | Callable[[], bool]) -> None:
        """After a commit: wake the background thread for a due checkpoint (a deferred one retries after
        each commit), unless another commit is queued; then it waits for that one, within a bound."""
        with self._bg_cond:
            if not self._bg_checkpoint_due:
                self._bg_hold, self._bg_held_commits = False, 0
                return
        try:
            queued = bool(more_coming() if callable(more_coming) else more_coming)
        except Exception as e:  # noqa: BLE001 - a hint only: checkpoint as without it
            log.debug("more_coming raised: %s", e)
            queued = False
        with self._bg_cond:
            hold = queued and self._bg_held_commits < MAX_HELD_CHECKPOINT_COMMITS
            self._bg_hold = hold
            self._bg_held_commits = self._bg_held_commits + 1 if hold else 0
            if not hold:
                self._ensure_bg()
                self._bg_cond.notify()

    def commit(self, cb: CommitBatch, *, more_coming: bool | Callable[[], bool] = False) -> CommitResult:
        """Write everything of one micro-batch in one transaction.

        Raises StoreError if anything fails; then nothing of the batch is stored (rolled back) and the
        caller keeps the batch, acknowledges nothing and may retry the same CommitBatch.

        `more_coming`: the caller has another commit queued (or a callable asked right after the COMMIT,
        e.g. "is the next step's commit submitted?"). A background checkpoint that is due then waits for
        the next commit (at most MAX_HELD_CHECKPOINT_COMMITS in a row) instead of running into it.
        It changes nothing of durability: COMMIT has written and fsynced the WAL before this returns.
        """
        if not cb.state:
            return self._commit_locked(cb, more_coming)
        # a background state write of the same key in flight would make one of the two transactions
        # conflict: state writes take turns. The state written here is the newest (this batch's).
        with self._state_lock:
            with self._bg_cond:
                for k in cb.state:
                    self._pending_state.pop(k, None)
            return self._commit_locked(cb, more_coming)

    def _rollback_quietly(self) -> None:
        try:
            self._con.rollback()
        except Exception as e:  # noqa: BLE001 - no transaction (failed at BEGIN) or connection gone
            log.debug("rollback: %s", e)
        for name in list(self._views):  # left registered by a statement that failed mid-transaction
            try:
                self._con.unregister(name)
                self._views.discard(name)
            except Exception:  # noqa: BLE001, S110 - connection gone: nothing holds the data any more
                pass

    @contextmanager
    def _view(self, name: str, data: pa.Table) -> Iterator[None]:
        """Expose `data` (Arrow, zero copy) to SQL as `name` on the writer connection for one statement."""
        self._con.register(name, data)
        self._views.add(name)
        yield
        # Not in a `finally`: in an aborted transaction unregister fails too and would mask the real
        # error; _rollback_quietly unregisters whatever a failed statement left behind.
        self._con.unregister(name)
        self._views.discard(name)

    def _committed_despite(self, seq: int, error: BaseException) -> bool | None:
        """After a failed COMMIT: is batch `seq` durable? None if the store cannot even read."""
        self._rollback_quietly()
        self._heal()
        try:
            with self._reader() as cur:
                row = cur.execute("SELECT count(*) FROM store_commits WHERE batch_seq = ?", [seq]).fetchone()
        except Exception as e:  # noqa: BLE001
            log.error(
                "batch %d: COMMIT failed (%s) and the store cannot tell whether it is in: %s", seq, error, e
            )
            return None
        committed = bool(row and row[0])
        log.warning(
            "batch %d: COMMIT raised %s; batch %s",
            seq,
            error,
            "is committed" if committed else "is not committed",
        )
        return committed

    def _resolve_doubt(self, cb: CommitBatch) -> CommitResult | None:
        """Settle the batch whose COMMIT failed in doubt, at the next commit.

        If that batch turns out to be in and `cb` is its retry (the same object), report it committed
        instead of writing its fresh readings twice. Raises StoreError while the store still cannot tell.
        """
        assert self._in_doubt is not None
        seq, doubtful = self._in_doubt
        self._heal()
        try:
            with self._reader() as cur:
                row = cur.execute(
                    "SELECT fresh, late, duplicates FROM store_commits WHERE batch_seq = ?", [seq]
                ).fetchone()
        except Exception as e:
            msg = f"batch {seq} in doubt (its COMMIT failed) and the store still cannot read: {e}"
            raise StoreError(msg) from e
        self._in_doubt = None
        if row is None:  # it did not make it: write this batch normally
            return None
        self._batch_seq = max(self._batch_seq, seq)
        if cb is doubtful:
            log.warning("batch %d was committed after all; its retry is not written again", seq)
            return CommitResult(batch_seq=seq, inserted=row[0] + row[1], late=row[1], duplicates=row[2])
        return None  # another batch: the in-doubt one is in, this one goes after it

    def _maybe_checkpoint(self, now_ms: int) -> None:
        """Ask the background thread for a fold and CHECKPOINT once the interval has passed.

        Never on the committing thread: a checkpoint compresses everything the WAL took since the last one
        (≈ 0.2 s per million readings), which stalled the engine thread, and every alarm waiting behind it,
        once per interval. Checkpoints do not make anything durable (COMMIT already fsynced the WAL); they
        bound the WAL and so the replay at the next open.
        """
        interval_ms = self._checkpoint_interval_ms
        if interval_ms <= 0:
            return
        if now_ms - self._last_checkpoint_ms < interval_ms and self._wal_bytes() < BG_CHECKPOINT_WAL_BYTES:
            return
        self._last_checkpoint_ms = now_ms
        with self._bg_cond:  # the background thread is woken by _release_checkpoint
            self._bg_checkpoint_due = True

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self._wal_path).st_size
        except OSError:
            return 0

    def save_state_later(self, key: str, value: bytes, batch_seq: int, now_ms: int | None = None) -> None:
        """Store an engine_state blob that reflects the store up to committed batch `batch_seq`, soon.

        Written by the background thread in a transaction of its own (the engine thread only hands over
        the immutable bytes), and only if no newer state of `key` is stored: the state row always pairs a
        blob with the batch it includes, so a restart resumes from it and replays the batches after
        `batch_seq` (batches_since). Until it is written, and after a crash before that, the previous
        state with its own batch_seq stays valid. A newer blob of the same key replaces a pending one.
        """
        self._require_writer()
        if batch_seq > self._batch_seq:
            msg = f"state for batch {batch_seq} handed over before that batch was committed ({self._batch_seq})"
            raise ValueError(msg)
        with self._bg_cond:
            self._pending_state[key] = (bytes(value), int(batch_seq),
                                        int(now_ms if now_ms is not None else self._clock.now_ms()))
            self._ensure_bg()
            self._bg_cond.notify()

    def flush_background(self, timeout_s: float = 60.0) -> bool:
        """Wait until the background thread has written what was handed over (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        with self._bg_cond:
            while (self._pending_state or self._bg_busy) and self._bg_thread:
                left = deadline - time.monotonic()
                if left <= 0 or not self._bg_thread.is_alive():
                    return False
                self._bg_cond.wait(min(left, 0.1))
        return not self._pending_state

    def _ensure_bg(self) -> None:
        """Start the background thread (caller holds _bg_cond)."""
        if self._bg_thread is None and not self._bg_stop and not self.read_only:
            self._bg_thread = threading.Thread(target=self._bg_loop, name="earlywarn-store-bg", daemon=True)
            self._bg_thread.start()

    def _stop_bg(self) -> None:
        with self._bg_cond:
            self._bg_stop = True
            t = self._bg_thread
            self._bg_cond.notify_all()
        if t is not None:
            t.join(120)

    def _bg_loop(self) -> None:
        attempted_at = -1  # batch_seq at the last checkpoint attempt
        while True:
            with self._bg_cond:
                while not (
                    self._bg_stop
                    or self._pending_state
                    or (self._bg_checkpoint_due and not self._bg_hold and self._batch_seq != attempted_at)
                ):
                    self._bg_cond.wait()
                if self._bg_stop:  # close() writes what is left on the writer connection
                    self._bg_cond.notify_all()
                    return
                checkpoint = (
                    self._bg_checkpoint_due and not self._bg_hold and self._batch_seq != attempted_at
                )
                self._bg_busy = True
            try:
                cur = self.read_cursor()
                try:
                    if checkpoint:
                        # first, while the engine thread is between commits (it woke us after one):
                        # CHECKPOINT refuses to run while another write transaction is open
                        attempted_at = self._batch_seq
                        with self._maint_lock:
                            try:
                                cur.execute("CHECKPOINT")
                                done = True
                            except duckdb.TransactionException as e:  # a commit is in progress: retry
                                log.debug("background checkpoint deferred: %s", e)
                                done = False
                            if done:
                                with self._bg_cond:
                                    self._bg_checkpoint_due = False
                                # the marks of the batches just checkpointed; written to the WAL, moved
                                # into the file by the next checkpoint
                                self._fold_last_ts(cur)
                    self._write_pending_state(cur)
                finally:
                    cur.close()
                if checkpoint:
                    self._maybe_reopen()
            except Exception as e:  # noqa: BLE001 - never fatal: the WAL keeps everything committed
                log.warning("background store maintenance failed (the WAL keeps the data): %s", e)
                time.sleep(0.5)  # a lasting failure (disk full) must not spin
            finally:
                with self._bg_cond:
                    self._bg_busy = False
                    self._bg_cond.notify_all()

    def _table_rows(self) -> int:
        row = self._con.execute(
            "SELECT coalesce(sum(estimated_size), 0) FROM duckdb_tables() WHERE database_name = ?", [_CATALOG]
        ).fetchone()
        return int(row[0]) if row else 0

    def _maybe_reopen(self) -> bool:
        """Close the writer connection and open a new one once the tables grew by `reopen_rows` since the
        last (re)open: a DuckDB instance gives back the memory it accumulates only when it is closed (see
        REOPEN_ROWS).

        Runs on the background thread right after a checkpoint, under the writer lock (no commit in
        flight) and only while no reader cursor is open (new ones wait the few ms it takes): closing the
        connection closes every cursor made from it. Nothing is lost whatever happens: the data is
        checkpointed first, and if the new connection cannot be opened the store heals at the next
        commit (_heal), which retries until it can.
        """
        with self._lock:
            if self._closed or self.read_only:
                return False
            rows = self._table_rows()
            if self._rows_at_open is None:
                self._rows_at_open = rows
            if (rows - self._rows_at_open < self.reopen_rows
                    or time.monotonic() - self._opened_mono < self.reopen_min_interval_s):
                return False
            with self._readers_cond:
                self._reopening = True
                try:
                    if not self._readers_cond.wait_for(lambda: self._open_readers == 0, REOPEN_WAIT_S):
                        log.info("store reopen postponed: %d reader cursor(s) still open", self._open_readers)
                        return False
                    t0 = time.perf_counter()
                    try:
                        self._con.execute("CHECKPOINT")  # what the last commits added: the WAL is empty
                    except duckdb.Error as e:
                        log.warning("store reopen postponed, checkpoint failed: %s", e)
                        return False
                    self._appenders.clear()
                    self._con.close()
                    self._views.clear()  # they were registered on the closed connection
                    try:
                        self._con = self._connect_writer(self.path, self._threads, self._row_group_size,
                                                         getattr(self, "_memory_limit", None))
                        self._configure_checkpoints()
                    except (StoreError, duckdb.Error) as e:
                        # self._con is the closed one: the next commit reopens it (_heal) or fails and is
                        # retried by the caller, which acknowledges nothing meanwhile
                        log.warning("store reopen failed, retried at the next commit: %s", e)
                        return False
                finally:
                    self._reopening = False
                    self._readers_cond.notify_all()
            self._rows_at_open = rows
            self._opened_mono = time.monotonic()
            self.reopens += 1
            log.info("store connection reopened at %d rows in %.1f ms (gives back DuckDB's accumulated memory)",
                     rows, (time.perf_counter() - t0) * 1e3)
            return True

    def _write_pending_state(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the handed-over state blobs on `con`, each only over an older (or no) stored state."""
        with self._state_lock:
            with self._bg_cond:
                pending, self._pending_state = self._pending_state, {}
            for key, (blob, seq, now_ms) in pending.items():
                data = _arrow({"key": (pa.string(), [key]), "value": (pa.binary(), [blob]),
                               "batch_seq": (pa.int64(), [seq]), "updated_at": (_TS_MS, [now_ms])})
                view = f"_ew_state_bg_{uuid.uuid4().hex}"
                con.register(view, data)
                try:
                    con.execute(
                        "INSERT INTO engine_state AS s (key, value, batch_seq, updated_at) "
                        f"SELECT key, value, batch_seq, updated_at FROM {view} "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, batch_seq = excluded.batch_seq, "
                        "updated_at = excluded.updated_at WHERE excluded.batch_seq >= s.batch_seq"
                    )
                except Exception:
                    with self._bg_cond:  # keep it for the next try unless a newer one came meanwhile
                        self._pending_state.setdefault(key, (blob, seq, now_ms))
                    raise
                finally:
                    con.unregister(view)

    def checkpoint(self) -> None:
        """Move the WAL into the database file now (shortens the replay at the next open)."""
        with self._lock:
            self._require_writer()
            with self._maint_lock:
                self._fold_last_ts(self._con)
                try:
                    self._con.execute("CHECKPOINT")
                except duckdb.Error as e:
                    msg = f"checkpoint failed: {e}"
                    raise StoreError(msg) from e
            self._last_checkpoint_ms = self._clock.now_ms()

    # readings ----------------------------------------------------------------------------------

    # The conversion happens inside DuckDB, vectorized: ts_ms -> TIMESTAMPTZ (microseconds), the
    # quality code -> its label.
    _READINGS_SELECT = (
        f"SELECT site, tag, make_timestamptz(ts_ms * 1000) AS ts, value, "
        f"{_QUALITY_LABEL_SQL} AS quality"
    )

    def _insert_fresh(self, batch: ReadingBatch, seq: int) -> int:
        if len(batch) == 0:
            return 0
        _ew_fresh = batch.frame.to_arrow()  # read by name by the statement below (replacement scan, no view)
        self._con.execute(
            "INSERT INTO readings (site, tag, ts, value, quality, batch_seq, late) "
            f"SELECT *, ?, false FROM ({self._READINGS_SELECT} FROM _ew_fresh)",
            [seq],
        )
        return len(batch)

    def _insert_maybe_dup(self, batch: ReadingBatch, seq: int) -> int:
        """Insert the readings of `batch` not stored yet; returns how many were inserted."""
        if len(batch) == 0:
            return 0
        frame = batch.frame
        ranges = _ts_ranges(frame["ts_ms"])
        # The ts range filter prunes `readings` by row-group zone maps (readings arrive roughly in time
        # order), so the anti-join's build side is the few row groups around the candidates, not the
        # whole history; the hash join then matches on (site, tag, ts). Several ranges (an OR, which
        # DuckDB also pushes into the scan) keep one very late reading from widening it to everything.
        # Only placeholders are generated here; the bounds are bound parameters.
        where = " OR ".join(
            f"ts BETWEEN make_timestamptz($lo{i}::BIGINT * 1000) AND make_timestamptz($hi{i}::BIGINT * 1000)"
            for i in range(len(ranges))
        )
        params: dict[str, int] = {"seq": seq}
        for i, (lo_ms, hi_ms) in enumerate(ranges):
            params[f"lo{i}"], params[f"hi{i}"] = lo_ms, hi_ms
        _ew_maybe = frame.to_arrow()  # read by name by the statement below (replacement scan)
        row = self._con.execute(
            "INSERT INTO readings (site, tag, ts, value, quality, batch_seq, late) "
            f"SELECT c.*, $seq, true FROM ({self._READINGS_SELECT} FROM _ew_maybe) c "
            f"ANTI JOIN (SELECT site, tag, ts FROM readings WHERE {where}) r "
            "USING (site, tag, ts)",
            params,
        ).fetchone()
        return int(row[0]) if row else 0

    def _fold_last_ts(self, con: duckdb.DuckDBPyConnection) -> None:
        """Fold max(ts) per sensor of the batches since the last fold into `sensor_last_ts`.

        Keeping the marks exact at every commit cost ~8 ms per 50 000-reading batch (an ART upsert of
        every sensor); instead they are folded on the checkpoint interval, in a transaction of their
        own, and `last_ts_by_sensor` adds the few batches since (pruned by zone maps on batch_seq).
        """
        upto = self._batch_seq
        try:
            con.begin()
            row = con.execute(
                "SELECT coalesce(max(value), 0) FROM store_meta WHERE key = 'sensor_last_ts_upto'"
            ).fetchone()
            done = int(row[0]) if row else 0
            if done >= upto:
                con.rollback()
                return
            # bound parameters, not a subquery: they prune `readings` by its batch_seq zone maps
            con.execute(
                "INSERT INTO sensor_last_ts AS s "
                "SELECT site, tag, epoch_ms(max(ts)) FROM readings WHERE batch_seq > ? AND batch_seq <= ? "
                "GROUP BY site, tag "
                "ON CONFLICT (site, tag) DO UPDATE "
                "SET last_ts_ms = greatest(s.last_ts_ms, excluded.last_ts_ms)",
                [done, upto],
            )
            con.execute("INSERT OR REPLACE INTO store_meta VALUES ('sensor_last_ts_upto', ?)", [upto])
            con.commit()
        except duckdb.Error as e:  # harmless: the marks stay correct, last_ts_by_sensor just reads more
            if con is self._con:
                self._rollback_quietly()
            else:
                try:
                    con.rollback()
                except duckdb.Error:
                    pass
            log.warning("folding sensor_last_ts failed: %s", e)

    # small tables: one Arrow table and one INSERT each (benchmarks/bench_store.py: executemany costs a
    # statement execution per row, ~20x slower at a few hundred rows) ----------------------------

    def _insert_table(self, table: str, data: pa.Table) -> None:
        """Append `data` to `table` in the open transaction, its columns matched by name.

        The Arrow table is read by DuckDB's replacement scan of the local `_ew_rows`: no view registered
        and unregistered, and no relation bound before it runs. A live engine makes ~25 commits a second
        and, during an alarm flood, each carries a few rows for four of these tables: 7 alarm events cost
        0.7 ms of CPU this way, 1.1 ms by `from_arrow(..).insert_into` and 1.3 ms through a registered view
        (process CPU, DuckDB's threads included, median of 300 appends). DuckDB looks the name up in the
        frame that calls `execute` only (`python_scan_all_frames` is off), so the call stays here. BY NAME:
        a column added to the table by hand takes its default.
        """
        _ew_rows = data  # read by name by the statement below
        self._con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _ew_rows")

    def _append(self, table: str, columns: tuple[str, ...], rows: list[Sequence[Any]]) -> None:
        """Append a few `rows` (values in the order of `columns`) to `table` in the open transaction.

        Through the writer connection's appender of `table`, made once per connection: its flush is one
        statement bound and planned when the appender was made, with no Arrow table built and no replacement
        scan calling back into Python (which the committer thread pays for twice on a busy engine: CPU, and a
        wait for the GIL each time DuckDB takes it back). Rolled back with the transaction like any statement.
        A failed flush drops the appender (its rows with it); the next write makes a new one.
        """
        ap = self._appenders.get(table)
        if ap is None:
            ap = self._appenders[table] = self._con.appender(table, columns=list(columns))
        try:
            ap.append_rows(rows)
            ap.flush()
        except BaseException:
            del self._appenders[table]
            try:
                ap.clear()
            except Exception:  # noqa: BLE001, S110 - the connection is gone: nothing holds the rows
                pass
            raise

    def _insert_rejects(self, rejects: Sequence[Reject]) -> None:
        if not rejects:
            return
        if len(rejects) <= APPEND_MAX_ROWS:
            self._append("rejects", _REJECT_COLUMNS,
                         [(_dt(r.received_ms), r.topic, r.reason, r.payload) for r in rejects])
            return
        data = _arrow(
            {
                "received_at": (_TS_MS, [r.received_ms for r in rejects]),
                "topic": (pa.string(), [r.topic for r in rejects]),
                "reason": (pa.string(), [r.reason for r in rejects]),
                "payload": (pa.string(), [r.payload for r in rejects]),
            }
        )
        self._insert_table("rejects", data)

    def _insert_signals(self, signals: Sequence[Signal]) -> None:
        if not signals:
            return
        if len(signals) <= APPEND_MAX_ROWS:
            self._append("signals", _SIGNAL_COLUMNS, [
                (s.site, s.tag, s.rule_id, str(s.severity), str(s.kind), _dt(s.ts_ms), _nan_to_none(s.value),
                 s.message, s.detail) for s in signals])
            return
        data = _arrow(
            {
                "site": (pa.string(), [s.site for s in signals]),
                "tag": (pa.string(), [s.tag for s in signals]),
                "rule_id": (pa.string(), [s.rule_id for s in signals]),
                "severity": (pa.string(), [s.severity for s in signals]),
                "kind": (pa.string(), [s.kind for s in signals]),
                "ts": (_TS_MS, [s.ts_ms for s in signals]),
                "value": (pa.float64(), [_nan_to_none(s.value) for s in signals]),
                "message": (pa.string(), [s.message for s in signals]),
                "detail": (pa.string(), [s.detail for s in signals]),
            }
        )
        self._insert_table("signals", data)

    def _upsert_alarms(self, alarms: Sequence[Alarm], now_ms: int, raised: set[str] | frozenset[str] = frozenset()
                       ) -> int:
        """Write the final state of each alarm: one row per alarm_id, replacing the stored one.

        `raised`: ids of alarms this batch raised, so not stored yet: appended without a DELETE. Should one be
        stored after all, the primary key refuses the append and _AlarmRowStored is raised (the caller writes
        the batch again with `raised` empty).
        """
        if not alarms:
            return 0
        # One row per id, the last one given: a key appended twice in one statement would violate the
        # primary key, and the last state is the final one.
        final = list({a.alarm_id: a for a in alarms}.values())
        ack_due: list[int | None] = []
        close_due: list[int | None] = []
        for a in final:
            d = self._deadlines.get(a.severity)
            ack_due.append(a.raised_at_ms + d.ack_ms if d and d.ack_ms else None)
            close_due.append(a.raised_at_ms + d.close_ms if d and d.close_ms else None)
        # DELETE of the ids, then an append: the same rows as INSERT OR REPLACE, which DuckDB plans as a
        # MERGE over every column (~6 ms to bind and optimize whatever the row count, measured with 5
        # alarms; delete + append ~3 ms). Both in this transaction: readers never see an alarm missing.
        # Alarms raised by this batch have no row to delete: during a flood most rows are such, and the
        # DELETE statement alone cost 0.6-1 ms of CPU per commit.
        stored = [a.alarm_id for a in final if a.alarm_id not in raised]
        if stored:
            self._con.execute("DELETE FROM alarms WHERE alarm_id = ANY(?)", [stored])
        try:
            if len(final) <= APPEND_MAX_ROWS:
                now = _dt(now_ms)
                self._append("alarms", _ALARM_APPEND_COLUMNS, [
                    [*(write(getattr(a, f)) for f, write in _ALARM_APPEND), _dt(ack), _dt(close), now]
                    for a, ack, close in zip(final, ack_due, close_due, strict=True)])
            else:
                self._insert_table("alarms", _alarms_arrow(final, {
                    "ack_due_at": ack_due, "close_due_at": close_due, "updated_at": [now_ms] * len(final)}))
        except duckdb.ConstraintException as e:
            if len(stored) == len(final):
                raise
            msg = f"an alarm raised by this batch is stored already ({e})"
            raise _AlarmRowStored(msg) from e
        return len(final)

    def _insert_events(self, events: Sequence[AlarmEvent]) -> None:
        if not events:
            return
        if len(events) <= APPEND_MAX_ROWS:
            self._append("alarm_events", _EVENT_COLUMNS,
                         [(e.alarm_id, _dt(e.ts_ms), str(e.kind), e.actor, e.detail) for e in events])
            return
        data = _arrow(
            {
                "alarm_id": (pa.string(), [e.alarm_id for e in events]),
                "ts": (_TS_MS, [e.ts_ms for e in events]),
                "kind": (pa.string(), [e.kind for e in events]),
                "actor": (pa.string(), [e.actor for e in events]),
                "detail": (pa.string(), [e.detail for e in events]),
            }
        )
        self._insert_table("alarm_events", data)

    def _insert_notices(self, notices: Sequence[NoticeRow]) -> None:
        if not notices:
            return
        if len(notices) <= APPEND_MAX_ROWS:
            self._append("notices", _NOTICE_COLUMNS, [
                (n.notice_id, n.alarm_id, n.channel, n.recipient, _tier_label(n.tier), n.reason,
                 _dt(n.sent_at_ms), n.outcome, n.error or None, n.attempt)  # error NULL: no error
                for n in notices])
            return
        data = _arrow(
            {
                "notice_id": (pa.string(), [n.notice_id for n in notices]),
                "alarm_id": (pa.string(), [n.alarm_id for n in notices]),
                "channel": (pa.string(), [n.channel for n in notices]),
                "recipient": (pa.string(), [n.recipient for n in notices]),
                "tier": (pa.string(), [_tier_label(n.tier) for n in notices]),
                "reason": (pa.string(), [n.reason for n in notices]),
                "sent_at": (_TS_MS, [n.sent_at_ms for n in notices]),
                "outcome": (pa.string(), [n.outcome for n in notices]),
                "error": (pa.string(), [n.error or None for n in notices]),  # NULL: no error
                "attempt": (pa.int32(), [n.attempt for n in notices]),
            }
        )
        self._insert_table("notices", data)

    def _upsert_windows(self, windows: Sequence[MaintenanceWindow]) -> None:
        if not windows:
            return
        final = list({w.window_id: w for w in windows}.values())
        data = _arrow(
            {
                "window_id": (pa.string(), [w.window_id for w in final]),
                "site": (pa.string(), [w.site for w in final]),
                "tag": (pa.string(), [w.tag for w in final]),
                "starts_at": (_TS_MS, [w.starts_ms for w in final]),
                "ends_at": (_TS_MS, [w.ends_ms for w in final]),
                "reason": (pa.string(), [w.reason for w in final]),
                "created_by": (pa.string(), [w.created_by for w in final]),
                "created_at": (_TS_MS, [w.created_at_ms for w in final]),
            }
        )
        with self._view("_ew_windows", data):
            self._con.execute(
                f"INSERT OR REPLACE INTO maintenance_windows ({_WINDOW_COLUMNS}) "
                f"SELECT {_WINDOW_COLUMNS} FROM _ew_windows"
            )

    def _upsert_state(self, state: Mapping[str, bytes], seq: int, now_ms: int) -> None:
        if not state:
            return
        data = _arrow(
            {
                "key": (pa.string(), list(state.keys())),
                "value": (pa.binary(), [bytes(v) for v in state.values()]),
                "batch_seq": (pa.int64(), [seq] * len(state)),
                "updated_at": (_TS_MS, [now_ms] * len(state)),
            }
        )
        with self._view("_ew_state", data):
            self._con.execute(
                "INSERT OR REPLACE INTO engine_state (key, value, batch_seq, updated_at) "
                "SELECT key, value, batch_seq, updated_at FROM _ew_state"
            )

    # -- read side -----------------------------------------------------------------------------

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """Return a DuckDB cursor of its own (reports, the API).

        It sees committed data only and never blocks nor sees half of a commit. It is a connection to
        the writer's database, so callers run only bound, read-only queries on it (reports.py does);
        close it when done.
        """
        if self._closed:
            msg = f"store {self.path} is closed"
            raise StoreError(msg)
        with self._readers_cond:
            self._readers_cond.wait_for(lambda: not self._reopening)
            cur = self._con.cursor()
            try:
                if not self.read_only:
                    cur.execute(f"USE {_CATALOG}")  # a cursor starts in the in-memory host catalog
            except BaseException:
                cur.close()
                raise
            self._open_readers += 1
        return _ReaderCursor(cur, self._reader_closed)  # type: ignore[return-value]

    def _reader_closed(self) -> None:
        with self._readers_cond:
            self._open_readers -= 1
            self._readers_cond.notify_all()

    _reader = read_cursor

    def last_ts_by_sensor(self) -> dict[tuple[str, str], int]:
        """Newest stored reading per (site, tag), epoch ms: what the batcher must treat as maybe-dup."""
        with self._reader() as cur:
            cur.begin()  # one snapshot for both reads: a fold in between must not hide a batch
            row = cur.execute(
                "SELECT coalesce(max(value), 0) FROM store_meta WHERE key = 'sensor_last_ts_upto'"
            ).fetchone()
            upto = int(row[0]) if row else 0
            # the bound parameter prunes readings by the row groups' batch_seq zone maps: only the
            # batches since the last fold are read
            rows = cur.execute(
                "SELECT site, tag, max(ts_ms) FROM ("
                "  SELECT site, tag, last_ts_ms AS ts_ms FROM sensor_last_ts"
                "  UNION ALL"
                "  SELECT site, tag, epoch_ms(max(ts)) FROM readings WHERE batch_seq > ? GROUP BY site, tag"
                ") GROUP BY site, tag",
                [upto],
            ).fetchall()
            cur.rollback()
        return {(site, tag): int(ts) for site, tag, ts in rows}

    def load_state(self, key: str) -> tuple[bytes, int] | None:
        """Return the engine_state blob under `key` and the batch_seq of the commit that wrote it."""
        with self._reader() as cur:
            row = cur.execute("SELECT value, batch_seq FROM engine_state WHERE key = ?", [key]).fetchone()
        if row is None:
            return None
        return bytes(row[0]) if row[0] is not None else b"", int(row[1])

    _READINGS_OUT = (
        f"SELECT site, tag, epoch_ms(ts) AS ts_ms, value, ({_QUALITY_CODE_SQL})::TINYINT AS quality "
        "FROM readings"
    )

    def readings_since(self, batch_seq: int) -> ReadingBatch:
        """Every reading committed by batches after `batch_seq` (late ones too), in commit order then ts."""
        with self._reader() as cur:
            frame = cur.sql(
                f"{self._READINGS_OUT} WHERE batch_seq > ? ORDER BY batch_seq, ts, site, tag",
                params=[batch_seq],
            ).pl()
        return ReadingBatch(frame.cast(READING_SCHEMA))

    def batches_since(self, batch_seq: int) -> Iterator[tuple[int, ReadingBatch]]:
        """Yield each commit after `batch_seq` (a rule-state snapshot) for rule-state catch-up.

        In commit order, as (its engine clock `now_ms`, the readings the rules evaluated in it, by ts).

        Late readings (stored from `maybe_dup`) are left out: the live run did not evaluate them either.
        Commits without readings are included (empty batch) so that clock-driven state moves the same.
        """
        with self._reader() as cur:
            cur.begin()  # commits and readings from one snapshot
            commits = cur.execute(
                "SELECT batch_seq, engine_now_ms FROM store_commits WHERE batch_seq > ? ORDER BY batch_seq",
                [batch_seq],
            ).fetchall()
            frame = cur.sql(
                "SELECT batch_seq, site, tag, epoch_ms(ts) AS ts_ms, value, "
                f"({_QUALITY_CODE_SQL})::TINYINT AS quality FROM readings "
                "WHERE batch_seq > ? AND late IS NOT TRUE ORDER BY batch_seq, ts, site, tag",
                params=[batch_seq],
            ).pl()
            cur.rollback()
        parts = (
            {
                int(k[0]): ReadingBatch(part.drop("batch_seq").cast(READING_SCHEMA))
                for k, part in frame.partition_by("batch_seq", as_dict=True, maintain_order=True).items()
            }
            if frame.height
            else {}
        )
        empty = ReadingBatch.empty()
        for seq, now_ms in commits:
            yield int(now_ms), parts.get(int(seq), empty)

    def open_alarms(self) -> list[Alarm]:
        """Every alarm not closed, oldest first (restored into the alarm manager at start)."""
        with self._reader() as cur:
            rows = cur.execute(
                f"{_ALARM_SELECT} WHERE state <> ? ORDER BY raised_at, alarm_id", [AlarmState.CLOSED.value]
            ).fetchall()
        return [_alarm_from_row(r) for r in rows]

    def list_alarms(
        self,
        *,
        site: str | None = None,
        state: str | None = None,
        severity: str | None = None,
        open_only: bool = False,
        limit: int = 500,
    ) -> list[Alarm]:
        """Alarms, newest raised first, filtered by site / state / severity / not closed (the API's list)."""
        with self._reader() as cur:
            rows = cur.execute(
                f"{_ALARM_SELECT} WHERE ($site IS NULL OR site = $site) "
                "AND ($state IS NULL OR state = $state) AND ($severity IS NULL OR severity = $severity) "
                "AND (NOT $open_only OR state <> 'closed') "
                "ORDER BY raised_at DESC, alarm_id LIMIT $limit",
                {"site": site, "state": state, "severity": severity, "open_only": open_only, "limit": limit},
            ).fetchall()
        return [_alarm_from_row(r) for r in rows]

    def get_alarm(self, alarm_id: str) -> Alarm | None:
        """One alarm by id, or None."""
        with self._reader() as cur:
            row = cur.execute(f"{_ALARM_SELECT} WHERE alarm_id = ?", [alarm_id]).fetchone()
        return _alarm_from_row(row) if row is not None else None

    def alarm_events(self, alarm_id: str) -> list[AlarmEvent]:
        """Return the alarm's journal in time order (insertion order among equal times)."""
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT alarm_id, epoch_ms(ts), kind, actor, detail FROM alarm_events WHERE alarm_id = ? "
                "ORDER BY ts, rowid",
                [alarm_id],
            ).fetchall()
        return [
            AlarmEvent(alarm_id=a, ts_ms=ts, kind=EventKind(kind), actor=actor, detail=detail or "")
            for a, ts, kind, actor, detail in rows
        ]

    def notice_sent(self, alarm_id: str, reason: str, tier: Tier | str | None = None) -> bool:
        """Tell whether a notice for `alarm_id` with this reason (and tier, if given) was delivered."""
        with self._reader() as cur:
            row = cur.execute(
                "SELECT count(*) FROM notices WHERE alarm_id = $alarm AND reason = $reason "
                "AND outcome = 'delivered' AND ($tier IS NULL OR tier = $tier)",
                {"alarm": alarm_id, "reason": reason, "tier": _tier_label(tier)},
            ).fetchone()
        return bool(row and row[0])

    # maintenance windows (user actions: committed on their own, outside the micro-batches) -------

    def add_maintenance_window(self, w: MaintenanceWindow) -> None:
        """Record (or replace, by window_id) one window in a transaction of its own.

        The engine normally stores windows with the batch that applies them (CommitBatch.windows);
        this is for tools that write a window directly (tests, an offline import).
        """
        if w.ends_ms <= w.starts_ms:
            msg = f"maintenance window {w.window_id} must end after it starts"
            raise ValueError(msg)
        with self._lock:
            self._require_writer()
            try:
                self._con.begin()
                self._upsert_windows([w])
                self._con.commit()
            except Exception as e:
                self._rollback_quietly()
                msg = f"maintenance window {w.window_id} not stored: {e}"
                raise StoreError(msg) from e

    def end_maintenance_window(self, window_id: str, ends_ms: int) -> bool:
        """End a window early (at `ends_ms`, not before its start); False if there is no such window."""
        with self._lock:
            self._require_writer()
            try:
                row = self._con.execute(
                    "UPDATE maintenance_windows "
                    "SET ends_at = greatest(starts_at, make_timestamptz(?::BIGINT * 1000)) "
                    "WHERE window_id = ?",
                    [ends_ms, window_id],
                ).fetchone()
            except duckdb.Error as e:
                msg = f"maintenance window {window_id} not updated: {e}"
                raise StoreError(msg) from e
            return bool(row and row[0])

    def maintenance_windows(
        self, *, site: str | None = None, active_at_ms: int | None = None, ends_after_ms: int | None = None
    ) -> list[MaintenanceWindow]:
        """List maintenance windows by start.

        All, or those of one `site`, covering the instant `active_at_ms`, or ending after `ends_after_ms`
        (current and future ones: what the alarm manager restores at start).
        """
        with self._reader() as cur:
            rows = cur.execute(
                "SELECT window_id, site, tag, epoch_ms(starts_at), epoch_ms(ends_at), reason, created_by, "
                "epoch_ms(created_at) FROM maintenance_windows "
                "WHERE ($site IS NULL OR site = $site) "
                "  AND ($at IS NULL OR (starts_at <= make_timestamptz($at::BIGINT * 1000) "
                "                       AND make_timestamptz($at::BIGINT * 1000) < ends_at)) "
                "  AND ($after IS NULL OR ends_at > make_timestamptz($after::BIGINT * 1000)) "
                "ORDER BY starts_at, window_id",
                {"site": site, "at": active_at_ms, "after": ends_after_ms},
            ).fetchall()
        return [MaintenanceWindow(*r) for r in rows]

    # -- helpers -------------------------------------------------------------------------------

    def count(self, table: str) -> int:
        """Row count of a table of this database (tests, health)."""
        with self._reader() as cur:
            known = {
                r[0]
                for r in cur.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
                ).fetchall()
            }
            if table not in known:  # an identifier cannot be a bound parameter: check it instead
                msg = f"no table {table!r}"
                raise ValueError(msg)
            row = cur.execute(f"SELECT count(*) FROM {_ident(table)}").fetchone()
        return int(row[0]) if row else 0

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run a query on a cursor of its own and return all rows (tests, diagnostics)."""
        with self._reader() as cur:
            return cur.execute(query, params).fetchall()

    def snapshot_to(self, path: str | os.PathLike[str]) -> Path:
        """Copy the committed database to a new file for analysts, while the engine keeps running.

        The copy is one consistent snapshot (a single read transaction on its own cursor, so commits
        go on meanwhile), written next to `path` and renamed into place, so an analyst never opens a
        half-written file. An existing file at `path` is replaced.
        """
        target = Path(path).resolve()
        if target == self.path.resolve():
            msg = "snapshot_to needs a path other than the database's own"
            raise ValueError(msg)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        alias = f"snap_{uuid.uuid4().hex}"  # attachments are per database instance: never clash
        cur = self._reader()
        try:
            row = cur.execute("SELECT current_database()").fetchone()
            source = _ident(str(row[0])) if row else "main"
            cur.execute(f"ATTACH ? AS {alias}", [str(tmp)])
            try:
                cur.begin()  # every table from one MVCC snapshot of the source
                cur.execute(f"COPY FROM DATABASE {source} TO {alias}")
                cur.commit()
                cur.execute(f"CHECKPOINT {alias}")
            finally:
                cur.execute(f"DETACH {alias}")
            os.replace(tmp, target)
        except Exception as e:
            for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
                leftover.unlink(missing_ok=True)
            msg = f"snapshot to {target} failed: {e}"
            raise StoreError(msg) from e
        finally:
            cur.close()
        return target
