"""Analytics for the bureau: closure rates, response times, non-responding sites, alarm-load KPIs.

Every report is built from named SQL queries in this module, run against the public tables of product.md
§8. Parameters are always bound (``$since`` ...), never interpolated; the only text spliced into a query
is a fragment chosen from a constant whitelist (the group columns of :func:`closure`). Where DuckDB is slow
at 10 M alarms, the SQL returns one row of integers and timestamps per alarm and numpy finishes: closure
(the state at as_of as bits, counted per group with one bincount; exact quantiles from one sort of
packed group/duration keys instead of a holistic aggregate per group) and load's per-(site, 10-minute
interval) counts (one sort instead of a GROUP BY with about one group per alarm). Text group keys become
integers by a join with the cohort's distinct values (load), or by DuckDB's hash of the value looked up in
numpy (closure: :func:`_hash_table`), read in the same transaction. The closure rows are streamed in
batches and folded in place (page faults on fresh arrays cost as much as the arithmetic). The closure report
done in DuckDB alone (``_CLOSURE_SQL`` with ``quantile_cont``) stays as the fallback and the tests' oracle.

Conventions shared by every report (product.md §9, made exact here):

* **Cohort**: alarms with ``since <= raised_at < until`` *and* ``raised_at <= as_of`` (an alarm raised after
  ``as_of`` did not exist yet at ``as_of``). A reopened alarm (``occurrences > 1``) is one row, counted once,
  with the ``raised_at`` of its first activation. Shelved and suppressed alarms count like any other:
  shelving hides an alarm from the operator, not from the regulator's close-out statistics.
* **State at as_of** uses only timestamps ``<= as_of``: an alarm is *acked* at as_of when
  ``acked_at <= as_of``, *closed* when ``closed_at <= as_of``; a later ack or close is ignored. The
  deadlines are the row's ``ack_due_at`` / ``close_due_at`` (raised_at + the severity's deadlines when it
  was raised); a row written without them falls back to :data:`earlywarn.config.DEFAULT_DEADLINES`.
  Known limit: the row keeps one ``acked_at``; if the lifecycle resets it when an alarm is reactivated,
  an ack made before the reset is not visible.
* **Deadlines are inclusive**: closing at exactly ``close_due_at`` is on time, so an alarm still open at
  ``as_of = close_due_at`` can no longer be on time and is *overdue* (``close_due_at <= as_of``).
* **Times** are bound and returned as UTC; buckets (``day``, ``week`` = ISO week from Monday, ``month``) are
  cut on ``raised_at`` in UTC and returned as the DATE of the bucket's first day.
* **Quantiles** are ``quantile_cont`` (linear interpolation between the two nearest ranks), in seconds.
* **Rates** are NULL when their denominator is 0.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from earlywarn.config import DEFAULT_DEADLINES
from earlywarn.errors import EarlywarnError

__all__ = [
    "BUCKETS",
    "FORMATS",
    "GROUPS",
    "REPORTS",
    "SqlRefused",
    "bad_actors",
    "closure",
    "guarded_connect",
    "load",
    "non_responding",
    "online",
    "parse_time",
    "render",
    "risk",
    "run_sql",
]

GROUPS: tuple[str, ...] = ("site", "plant", "district", "rule", "severity")
BUCKETS: tuple[str, ...] = ("day", "week", "month")
FORMATS: tuple[str, ...] = ("table", "csv", "json", "parquet")

#: Thresholds of the "not responding" and load definitions (domain.md §3c, product.md §6).
ON_TIME_ACK_MIN = 0.90
FLOOD_ALARMS_PER_10MIN = 10
STALE_OPEN_MS = 24 * 3_600_000
TEN_MIN_MS = 600_000
HOUR_MS = 3_600_000
WORST_ALARMS = 5

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SqlRefused(EarlywarnError, ValueError):
    """An analyst's free SQL was refused: not read-only, or it touches files, network or extensions."""


# ---------------------------------------------------------------------------------------------
# Parameters and execution


def _ts(ms: int) -> dt.datetime:
    """Epoch milliseconds -> aware UTC datetime (exact: no float on the way), bound as TIMESTAMPTZ."""
    return _EPOCH + dt.timedelta(milliseconds=int(ms))


def _deadline_params() -> dict[str, int]:
    """Default deadlines, only used for rows written without ack_due_at / close_due_at."""
    out: dict[str, int] = {}
    for sev, d in DEFAULT_DEADLINES.items():
        out[f"{sev.value}_ack_ms"] = int(d.ack_ms)
        out[f"{sev.value}_close_ms"] = int(d.close_ms)
    return out


def _window(since_ms: int, until_ms: int, as_of_ms: int | None = None) -> dict[str, Any]:
    if until_ms <= since_ms:
        msg = f"empty window: until ({until_ms}) must be after since ({since_ms})"
        raise ValueError(msg)
    p: dict[str, Any] = {
        "since": _ts(since_ms),
        "until": _ts(until_ms),
        "since_ms": int(since_ms),
        "until_ms": int(until_ms),
    }
    if as_of_ms is not None:
        p["as_of"] = _ts(as_of_ms)
        p["as_of_ms"] = int(as_of_ms)
    p.update(_deadline_params())
    return p


def _cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of ``con`` in ``con``'s current catalog.

    A cursor keeps the caller's connection free of our result sets (the engine shares its connection);
    a new cursor starts in the default catalog, while the engine's store works in an ATTACHed one.
    """
    [(catalog,)] = con.execute("SELECT current_database()").fetchall()
    cur = con.cursor()
    cur.execute(f'USE "{catalog}"')  # a catalog name from DuckDB itself, not user input
    return cur


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any]) -> pl.DataFrame:
    """Run one named query, binding exactly the parameters it names (DuckDB refuses extra ones)."""
    names = con.extract_statements(sql)[0].named_parameters
    cur = _cursor(con)
    try:
        return _frame(cur.sql(sql, params={k: params[k] for k in names}))
    finally:
        cur.close()


@contextlib.contextmanager
def _snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor (see :func:`_cursor`) inside one transaction: every query on it sees the same snapshot,
    even while the engine writes through ``con``. Reports only read; the transaction is rolled back."""
    cur = _cursor(con)
    try:
        cur.begin()
        yield cur
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.rollback()
        cur.close()


def _run(cur: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any]) -> duckdb.DuckDBPyRelation:
    """One named query on a cursor, binding exactly the parameters it names."""
    names = cur.extract_statements(sql)[0].named_parameters
    return cur.sql(sql, params={k: params[k] for k in names})


def _frame(rel: duckdb.DuckDBPyRelation) -> pl.DataFrame:
    """A query's result as a polars frame, through Arrow.

    DuckDB's counters (``count_if``, ``sum`` of integers) are HUGEINT, which Arrow carries as
    DECIMAL(38, 0); they are turned back into Int64 so that reports hold plain integers.
    """
    out = pl.from_arrow(rel.to_arrow_table())
    assert isinstance(out, pl.DataFrame)
    fix = [
        pl.col(n).cast(pl.Int64) for n, t in out.schema.items() if isinstance(t, pl.Decimal) and t.scale == 0
    ]
    return out.with_columns(fix) if fix else out


# Deadlines of one row: the stored ones, else the defaults for its severity.
_ACK_DUE = """COALESCE(ack_due_at, raised_at + to_milliseconds(CASE severity
    WHEN 'red' THEN $red_ack_ms WHEN 'orange' THEN $orange_ack_ms
    WHEN 'yellow' THEN $yellow_ack_ms ELSE $blue_ack_ms END))"""
_CLOSE_DUE = """COALESCE(close_due_at, raised_at + to_milliseconds(CASE severity
    WHEN 'red' THEN $red_close_ms WHEN 'orange' THEN $orange_close_ms
    WHEN 'yellow' THEN $yellow_close_ms ELSE $blue_close_ms END))"""

_SEV_RANK = "CASE severity WHEN 'red' THEN 0 WHEN 'orange' THEN 1 WHEN 'yellow' THEN 2 ELSE 3 END"

# The per-alarm facts every closure-style report aggregates: cohort filter and state at as_of.
# {extra} is a whitelisted fragment (group keys); everything else is constant. Durations come from
# epoch_us (plain integer arithmetic: epoch_ms and ICU time-zone functions cost 5-10x more at 10 M rows).
_FACTS = (
    """
cohort AS NOT MATERIALIZED (
    SELECT alarm_id, site, plant, district, tag, rule_id, severity, raised_at, acked_at, closed_at,
           disposition, occurrences, chattering{extra},
           coalesce(acked_at <= $as_of, false)  AS is_acked,
           coalesce(closed_at <= $as_of, false) AS is_closed,
           """
    + _ACK_DUE
    + """ AS ack_due,
           """
    + _CLOSE_DUE
    + """ AS close_due
    FROM alarms
    WHERE raised_at >= $since AND raised_at < $until AND raised_at <= $as_of
),
facts AS NOT MATERIALIZED (
    SELECT *,
           NOT is_closed AND close_due <= $as_of              AS is_overdue,
           is_closed OR close_due <= $as_of                   AS is_due,
           is_acked AND acked_at <= ack_due                   AS acked_on_time,
           is_closed AND closed_at <= close_due               AS closed_on_time,
           CASE WHEN is_acked THEN (epoch_us(acked_at) - epoch_us(raised_at)) // 1000 END  AS ack_ms,
           CASE WHEN is_closed THEN (epoch_us(closed_at) - epoch_us(raised_at)) // 1000 END AS close_ms
    FROM cohort
)"""
)

# ---------------------------------------------------------------------------------------------
# closure

_US_PER_DAY = 86_400_000_000
#: Whitelist: group name -> (key expression added to the cohort, key column, output expression, order
#: expressions). Buckets are integer keys while aggregating (cheap) and DATEs in the output.
_GROUP_SQL: dict[str, tuple[str, str, str, str]] = {
    "site": ("", "site", "site", "site"),
    "plant": ("", "plant", "plant", "plant"),
    "district": ("", "district", "district", "district"),
    "rule": (", rule_id AS k_rule", "k_rule", "k_rule AS rule", "k_rule"),
    "severity": ("", "severity", "severity", _SEV_RANK + ", severity"),
    # days since 1970-01-01 (UTC)
    "day": (", epoch_us(raised_at) // 86400000000 AS k_day", "k_day",
            "DATE '1970-01-01' + CAST(k_day AS INTEGER) AS day", "k_day"),
    # ISO weeks (Monday) since Monday 1970-01-05, which is 4 days after the epoch
    "week": (", (epoch_us(raised_at) - 345600000000) // 604800000000 AS k_week", "k_week",
             "DATE '1970-01-05' + CAST(k_week * 7 AS INTEGER) AS week", "k_week"),
    # make_timestamp(µs) is a plain UTC TIMESTAMP: no time-zone lookup per row
    "month": (", date_trunc('month', make_timestamp(epoch_us(raised_at))) AS k_month", "k_month",
              "CAST(k_month AS DATE) AS month", "k_month"),
}  # fmt: skip

# The closure report in DuckDB alone (quantile_cont is a holistic aggregate: slow with many groups).
_CLOSURE_SQL = (
    "WITH"
    + _FACTS
    + """,
agg AS (
    SELECT {keys_comma}
           count(*)                                          AS raised,
           count(*) FILTER (WHERE is_due)                    AS due,
           count(*) FILTER (WHERE NOT is_due)                AS pending,
           count(*) FILTER (WHERE is_closed)                 AS closed,
           count(*) FILTER (WHERE is_due AND acked_on_time)  AS acked_on_time,
           count(*) FILTER (WHERE closed_on_time)            AS closed_on_time,
           count(*) FILTER (WHERE is_overdue)                AS overdue,
           count(*) FILTER (WHERE is_closed AND disposition IN ('false_alarm', 'instrument_fault')) AS false_alarms,
           quantile_cont(ack_ms, [0.5, 0.9])                 AS ack_q,
           quantile_cont(close_ms, [0.5, 0.9])               AS close_q
    FROM facts
    {group_by}
)
SELECT {outputs_comma}
       raised, due, pending, closed,
       closed / nullif(due, 0)                  AS closure_rate,
       acked_on_time,
       acked_on_time / nullif(due, 0)           AS on_time_ack_rate,
       closed_on_time / nullif(due, 0)          AS on_time_close_rate,
       overdue,
       false_alarms / nullif(closed, 0)         AS false_alarm_share,
       ack_q[1] / 1000.0 AS median_ack_s, ack_q[2] / 1000.0 AS p90_ack_s,
       close_q[1] / 1000.0 AS median_close_s, close_q[2] / 1000.0 AS p90_close_s
FROM agg
{order_by}
"""
)

#: The fast path's group codes: per group name, ("dim", column, order) — the column's value ranked among
#: the cohort's distinct values in the report's sort order (a join with that short list, in SQL) — or
#: ("bucket", "", "") — the bucket number of raised_at, computed in numpy (:func:`_bucket_code`).
_GROUP_CODES: dict[str, tuple[str, str, str]] = {
    "site": ("dim", "site", "v"),
    "plant": ("dim", "plant", "v"),
    "district": ("dim", "district", "v"),
    "rule": ("dim", "rule_id", "v"),
    "severity": ("dim", "severity", "CASE v WHEN 'red' THEN 0 WHEN 'orange' THEN 1 WHEN 'yellow' THEN 2 ELSE 3 END, v"),
    "day": ("bucket", "", ""),
    "week": ("bucket", "", ""),
    "month": ("bucket", "", ""),
}  # fmt: skip

_COHORT_WHERE = "raised_at >= $since AND raised_at < $until AND raised_at <= $as_of"

# The distinct values of one group column over the cohort, in the report's order ({column}, {order}
# from _GROUP_CODES), each with DuckDB's hash of it.
_CLOSURE_DIM_SQL = (
    "SELECT v, hash(v) AS h FROM (SELECT DISTINCT {column} AS v FROM alarms WHERE "
    + _COHORT_WHERE
    + ") ORDER BY {order}"
)

# The cohort's distinct dispositions with their hashes (a few rows: DuckDB answers from the dictionaries).
_CLOSURE_DISPOSITIONS_SQL = (
    "SELECT v, hash(v) AS h FROM (SELECT DISTINCT disposition AS v FROM alarms WHERE " + _COHORT_WHERE + ")"
)

# The cohort's size and first and last raise (µs): the rows are counted into arrays sized up front, and the
# bucket numbers' range is known before the first row.
_CLOSURE_EXTENT_SQL = (
    "SELECT count(*), epoch_us(min(raised_at)), epoch_us(max(raised_at)) FROM alarms WHERE " + _COHORT_WHERE
)

# Whether any row of the cohort was written without its deadlines (usually answered from the statistics).
_CLOSURE_DUES_MISSING_SQL = (
    "SELECT count(*) FROM alarms WHERE " + _COHORT_WHERE + " AND (ack_due_at IS NULL OR close_due_at IS NULL)"
)

# One row per alarm of the cohort: its group codes ({codes}) and the raw times the state at as_of needs.
# The per-alarm logic (acked / closed by as_of, on time, due, overdue, durations) runs in numpy
# (_closure_from_rows): as SQL expressions it cost more than the scan.
#
# A text group key arrives as ``hash(column) % $d0_p`` (a code in numpy's lookup table, :func:`_hash_table`):
# DuckDB hashes a dictionary-compressed string column once per dictionary entry, so this costs a fraction of
# a join with the distinct values (which stays, {joins}, for keys whose hashes cannot be told apart that
# way). The disposition arrives as its hash too (compared in numpy with those of the false dispositions,
# known to differ from every other disposition of the cohort), unless {false_alarm} is the string test.
# Deadlines are the stored columns ({ack_due}, {close_due}) unless a row of the cohort lacks them; never
# acked / closed (NULL) becomes +infinity in numpy.
_CLOSURE_ROWS_SQL = (
    """
SELECT {codes}
       raised_at, acked_at, closed_at, {ack_due} AS ack_due, {close_due} AS close_due,
       {false_alarm} AS false_alarm
FROM alarms{joins}
WHERE """
    + _COHORT_WHERE
    + "\n"
)
_CLOSURE_FALSE_ALARM_HASH = "hash(disposition)"
_CLOSURE_FALSE_ALARM_TEST = "coalesce(disposition IN ('false_alarm', 'instrument_fault'), false)"
_FALSE_DISPOSITIONS = ("false_alarm", "instrument_fault")
_CLOSURE_DIM_HASH = "hash(alarms.{column}) % CAST(${d}_p AS UBIGINT) AS g{i}, "
_CLOSURE_DIM_JOIN = (
    "\nJOIN (SELECT unnest(${d}) AS v, (generate_subscripts(${d}, 1) - 1)::INTEGER AS c) {d} ON {d}.v = alarms.{column}"
)
def _false_alarm_hashes(dispositions: Sequence[tuple[str | None, int]]) -> np.ndarray | None:
    """The hashes of the false dispositions among the cohort's (disposition, hash) pairs; None when one of
    them shares its hash with another disposition of the cohort (then the strings are compared)."""
    false_h = {h for v, h in dispositions if v in _FALSE_DISPOSITIONS}
    if false_h & {h for v, h in dispositions if v not in _FALSE_DISPOSITIONS}:
        return None
    return np.array(sorted(false_h), dtype=np.uint64)


#: Largest lookup table of :func:`_hash_table` (int32 entries).
_MAX_HASH_TABLE = 1 << 23


def _hash_table(hashes: Sequence[int]) -> tuple[int, np.ndarray] | None:
    """A modulus ``p`` and a table ``t`` with ``t[h % p] == i`` for the i-th of ``hashes`` (distinct
    DuckDB hashes of distinct values); None when there is none small enough (or two values share a hash).

    A random set of n hashes has no collision mod p with probability about exp(-n^2 / 2p): the search
    starts at n^2 / 4 (about one modulus in eight works) and grows the table fourfold after 64 misses.
    """
    h = np.array(hashes, dtype=np.uint64)
    n = len(h)
    if n == 0 or len(np.unique(h)) != n:
        return None
    size = max(n * n // 4, 64)
    while size <= _MAX_HASH_TABLE:
        for p in range(size | 1, min(size + 128, _MAX_HASH_TABLE + 1), 2):
            slots = np.sort(h % np.uint64(p))
            if not (slots[1:] == slots[:-1]).any():
                slots = h % np.uint64(p)
                table = np.full(p, -1, dtype=np.int32)
                table[slots.astype(np.int64)] = np.arange(n, dtype=np.int32)
                return p, table
        size *= 4
    return None


CLOSURE_COLUMNS: tuple[str, ...] = (
    "raised", "due", "pending", "closed", "closure_rate", "acked_on_time", "on_time_ack_rate",
    "on_time_close_rate", "median_ack_s", "p90_ack_s", "median_close_s", "p90_close_s", "overdue",
    "false_alarm_share",
)  # fmt: skip


#: Tests set this to compare the numpy path with the report done in DuckDB alone (_closure_sql).
_SQL_QUANTILES = False
_NONE = -(2**63) + 1  # "no duration" sentinel, below any real one
_INFINITY = 2**63 - 1  # never acked / closed: DuckDB's 'infinity'::TIMESTAMPTZ in µs


def _group_quantiles(
    gid: np.ndarray, values: np.ndarray, n_groups: int, unit: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``quantile_cont`` at 0.5 and 0.9 of ``values // unit`` (ms; :data:`_NONE` = no value) per
    group, in seconds; NaN for a group without values.

    Same definition as DuckDB's: position ``(n - 1) q``, linear interpolation between its floor and
    ceiling ranks. DuckDB's holistic aggregate costs ~50 ns per value and group state (4-5 s for ack and
    close over 10 M alarms on two cores); one sort of packed (group, value) integers costs a fraction.
    Each group's values end up contiguous and ordered; :data:`_NONE` packs as the largest value, after
    every real one, so no filtering pass is needed, and two binary searches find each group's bounds.
    ``// unit`` (truncating, as DuckDB's) keeps the order, so it is applied to the chosen values only.
    """
    valid = values != _NONE
    v_max = int(values.max()) if values.size else _NONE  # _NONE is below every real value
    bits = (v_max + 1).bit_length() if v_max >= 0 else 64
    if int(n_groups).bit_length() + bits <= 63 and np.min(values, where=valid, initial=0) >= 0:
        key = np.where(valid, values, (1 << bits) - 1)
        key |= gid << bits
        return _packed_quantiles(key, bits, n_groups, unit)
    # no value, a negative duration (clock skew) or huge ones: filter, then sort by (group, value)
    g, v = gid[valid], values[valid]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    return _quantiles_sorted(v[np.lexsort((v, g))], -1, starts, counts, unit)


def _packed_quantiles(key: np.ndarray, bits: int, n_groups: int, unit: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_group_quantiles` from packed keys ``group << bits | value`` (value ``2**bits - 1``: none),
    sorted here in place."""
    top = (1 << bits) - 1  # above every value
    key.sort()
    first = np.arange(n_groups, dtype=np.int64) << bits
    starts = np.searchsorted(key, first)
    counts = np.searchsorted(key, first | top) - starts
    return _quantiles_sorted(key, top, starts, counts, unit)


def _quantiles_sorted(
    key: np.ndarray, key_mask: int, starts: np.ndarray, counts: np.ndarray, unit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Median and p90 per group from each group's values, ascending at ``key[starts:starts + counts]``
    (``& key_mask``)."""
    n_groups = len(counts)
    has = counts > 0
    out = []
    for q in (0.5, 0.9):
        pos = (counts - 1) * q
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, counts - 1)
        if key.size == 0:
            out.append(np.full(n_groups, np.nan))
            continue
        v_lo = _div_toward_zero(key[np.where(has, starts + lo, 0)] & key_mask, unit).astype(np.float64)
        v_hi = _div_toward_zero(key[np.where(has, starts + hi, 0)] & key_mask, unit).astype(np.float64)
        out.append(np.where(has, (v_lo + (v_hi - v_lo) * (pos - lo)) / 1000.0, np.nan))
    return out[0], out[1]


def _unpack_keys(keys: np.ndarray, bits: int) -> None:
    """Packed quantile keys (see :func:`_closure_from_rows`) back to µs, :data:`_NONE` for none, in place."""
    top = (1 << bits) - 1
    keys &= top
    keys[keys == top] = _NONE


#: Rows per batch of the closure scan (and per step of in-place passes): 8 MB per int64 column.
_CHUNK_ROWS = 1 << 20


def _quantiles_in_place(
    gid: np.ndarray, values: np.ndarray, span: list[int], n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_group_quantiles` of ``values`` (µs, :data:`_NONE` = none; real ones within ``span``) in
    whole ms, packing the keys into ``values`` itself (overwritten) when they fit."""
    lo, hi = span
    bits = max(1, (hi + 1).bit_length())
    if lo < 0 or int(n_groups).bit_length() + bits > 63:
        return _group_quantiles(gid, values, n_groups, 1000)
    top = (1 << bits) - 1
    for s in range(0, len(values), _CHUNK_ROWS):
        v = values[s : s + _CHUNK_ROWS]
        np.copyto(v, top, where=v == _NONE)
        v |= np.left_shift(gid[s : s + _CHUNK_ROWS], bits)
    return _packed_quantiles(values, bits, n_groups, 1000)


def _div_toward_zero(a: np.ndarray, d: int) -> np.ndarray:
    """``a // d`` truncated toward 0, as DuckDB's integer ``//`` (numpy's floors)."""
    if d == 1:
        return a
    q = a // d
    if a.size and a.min() < 0:
        neg = (a < 0) & (q * d != a)
        q[neg] += 1
    return q


def _check_groups(by: Sequence[str]) -> tuple[str, ...]:
    by = tuple(by)
    for name in by:
        if name not in _GROUP_SQL:
            msg = f"cannot group by {name!r}: choose from {', '.join(GROUPS + BUCKETS)}"
            raise ValueError(msg)
    if len(set(by)) != len(by):
        msg = f"a group is named twice in {list(by)}"
        raise ValueError(msg)
    if sum(name in BUCKETS for name in by) > 1:
        msg = f"at most one time bucket ({'|'.join(BUCKETS)}), got {list(by)}"
        raise ValueError(msg)
    return by


def closure(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ms: int,
    until_ms: int,
    as_of_ms: int,
    by: Sequence[str] = (),
) -> pl.DataFrame:
    """Closure report (product.md §9): one row per group of the cohort, columns :data:`CLOSURE_COLUMNS`.

    ``by`` names any of :data:`GROUPS` (``rule`` is the ``rule_id``) and at most one bucket of
    :data:`BUCKETS`; group columns come first, in the order given, rows sorted by them (severity by rank,
    red first). A group with no alarm raised does not appear. Without ``by`` there is exactly one row, the
    total, even when the cohort is empty (counts 0, rates and quantiles NULL).

    ``due`` = closed at as_of, or open and ``close_due_at <= as_of``; ``pending = raised - due``;
    ``acked_on_time`` counts due alarms acked by as_of at or before ``ack_due_at``; ``on_time_close_rate``
    counts alarms closed by as_of at or before ``close_due_at``, over due; ack and close times are over the
    alarms acked / closed by as_of (pending ones included), ``quantile_cont`` of whole milliseconds, in seconds;
    ``false_alarm_share`` = closed with disposition ``false_alarm`` or ``instrument_fault`` over closed.
    """
    by = _check_groups(by)
    params = _window(since_ms, until_ms, as_of_ms) | {"none": _NONE}
    if _SQL_QUANTILES:
        return _closure_sql(con, by, params)
    with _snapshot(con) as cur:  # the distinct values and the rows from one snapshot of a live store
        dims: dict[str, list[str]] = {}
        tables: dict[int, np.ndarray] = {}  # key position -> lookup table of its hash codes
        codes, joins = [], []
        binds: dict[str, Any] = {}
        for i, name in enumerate(by):
            kind, expr, order = _GROUP_CODES[name]
            if kind == "dim":
                d = f"d{len(dims)}"
                pairs = _run(cur, _CLOSURE_DIM_SQL.format(column=expr, order=order), params).fetchall()
                dims[d] = [v for v, _ in pairs]
                found = _hash_table([h for _, h in pairs]) if pairs else None
                if found is not None:
                    binds[f"{d}_p"], tables[i] = found
                    codes.append(_CLOSURE_DIM_HASH.format(column=expr, d=d, i=i))
                else:
                    binds[d] = dims[d]
                    codes.append(f"{d}.c AS g{i}, ")
                    joins.append(_CLOSURE_DIM_JOIN.format(d=d, column=expr))
        if any(not v for v in dims.values()):  # an empty cohort (and no value to code)
            out = _closure_from_rows(iter(()), 0, (0, 0), by, list(dims.values()), as_of_ms)
            return _closure_sql(con, by, params) if out is None else out
        false_hashes = _false_alarm_hashes(_run(cur, _CLOSURE_DISPOSITIONS_SQL, params).fetchall())
        hashed = false_hashes is not None
        [(missing,)] = _run(cur, _CLOSURE_DUES_MISSING_SQL, params).fetchall()
        [(n, first_us, last_us)] = _run(cur, _CLOSURE_EXTENT_SQL, params).fetchall()
        sql = _CLOSURE_ROWS_SQL.format(
            codes="".join(codes), joins="".join(joins),
            ack_due=_ACK_DUE if missing else "ack_due_at",
            close_due=_CLOSE_DUE if missing else "close_due_at",
            false_alarm=_CLOSURE_FALSE_ALARM_HASH if hashed else _CLOSURE_FALSE_ALARM_TEST,
        )  # fmt: skip
        # streamed: each batch is folded into the per-alarm arrays and let go (materializing the whole
        # result first costs more in page faults than the folding itself)
        batches = _run(cur, sql, params | binds).to_arrow_reader(_CHUNK_ROWS) if n else iter(())
        out = _closure_from_rows(
            batches, n, (first_us or 0, last_us or 0), by, list(dims.values()), as_of_ms, tables, false_hashes
        )
    return _closure_sql(con, by, params) if out is None else out


#: Above this many possible groups (the product of the keys' ranges), group numbers are compacted with a
#: sort first; above _MAX_PACKED_BINS, the states are counted one flag at a time instead of in one bincount.
_MAX_DIRECT_GROUPS = 1 << 22
_MAX_PACKED_BINS = 1 << 24
# State of one alarm at as_of as bits (one bincount of group * 32 + state counts every flag per group).
_ACKED_ON_TIME, _CLOSED, _OVERDUE, _CLOSED_ON_TIME, _FALSE_ALARM = 1, 2, 4, 8, 16
_US_PER_WEEK = 7 * _US_PER_DAY
_FIRST_MONDAY_US = 4 * _US_PER_DAY  # 1970-01-05


def _bucket_code(name: str, raised_us: np.ndarray) -> np.ndarray:
    """Bucket number of each raise time: the same day and week numbers as _GROUP_SQL; months since 1970-01."""
    if name == "day":
        return _div_toward_zero(raised_us, _US_PER_DAY)
    if name == "week":
        return _div_toward_zero(raised_us - _FIRST_MONDAY_US, _US_PER_WEEK)
    return raised_us.view("datetime64[us]").astype("datetime64[M]").view(np.int64)  # calendar months


def _bucket_days(name: str, code: np.ndarray) -> np.ndarray:
    """The first day of bucket ``code`` (see :func:`_bucket_code`) in days since 1970-01-01."""
    if name == "day":
        return code
    if name == "week":
        return 4 + 7 * code
    return code.astype("datetime64[M]").astype("datetime64[D]").view(np.int64)


def _closure_from_rows(
    batches: Iterable[pa.RecordBatch],
    n: int,
    raised_range: tuple[int, int],
    by: tuple[str, ...],
    dim_values: list[list[str]],
    as_of_ms: int,
    tables: Mapping[int, np.ndarray] | None = None,
    false_hashes: np.ndarray | None = None,
) -> pl.DataFrame | None:
    """The closure report from the ``n`` rows of :data:`_CLOSURE_ROWS_SQL` (raised between
    ``raised_range``, µs, inclusive); None if it cannot (then DuckDB groups).

    ``tables[i]``: the lookup table of key ``i`` when it arrives as a hash code (see :func:`_hash_table`);
    ``false_hashes``: the hashes of the false dispositions when ``false_alarm`` arrives as a hash. Each batch
    is folded into four arrays (group number, state bits, µs to ack and to close) written in place, so
    that a report touches little fresh memory: at 10 M rows, page faults on new arrays cost as much as the
    arithmetic.
    """
    as_of = int(as_of_ms) * 1000
    tables = tables or {}
    # group number: the keys' codes in mixed radix, first key most significant, so that ascending group
    # numbers are the report's row order
    spans: list[int] = []
    lows: list[int] = []
    dims = iter(dim_values)
    for name in by:
        if _GROUP_CODES[name][0] == "dim":
            lo, span = 0, max(1, len(next(dims)))  # no value: an empty cohort
        elif n:  # bucket numbers grow with the raise time
            first, last = _bucket_code(name, np.array(raised_range, dtype=np.int64)).tolist()
            lo, span = first, last - first + 1
        else:
            lo, span = 0, 1
        spans.append(span)
        lows.append(lo)
        if math.prod(spans) >= 2**62:
            return None  # too many possible groups for one int64: let DuckDB group
    n_possible = math.prod(spans)

    gid = np.empty(n, dtype=np.int64)
    state = np.empty(n, dtype=np.uint8)
    # Per side (ack, close), one int64 per alarm. Packed: the quantile sort keys themselves, group << bits |
    # µs from the raise (2**bits - 1: not acked / closed by as_of), possible when the group numbers are final
    # and both fit (a done duration is at most as_of - the first raise); raw: the µs, else _NONE. A side
    # turns raw if a duration is negative (clock skew): the keys written so far are unpacked.
    bits = max(1, (as_of - raised_range[0] + 1).bit_length()) if n else 1
    can_pack = n_possible <= _MAX_DIRECT_GROUPS and n_possible.bit_length() + bits <= 63
    sides = {"ack": np.empty(n, dtype=np.int64), "close": np.empty(n, dtype=np.int64)}
    packed = dict.fromkeys(sides, can_pack)
    at = 0
    for batch in batches:
        m = batch.num_rows
        if at + m > n:
            return None  # more rows than counted: cannot happen in one snapshot
        part = slice(at, at + m)

        def col(name: str, batch: pa.RecordBatch = batch) -> np.ndarray:
            a = batch.column(name)
            if pa.types.is_timestamp(a.type):
                a = a.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())  # µs since the epoch, no copy
                if a.null_count:
                    a = pc.fill_null(a, _INFINITY)  # never acked / closed
            return a.to_numpy(zero_copy_only=False)

        raised = col("raised_at")
        g_out = gid[part]
        if not by:
            g_out.fill(0)
        for i, (name, span, lo) in enumerate(zip(by, spans, lows, strict=True)):
            if _GROUP_CODES[name][0] == "dim":
                g = col(f"g{i}")
                if i in tables:
                    g = tables[i][g]
                    if m and g.min() < 0:
                        return None  # a value not among the distinct ones: cannot happen in one snapshot
                else:
                    g = g.astype(np.int64, copy=False)
            else:
                g = _bucket_code(name, raised)
            if i == 0:
                np.copyto(g_out, g)
            else:
                g_out *= span
                g_out += g
            if lo:
                g_out -= lo
        high = np.left_shift(g_out, bits) if can_pack else None

        acked, ack_due = col("acked_at"), col("ack_due")  # never acked: +infinity
        is_acked = acked <= as_of
        st = state[part]
        np.multiply((is_acked & (acked <= ack_due)).view(np.uint8), np.uint8(_ACKED_ON_TIME), out=st)

        closed, close_due = col("closed_at"), col("close_due")
        is_closed = closed <= as_of
        st |= is_closed.view(np.uint8) * np.uint8(_CLOSED)
        st |= (~is_closed & (close_due <= as_of)).view(np.uint8) * np.uint8(_OVERDUE)
        st |= (is_closed & (closed <= close_due)).view(np.uint8) * np.uint8(_CLOSED_ON_TIME)
        false_alarm = col("false_alarm")
        if false_hashes is not None:  # the disposition's hash: one comparison per false one
            hashes, false_alarm = false_alarm, np.zeros(m, dtype=bool)
            for h in false_hashes:
                false_alarm |= hashes == h
        st |= (is_closed & false_alarm).view(np.uint8) * np.uint8(_FALSE_ALARM)

        for side, done_at, done in (("ack", acked, is_acked), ("close", closed, is_closed)):
            out = sides[side][part]
            np.subtract(done_at, raised, out=out)  # meaningless (may wrap) where not done: replaced
            if packed[side]:
                np.copyto(out, (1 << bits) - 1, where=~done)
                if m and out.min() >= 0:
                    out |= high
                    continue
                packed[side] = False  # a negative duration: unpack what came before, go on raw
                _unpack_keys(sides[side][:at], bits)
            np.copyto(out, _NONE, where=~done)
        at += m
    if at != n:
        return None  # fewer rows than counted: cannot happen in one snapshot

    group_keys = None
    n_groups = n_possible
    if n_possible > _MAX_DIRECT_GROUPS:
        group_keys, inverse = np.unique(gid, return_inverse=True)
        gid, n_groups = inverse.astype(np.int64).reshape(-1), len(group_keys)

    def quantiles(side: str) -> tuple[np.ndarray, np.ndarray]:
        values = sides[side]
        if packed[side]:
            return _packed_quantiles(values, bits, n_groups, 1000)
        real = values[values != _NONE]
        span = [int(real.min()), int(real.max())] if real.size else [0, -1]
        return _quantiles_in_place(gid, values, span, n_groups)

    # the acks and the closes are independent: two threads (numpy lets go of the GIL on large arrays)
    with ThreadPoolExecutor(max_workers=2) as pool:
        ack, close = pool.submit(quantiles, "ack"), pool.submit(quantiles, "close")
        (med_ack, p90_ack), (med_close, p90_close) = ack.result(), close.result()
    ack_us = sides["ack"]

    by_state = None
    if n_groups * 32 <= _MAX_PACKED_BINS:
        codes = np.multiply(gid, 32, out=ack_us)  # its keys are spent
        codes += state
        by_state = np.bincount(codes, minlength=n_groups * 32).reshape(n_groups, 32)
        raised_n = by_state.sum(axis=1)
    else:
        raised_n = np.bincount(gid, minlength=n_groups)

    def per_group(bit: int, *, also: int = 0) -> np.ndarray:
        """Alarms per group with state bit `bit` (and, if given, any of the bits `also`) set."""
        if by_state is not None:
            sel = [s for s in range(32) if s & bit and (not also or s & also)]
            return by_state[:, sel].sum(axis=1)
        mask = (state & bit).astype(bool)
        if also:
            mask &= (state & also).astype(bool)
        return np.bincount(gid[mask], minlength=n_groups)

    # the groups that have alarms (without keys: the one total row, even when empty), in key order
    keep = np.flatnonzero(raised_n > 0) if by else np.zeros(1, dtype=np.int64)
    keys = keep if group_keys is None else group_keys[keep]
    out: dict[str, pl.Series] = {}
    dims = iter(dim_values)
    stride = n_possible
    for name, span, lo in zip(by, spans, lows, strict=True):
        stride //= span
        digit = keys // stride % span + lo
        if _GROUP_CODES[name][0] == "dim":
            out[name] = pl.Series(name, next(dims), dtype=pl.String).gather(digit)
        else:
            out[name] = pl.Series(name, _bucket_days(name, digit), dtype=pl.Int32).cast(pl.Date)
    closed_n, overdue = per_group(_CLOSED)[keep], per_group(_OVERDUE)[keep]
    due = closed_n + overdue
    counts = {
        "raised": raised_n[keep], "due": due, "pending": raised_n[keep] - due, "closed": closed_n,
        "acked_on_time": per_group(_ACKED_ON_TIME, also=_CLOSED | _OVERDUE)[keep],  # due and acked on time
        "closed_on_time": per_group(_CLOSED_ON_TIME)[keep], "overdue": overdue,
        "false_alarms": per_group(_FALSE_ALARM)[keep],
    }  # fmt: skip
    quantiles = {
        "median_ack_s": med_ack[keep], "p90_ack_s": p90_ack[keep],
        "median_close_s": med_close[keep], "p90_close_s": p90_close[keep],
    }  # fmt: skip
    df = pl.DataFrame(
        out | {k: pl.Series(k, v, dtype=pl.Int64) for k, v in counts.items()}
        | {k: pl.Series(k, v, dtype=pl.Float64, nan_to_null=True) for k, v in quantiles.items()}
    )

    def rate(num: str, den: str) -> pl.Expr:
        return pl.when(pl.col(den) != 0).then(pl.col(num) / pl.col(den))

    return df.with_columns(
        rate("closed", "due").alias("closure_rate"),
        rate("acked_on_time", "due").alias("on_time_ack_rate"),
        rate("closed_on_time", "due").alias("on_time_close_rate"),
        rate("false_alarms", "closed").alias("false_alarm_share"),
    ).select(*by, *CLOSURE_COLUMNS)


def _closure_sql(con: duckdb.DuckDBPyConnection, by: tuple[str, ...], params: Mapping[str, Any]) -> pl.DataFrame:
    """The closure report in DuckDB alone (:data:`_CLOSURE_SQL`): the numpy path's oracle in the tests, and
    its fallback when the group keys' ranges do not fit one int64."""
    keys = [_GROUP_SQL[g][1] for g in by]
    sql = _CLOSURE_SQL.format(
        extra="".join(_GROUP_SQL[g][0] for g in by),
        keys_comma="".join(f"{k}, " for k in keys),
        outputs_comma="".join(f"{_GROUP_SQL[g][2]}, " for g in by),
        group_by=("GROUP BY " + ", ".join(keys)) if keys else "",
        order_by=("ORDER BY " + ", ".join(_GROUP_SQL[g][3] for g in by)) if keys else "",
    )
    return _query(con, sql, params).select(*by, *CLOSURE_COLUMNS)


# ---------------------------------------------------------------------------------------------
# non_responding

_NON_RESPONDING_SQL = (
    "WITH"
    + _FACTS.format(extra="")
    + """,
per_site AS (
    SELECT site,
           any_value(plant)                                            AS plant,
           any_value(district)                                         AS district,
           count(*)                                                    AS raised,
           count(*) FILTER (WHERE is_due)                                            AS due,
           count(*) FILTER (WHERE is_overdue)                                        AS overdue,
           count(*) FILTER (WHERE is_overdue AND severity IN ('red', 'orange'))      AS overdue_red_orange,
           count(*) FILTER (WHERE is_due AND acked_on_time)                          AS acked_on_time,
           -- worst first: overdue red/orange, then by severity, then the oldest
           list(alarm_id ORDER BY (is_overdue AND severity IN ('red', 'orange')) DESC, """
    + _SEV_RANK
    + """,
                raised_at, alarm_id)
               FILTER (WHERE is_overdue OR (is_due AND NOT acked_on_time)) AS missed
    FROM facts
    GROUP BY site
)
SELECT site, plant, district, raised, due, overdue, overdue_red_orange, acked_on_time,
       acked_on_time / nullif(due, 0) AS on_time_ack_rate,
       list_filter([
           CASE WHEN overdue_red_orange > 0
                THEN overdue_red_orange || ' overdue red/orange alarm(s)' END,
           CASE WHEN acked_on_time / nullif(due, 0) < $ack_min
                THEN 'on-time ack rate ' || round(100 * acked_on_time / due, 1) || '% < '
                     || round(100 * $ack_min, 1) || '%' END
       ], lambda r: r IS NOT NULL)                                 AS reasons,
       coalesce(missed[1:$worst], [])                              AS worst_alarms
FROM per_site
WHERE overdue_red_orange > 0 OR acked_on_time / nullif(due, 0) < $ack_min
ORDER BY overdue_red_orange DESC, on_time_ack_rate ASC NULLS LAST, site
"""
)


def non_responding(
    con: duckdb.DuckDBPyConnection, *, since_ms: int, until_ms: int, as_of_ms: int
) -> pl.DataFrame:
    """Sites not responding in time (domain.md §3c): any overdue red/orange alarm, or on-time ack rate < 90 %.

    Over the closure cohort and as-of rules. ``reasons`` lists which test(s) failed; ``worst_alarms`` holds up
    to 5 ids among the site's alarms that missed a deadline (overdue, or due and not acked on time), overdue
    red/orange first, then by severity, then oldest. A site with no due alarm has no ack rate and is listed
    only for an overdue red/orange alarm (which makes it due, so never). Sorted worst first.
    """
    p = _window(since_ms, until_ms, as_of_ms) | {"ack_min": ON_TIME_ACK_MIN, "worst": WORST_ALARMS}
    return _query(con, _NON_RESPONDING_SQL, p)


# ---------------------------------------------------------------------------------------------
# bad_actors

_BAD_ACTORS_SQL = """
WITH cohort AS (
    SELECT rule_id, tag, site, occurrences, chattering, raised_at,
           -- how long it stayed active, judged at as_of (a later clear is not known yet)
           epoch_ms(CASE WHEN cleared_at IS NOT NULL AND cleared_at <= $as_of THEN cleared_at ELSE $as_of END)
             - epoch_ms(raised_at) AS active_ms
    FROM alarms
    WHERE raised_at >= $since AND raised_at < $until AND raised_at <= $as_of
), total AS (SELECT count(*) AS n FROM cohort)
SELECT rule_id AS rule, tag,
       count(DISTINCT site)                      AS sites,
       count(*)                                  AS alarms,
       count(*) / any_value(total.n)             AS share,
       sum(occurrences)::BIGINT                  AS activations,
       count(*) FILTER (WHERE chattering)                      AS chattering,
       count(*) FILTER (WHERE active_ms >= $standing_ms)       AS standing
FROM cohort, total
GROUP BY rule_id, tag
ORDER BY alarms DESC, chattering DESC, standing DESC, rule, tag
LIMIT $limit
"""


def bad_actors(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ms: int,
    until_ms: int,
    limit: int = 20,
    as_of_ms: int | None = None,
) -> pl.DataFrame:
    """Top bad actors (EEMUA 191): the (rule, tag) pairs with the most alarms raised in the window.

    ``alarms`` counts alarm rows (a reopened alarm once), ``share`` their part of all alarms of the window,
    ``activations`` the sum of ``occurrences`` (reactivations included), ``sites`` how many sites raised it,
    ``chattering`` the alarms flagged chattering (product.md §6), ``standing`` the alarms that stayed
    active (not cleared) for 24 h or more, judged at ``as_of_ms`` (default ``until_ms``). Sorted by alarms,
    then chattering, then standing.
    """
    if limit < 1:
        msg = f"limit must be at least 1, got {limit}"
        raise ValueError(msg)
    as_of = until_ms if as_of_ms is None else as_of_ms
    p = _window(since_ms, until_ms, as_of) | {"limit": int(limit), "standing_ms": STALE_OPEN_MS}
    return _query(con, _BAD_ACTORS_SQL, p)


# ---------------------------------------------------------------------------------------------
# load

# Per site: the counts of load() that need no per-interval grouping, and the site's number (its rank by
# name among the sites of the window) that _LOAD_ROWS_SQL binds.
_LOAD_SITES_SQL = """
WITH by_severity AS (
    -- (site, severity) first: a few groups per site, and each row's severity is compared once per group
    -- instead of four times per alarm
    SELECT site, severity, any_value(plant) AS plant, any_value(district) AS district, count(*) AS n
    FROM alarms
    WHERE raised_at >= $since AND raised_at < $until AND raised_at <= $as_of
    GROUP BY site, severity
), mix AS (
    SELECT site, any_value(plant) AS plant, any_value(district) AS district, sum(n)::BIGINT AS alarms,
           coalesce(sum(n) FILTER (WHERE severity = 'red'), 0)::BIGINT      AS red,
           coalesce(sum(n) FILTER (WHERE severity = 'orange'), 0)::BIGINT   AS orange,
           coalesce(sum(n) FILTER (WHERE severity = 'yellow'), 0)::BIGINT   AS yellow,
           coalesce(sum(n) FILTER (WHERE severity = 'blue'), 0)::BIGINT     AS blue
    FROM by_severity
    GROUP BY site
), stale AS (
    -- standing alarms at as_of over all history, not only the window: an alarm raised last month and
    -- still open is the worst kind of stale
    SELECT site, any_value(plant) AS plant, any_value(district) AS district, count(*) AS stale_open_24h
    FROM alarms
    WHERE raised_at < $as_of - to_milliseconds($stale_ms)
      AND (closed_at IS NULL OR closed_at > $as_of)
    GROUP BY site
)
SELECT coalesce(mix.site, stale.site)                        AS site,
       coalesce(mix.plant, stale.plant)                      AS plant,
       coalesce(mix.district, stale.district)                AS district,
       coalesce(mix.alarms, 0)                               AS alarms,
       coalesce(mix.alarms, 0) * $ten_min_ms / ($until_ms - $since_ms)  AS avg_per_10min,
       coalesce(mix.alarms, 0) * $hour_ms / ($until_ms - $since_ms)     AS avg_per_hour,
       coalesce(stale.stale_open_24h, 0)                     AS stale_open_24h,
       mix.red / mix.alarms                                  AS red_share,
       mix.orange / mix.alarms                               AS orange_share,
       mix.yellow / mix.alarms                               AS yellow_share,
       mix.blue / mix.alarms                                 AS blue_share,
       CASE WHEN mix.site IS NOT NULL
            THEN row_number() OVER (PARTITION BY mix.site IS NOT NULL ORDER BY mix.site) - 1 END AS sid
FROM mix
FULL OUTER JOIN stale ON stale.site = mix.site
ORDER BY site
"""

# Per alarm of the window: its site number (rank among the window's sites, bound as $sites in
# _LOAD_SITES_SQL's order) and its raise time; the 10-minute interval is computed in numpy. Counting equal
# (site, interval) keys in numpy on sorted integers takes a fraction of a DuckDB GROUP BY with ~one group
# per alarm (3-4 s at 10 M alarms on two cores).
_LOAD_ROWS_SQL = """
SELECT s.sid, raised_at
FROM alarms
JOIN (SELECT unnest($sites) AS site, (generate_subscripts($sites, 1) - 1)::INTEGER AS sid) s USING (site)
WHERE raised_at >= $since AND raised_at < $until AND raised_at <= $as_of
"""

LOAD_COLUMNS: tuple[str, ...] = (
    "site", "plant", "district", "alarms", "avg_per_10min", "max_per_10min", "avg_per_hour", "max_per_hour",
    "flood_intervals", "flood_share", "stale_open_24h", "red_share", "orange_share", "yellow_share",
    "blue_share",
)  # fmt: skip


def _interval_counts(sid: np.ndarray, raised_us: np.ndarray, since_us: int, n_sites: int) -> pl.DataFrame:
    """Per site number: busiest 10-minute interval, busiest hour, intervals in flood (> 10 alarms).

    Intervals are aligned on ``since_us``. Each alarm becomes one integer, site x stride + interval, with
    ``stride`` a multiple of 6 so that key // 6 numbers the hours and stays sorted; one sort of the keys,
    then run lengths of equal keys are the counts, and binary searches find each site's runs.
    """
    schema = {"sid": pl.Int64, "max_per_10min": pl.Int64, "max_per_hour": pl.Int64, "flood_intervals": pl.Int64}
    if sid.size == 0:
        return pl.DataFrame(schema=schema)
    slot = raised_us - since_us  # >= 0: the window starts at since
    slot //= TEN_MIN_MS * 1000
    stride = -(-(int(slot.max()) + 1) // 6) * 6
    dtype = np.int32 if n_sites * stride < 2**31 else np.int64  # int32 sorts ~2x faster
    key = sid.astype(dtype) * dtype(stride)
    key += slot.astype(dtype)
    key.sort()
    site_first = np.arange(n_sites, dtype=np.int64) * stride

    def runs(k: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Length of each run of equal values of sorted `k`, and the index of each site's first run."""
        change = np.empty(k.size, dtype=bool)
        change[0] = True
        np.not_equal(k[1:], k[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        return np.diff(starts, append=k.size), np.searchsorted(k[starts], first)

    per_slot, site_runs = runs(key, site_first)
    key //= 6
    per_hour, site_hours = runs(key, site_first // 6)
    return pl.DataFrame(
        {
            "sid": np.arange(n_sites),
            "max_per_10min": np.maximum.reduceat(per_slot, site_runs),
            "max_per_hour": np.maximum.reduceat(per_hour, site_hours),
            "flood_intervals": np.add.reduceat(per_slot > FLOOD_ALARMS_PER_10MIN, site_runs, dtype=np.int64),
        },
        schema=schema,
    )


def load(con: duckdb.DuckDBPyConnection, *, since_ms: int, until_ms: int, as_of_ms: int) -> pl.DataFrame:
    """EEMUA 191-style alarm load per site for alarms raised in ``[since, until)`` (and by ``as_of``).

    Ten-minute and hourly intervals are aligned on ``since`` (interval k = ``[since + k·10 min, ...)``).
    ``avg_per_10min`` / ``avg_per_hour`` divide the site's alarms by the exact window length;
    ``max_per_*`` is the busiest interval; ``flood_intervals`` counts 10-minute intervals with more than
    10 alarms and ``flood_share`` divides them by the number of 10-minute intervals in the window
    (``ceil(window / 10 min)``, the last one may be partial). ``stale_open_24h`` counts the site's alarms
    of any raise time that are not closed at ``as_of`` and were raised more than 24 h before it (a site with
    only stale alarms is listed with 0 alarms). ``*_share`` is the priority mix of the window (NULL without
    alarms). A reopened alarm counts once, in the interval of its first raise. Sorted by site.
    """
    n_slots = -(-(until_ms - since_ms) // TEN_MIN_MS)
    p = _window(since_ms, until_ms, as_of_ms) | {
        "ten_min_ms": TEN_MIN_MS,
        "hour_ms": HOUR_MS,
        "stale_ms": STALE_OPEN_MS,
    }
    with _snapshot(con) as cur:  # the sites and the alarms from one snapshot of a live store
        sites = _frame(_run(cur, _LOAD_SITES_SQL, p))
        names = sites.filter(pl.col("sid").is_not_null()).sort("sid")["site"].to_list()
        rows = _run(cur, _LOAD_ROWS_SQL, p | {"sites": names}).to_arrow_table() if names else None
    if rows is None or rows.num_rows == 0:
        per_site = _interval_counts(np.zeros(0, np.int32), np.zeros(0, np.int64), since_ms * 1000, 0)
    else:
        raised = rows.column("raised_at").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        per_site = _interval_counts(rows.column("sid").to_numpy(), raised, since_ms * 1000, len(names))
    out = sites.join(per_site, on="sid", how="left", maintain_order="left").with_columns(
        pl.col("max_per_10min", "max_per_hour", "flood_intervals").fill_null(0),
    )
    return out.with_columns((pl.col("flood_intervals") / n_slots).alias("flood_share")).select(LOAD_COLUMNS)


# ---------------------------------------------------------------------------------------------
# online

_ONLINE_SQL = """
WITH periods AS (
    SELECT unnest($tags) AS tag, unnest($periods_ms) AS period_ms
), pairs AS (
    -- every sensor seen before until (since seen_since), with its newest reading before until
    SELECT site, tag, max(ts) AS last_seen FROM readings
    WHERE ts < $until AND ts >= $seen_since
    GROUP BY site, tag
), got AS (
    SELECT site, tag, count(*) AS received, count(*) FILTER (WHERE quality = 'good') AS received_good
    FROM readings
    WHERE ts >= $since AND ts < $until
    GROUP BY site, tag
)
SELECT pairs.site, pairs.tag,
       coalesce(periods.period_ms, $default_period_ms)::BIGINT                      AS period_ms,
       coalesce(got.received, 0)                                                    AS received,
       coalesce(got.received_good, 0)                                               AS received_good,
       greatest(($until_ms - $since_ms) // coalesce(periods.period_ms, $default_period_ms), 1) AS expected,
       least(coalesce(got.received, 0) / greatest(($until_ms - $since_ms)
             // coalesce(periods.period_ms, $default_period_ms), 1), 1.0)          AS online_rate,
       pairs.last_seen
FROM pairs
LEFT JOIN got USING (site, tag)
LEFT JOIN periods ON periods.tag = pairs.tag
ORDER BY online_rate, pairs.site, pairs.tag
"""


def online(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ms: int,
    until_ms: int,
    expected_period_ms: Mapping[str, int] | int = 10_000,
    seen_since_ms: int | None = None,
) -> pl.DataFrame:
    """Data online rate (在线率) per site and tag over ``[since, until)``: received vs expected samples.

    ``expected_period_ms`` is one upload period for every tag, or a mapping tag -> period with an optional
    ``"*"`` default (else 10 s). ``expected = max(1, floor(window / period))``; ``online_rate =
    min(1, received / expected)`` (bursts and event-driven tags do not make a tag more than fully online).
    ``received`` counts readings of any quality (data arrived), ``received_good`` those of good quality.
    The (site, tag) pairs listed are those with any reading before ``until`` since ``seen_since_ms`` (default:
    all history), so a tag silent for the whole window is listed with rate 0. Worst first.
    """
    if isinstance(expected_period_ms, Mapping):
        periods = {str(k): int(v) for k, v in expected_period_ms.items()}
        default = periods.pop("*", 10_000)
    else:
        periods, default = {}, int(expected_period_ms)
    if default <= 0 or any(v <= 0 for v in periods.values()):
        msg = f"expected periods must be positive milliseconds, got {expected_period_ms!r}"
        raise ValueError(msg)
    p = _window(since_ms, until_ms) | {
        "tags": list(periods),
        "periods_ms": list(periods.values()),
        "default_period_ms": default,
        "seen_since": _ts(seen_since_ms if seen_since_ms is not None else 0),  # epoch 0: all history
    }
    if not periods:  # an empty list has no element type to unnest into; bind one impossible tag
        p["tags"], p["periods_ms"] = [""], [default]
    return _query(con, _ONLINE_SQL, p)


# ---------------------------------------------------------------------------------------------
# risk

_RISK_SQL = (
    """
WITH open_now AS (
    -- every alarm that exists and is not closed at as_of, whenever it was raised
    SELECT site, plant, district, severity, tag, rule_id, raised_at, cleared_at,
           """
    + _CLOSE_DUE
    + """ AS close_due
    FROM alarms
    WHERE raised_at <= $as_of AND raised_at < $until AND (closed_at IS NULL OR closed_at > $as_of)
), open_site AS (
    SELECT site, any_value(plant) AS plant, any_value(district) AS district,
           count(*) FILTER (WHERE close_due <= $as_of AND severity = 'red')      AS overdue_red,
           count(*) FILTER (WHERE close_due <= $as_of AND severity = 'orange')   AS overdue_orange,
           count(*) FILTER (WHERE close_due >  $as_of AND severity IN ('red', 'orange')) AS open_red_orange,
           list(DISTINCT tag) FILTER (WHERE tag ILIKE '%bypass%'
                                      AND (cleared_at IS NULL OR cleared_at > $as_of)) AS bypass_alarm_tags
    FROM open_now GROUP BY site
), win AS (
    SELECT site, plant, district, (epoch_ms(raised_at) - $since_ms) // $ten_min_ms AS slot
    FROM alarms
    WHERE raised_at >= $since AND raised_at < $until AND raised_at <= $as_of
), win_site AS (
    SELECT site, any_value(plant) AS plant, any_value(district) AS district, sum(n)::BIGINT AS alarms,
           count(*) FILTER (WHERE n > $flood_n) AS flood_intervals
    FROM (SELECT site, any_value(plant) AS plant, any_value(district) AS district, slot, count(*) AS n
          FROM win GROUP BY site, slot)
    GROUP BY site
), interlocks AS (
    -- a failed interlock is a raise of an interlock rule; the first raise of an alarm and its signal share
    -- (site, tag, rule, ts), so the union counts it once
    SELECT site, count(*) AS failed_interlocks FROM (
        SELECT site, tag, rule_id, ts FROM signals
        WHERE kind = 'raise' AND ts >= $since AND ts < $until AND ts <= $as_of
          AND (rule_id ILIKE 'interlock%' OR detail ILIKE '%interlock%')
        UNION
        SELECT a.site, a.tag, a.rule_id, a.raised_at FROM alarms a
        WHERE a.raised_at >= $since AND a.raised_at < $until AND a.raised_at <= $as_of
          AND (a.rule_id ILIKE 'interlock%' OR a.alarm_id IN (
                -- a semi-join against the (few) matching events; their ts is the raise time, so the
                -- window prunes most of a 100 M-row alarm_events table by zone maps
                SELECT e.alarm_id FROM alarm_events e
                WHERE e.kind = 'raised' AND e.ts >= $since AND e.ts < $until AND e.ts <= $as_of
                  AND e.detail ILIKE '%interlock%'))
    ) GROUP BY site
), latest AS (
    SELECT site, tag, max(ts) AS last_ts, arg_max(value, ts) AS last_value
    FROM readings WHERE ts <= $as_of GROUP BY site, tag
), data_site AS (
    SELECT site,
           list(tag ORDER BY tag) FILTER (WHERE tag ILIKE '%bypass%' AND last_value >= 0.5) AS bypass_tags,
           count(*) FILTER (WHERE last_ts < $as_of - to_milliseconds($stale_data_ms))                   AS stale_tags
    FROM latest GROUP BY site
), sites AS (
    SELECT site FROM open_site UNION SELECT site FROM win_site UNION SELECT site FROM interlocks
    UNION SELECT site FROM data_site
), joined AS (
    SELECT s.site,
           coalesce(w.plant, o.plant)                             AS plant,
           coalesce(w.district, o.district)                       AS district,
           coalesce(w.alarms, 0)                                  AS alarms,
           coalesce(w.flood_intervals, 0)                         AS flood_intervals,
           coalesce(o.overdue_red, 0)                             AS overdue_red,
           coalesce(o.overdue_orange, 0)                          AS overdue_orange,
           coalesce(o.open_red_orange, 0)                         AS open_red_orange,
           coalesce(i.failed_interlocks, 0)                       AS failed_interlocks,
           list_sort(list_distinct(list_concat(coalesce(d.bypass_tags, []),
                                               coalesce(o.bypass_alarm_tags, []))))  AS bypass_tags,
           coalesce(d.stale_tags, 0)                              AS stale_tags
    FROM sites s
    LEFT JOIN open_site o USING (site)
    LEFT JOIN win_site w USING (site)
    LEFT JOIN interlocks i USING (site)
    LEFT JOIN data_site d USING (site)
), graded AS (
    SELECT *,
           CASE
             WHEN failed_interlocks > 0 OR overdue_red > 0
                  OR (len(bypass_tags) > 0 AND overdue_orange + open_red_orange > 0) THEN 'high'
             WHEN overdue_orange > 0 OR len(bypass_tags) > 0 OR flood_intervals > 0 THEN 'elevated'
             WHEN open_red_orange > 0 OR stale_tags > 0
                  OR alarms * $ten_min_ms / ($until_ms - $since_ms) > 1 THEN 'medium'
             ELSE 'low'
           END AS level
    FROM joined
)
SELECT site, plant, district, level,
       failed_interlocks, overdue_red, overdue_orange, open_red_orange, bypass_tags, flood_intervals,
       alarms, stale_tags,
       list_filter([
           CASE WHEN failed_interlocks > 0 THEN failed_interlocks || ' failed interlock(s)' END,
           CASE WHEN overdue_red > 0 THEN overdue_red || ' overdue red alarm(s)' END,
           CASE WHEN overdue_orange > 0 THEN overdue_orange || ' overdue orange alarm(s)' END,
           CASE WHEN len(bypass_tags) > 0 THEN 'bypass active: ' || array_to_string(bypass_tags, ', ') END,
           CASE WHEN open_red_orange > 0 THEN open_red_orange || ' open red/orange alarm(s)' END,
           CASE WHEN flood_intervals > 0 THEN 'alarm flood in ' || flood_intervals || ' ten-minute interval(s)' END,
           CASE WHEN alarms * $ten_min_ms / ($until_ms - $since_ms) > 1
                THEN 'alarm load ' || round(alarms * $ten_min_ms / ($until_ms - $since_ms), 2) || ' per 10 min' END,
           CASE WHEN stale_tags > 0 THEN stale_tags || ' stale tag(s)' END
       ], lambda r: r IS NOT NULL) AS reasons
FROM graded
ORDER BY CASE level WHEN 'high' THEN 0 WHEN 'elevated' THEN 1 WHEN 'medium' THEN 2 ELSE 3 END,
         failed_interlocks DESC, overdue_red DESC, overdue_orange DESC, len(bypass_tags) DESC,
         open_red_orange DESC, flood_intervals DESC, alarms DESC, stale_tags DESC, site
"""
)

RISK_LEVELS: tuple[str, ...] = ("high", "elevated", "medium", "low")


def risk(
    con: duckdb.DuckDBPyConnection,
    *,
    since_ms: int,
    until_ms: int,
    as_of_ms: int,
    stale_data_ms: int = HOUR_MS,
) -> pl.DataFrame:
    """Dynamic risk list of plants (sites), graded high / elevated / medium / low, with ``reasons``.

    Inputs per site: ``failed_interlocks`` (raises in the window of an interlock rule: rule id starting with
    ``interlock``, or a signal / raised event whose detail mentions an interlock), ``overdue_red`` /
    ``overdue_orange`` (open at as_of past the close deadline, raised any time before until),
    ``open_red_orange`` (open, not yet overdue), ``bypass_tags`` (tags whose name contains ``bypass`` with a
    latest reading at as_of ≥ 0.5, i.e. true, or with an alarm still active at as_of), ``flood_intervals``
    (10-minute intervals of the window with more than 10 alarms), ``alarms`` (raised in the window) and
    ``stale_tags`` (tags whose latest reading at as_of is older than ``stale_data_ms``, default 1 h).

    Levels (first match): **high** — a failed interlock, an overdue red alarm, or a bypass while a red/orange
    alarm is open; **elevated** — an overdue orange alarm, a bypass, or a flood; **medium** — an open
    red/orange alarm, stale data, or more than 1 alarm per 10 minutes on average; **low** — otherwise.
    Sorted by level, then by the inputs in that order.
    """
    p = _window(since_ms, until_ms, as_of_ms) | {
        "ten_min_ms": TEN_MIN_MS,
        "flood_n": FLOOD_ALARMS_PER_10MIN,
        "stale_data_ms": int(stale_data_ms),
    }
    return _query(con, _RISK_SQL, p)


# ---------------------------------------------------------------------------------------------
# Registry for the CLI and HTTP API

REPORTS: dict[str, Callable[..., pl.DataFrame]] = {
    "closure": closure,
    "non-responding": non_responding,
    "bad-actors": bad_actors,
    "load": load,
    "online": online,
    "risk": risk,
}


def run_report(
    con: duckdb.DuckDBPyConnection,
    name: str,
    *,
    since: str | None = None,
    until: str | None = None,
    as_of: str | None = None,
    by: Sequence[str] = (),
    now_ms: int | None = None,
) -> pl.DataFrame:
    """Run report `name` with CLI / HTTP style arguments (RFC 3339 strings or "now").

    Defaults: `as_of` = now, `until` = `as_of`, `since` = 30 days before `until`. `by` applies to the
    closure report only; any other report refuses it rather than silently ignoring it.
    """
    import inspect
    import time

    if name not in REPORTS:
        msg = f"unknown report {name!r} (known: {', '.join(REPORTS)})"
        raise ValueError(msg)
    now = int(time.time() * 1000) if now_ms is None else int(now_ms)

    def t(s: str | None, default: int) -> int:
        return default if s is None or s.strip().lower() in ("", "now") else parse_time(s)

    as_of_ms = t(as_of, now)
    until_ms = t(until, as_of_ms)
    since_ms = t(since, until_ms - 30 * 86_400_000)
    if since_ms >= until_ms:
        msg = f"since ({since}) must be before until ({until})"
        raise ValueError(msg)
    fn = REPORTS[name]
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {"since_ms": since_ms, "until_ms": until_ms}
    if "as_of_ms" in params:
        kwargs["as_of_ms"] = as_of_ms
    if by:
        if "by" not in params:
            msg = f"report {name} has no grouping (--by is for the closure report)"
            raise ValueError(msg)
        kwargs["by"] = list(by)
    return fn(con, **kwargs)


# ---------------------------------------------------------------------------------------------
# Times

_DIGITS = re.compile(r"-?\d+")


def parse_time(s: str) -> int:
    """An RFC 3339 time with an offset (``2026-11-28T08:00:00.250+08:00``, ``...Z``) -> epoch ms UTC.

    Integer strings are taken as epoch milliseconds. A time without an offset is refused: it would be
    read in the machine's local zone, which differs between the engine and an analyst's laptop.
    Sub-millisecond digits are truncated toward the past.
    """
    text = s.strip()
    if _DIGITS.fullmatch(text):
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        t = None
    if t is None or "T" not in text.upper():
        msg = f"not an RFC 3339 time: {s!r} (e.g. 2026-11-28T08:00:00+08:00 or 2026-11-28T00:00:00Z)"
        raise ValueError(msg)
    if t.tzinfo is None or t.utcoffset() is None:
        msg = f"time {s!r} has no UTC offset: add Z or +08:00"
        raise ValueError(msg)
    return (t - _EPOCH) // dt.timedelta(milliseconds=1)


# ---------------------------------------------------------------------------------------------
# Rendering


def _plain(v: Any) -> Any:
    """A Python value from a frame row -> something json.dumps writes as the analyst expects."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC)
            return v.isoformat().replace("+00:00", "Z")
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """Lists joined with '; ' and times in RFC 3339, for the text formats that have no nesting."""
    exprs = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List):
            exprs.append(col.cast(pl.List(pl.String)).list.join("; ").alias(name))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            exprs.append(col.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias(name))
        else:
            exprs.append(col)
    return df.select(exprs)


def render(df: pl.DataFrame, fmt: str, output: str | None = None) -> str | None:
    """Write a report as ``table`` | ``csv`` | ``json`` | ``parquet``.

    Returns the text when ``output`` is None, else writes the file and returns None. ``json`` is an array of
    objects keyed by column names (times in RFC 3339 UTC, dates as ``YYYY-MM-DD``, lists as arrays, NaN as
    null); ``csv`` and ``table`` join list cells with ``"; "``; ``parquet`` is binary and needs ``output``.
    """
    if fmt not in FORMATS:
        msg = f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}"
        raise ValueError(msg)
    if fmt == "parquet":
        if output is None:
            msg = "--format parquet needs --output FILE"
            raise ValueError(msg)
        df.write_parquet(output)
        return None
    if fmt == "json":
        text = json.dumps([_plain(r) for r in df.to_dicts()], ensure_ascii=False) + "\n"
    elif fmt == "csv":
        text = _flat(df).write_csv()
    else:
        with pl.Config(
            tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=200, tbl_width_chars=1000, tbl_hide_dataframe_shape=True
        ):
            text = str(_flat(df)) + "\n"
    if output is None:
        return text
    Path(output).write_text(text, encoding="utf-8")
    return None


# ---------------------------------------------------------------------------------------------
# Analysts' free SQL

_LOCKED: dict[str, Any] = {
    # order matters little at open, but lock_configuration must win over any later SET
    "enable_external_access": False,  # no COPY, read_csv, ATTACH, INSTALL/LOAD, replacement scans
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,  # so the statement cannot SET any of the above back
}
_ALLOWED_STATEMENTS = {"SELECT", "EXPLAIN"}


def guarded_connect(path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a DuckDB file with file, network and extension access off, config locked."""
    p = Path(path)
    if not p.exists():
        msg = f"no DuckDB file at {p}"
        raise SqlRefused(msg)
    try:
        return duckdb.connect(str(p), read_only=True, config=dict(_LOCKED))
    except duckdb.Error as e:
        msg = f"cannot open {p} read-only ({e}); if the engine is running, query its snapshot or its HTTP API"
        raise SqlRefused(msg) from e


def _sandbox_from(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    """An in-memory guarded copy of the tables ``sql`` may name, taken from a live (writable) connection.

    A live connection cannot be made read-only or have external access turned off without changing the
    engine's own database, so the analyst's statement runs in a separate locked database instead. The
    tables it names are copied as Arrow (costly for large tables: prefer a snapshot file with a path).
    """
    box = duckdb.connect(":memory:", config=dict(_LOCKED))
    cur = _cursor(con)
    try:
        tables = cur.execute(
            "SELECT table_name, sql FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND NOT temporary"
        ).fetchall()
        # Tables the statement may name: every catalog table whose name occurs as a word in it. Copying one
        # too many costs time only; DuckDB's own get_table_names fails to bind some valid statements.
        words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
        wanted = {name for name, _ in tables if name.lower() in words}
        for name in sorted(wanted):
            data = cur.sql(f'SELECT * FROM "{name}"').to_arrow_table()  # name from the catalog
            box.register(name, data)
    finally:
        cur.close()
    return box


def run_sql(path_or_con: str | Path | duckdb.DuckDBPyConnection, sql: str) -> pl.DataFrame:
    """Run an analyst's statement read-only, with external file, network and extension access disabled.

    One statement, of kind SELECT (``WITH``, ``FROM x``, ``DESCRIBE``, ``SUMMARIZE`` included) or
    EXPLAIN. With a path, it runs on a read-only connection of that file; with a live connection, on a
    locked in-memory copy of the tables it names. Anything else (``COPY``, ``ATTACH``, ``INSTALL``,
    ``read_csv(...)``, writes) raises :class:`SqlRefused` with DuckDB's reason.
    """
    parser = duckdb.connect(":memory:", config=dict(_LOCKED))
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as e:
        msg = f"refused: {e}"
        raise SqlRefused(msg) from e
    finally:
        parser.close()
    if len(statements) != 1:
        msg = f"refused: one statement at a time, got {len(statements)}"
        raise SqlRefused(msg)
    kind = statements[0].type.name
    if kind not in _ALLOWED_STATEMENTS:
        msg = f"refused: only read-only queries (SELECT) are allowed, got a {kind} statement"
        raise SqlRefused(msg)
    if not isinstance(path_or_con, (str, os.PathLike)):  # a connection, or the store's reader cursor
        con = _sandbox_from(path_or_con, sql)
    else:
        con = guarded_connect(path_or_con)
    try:
        return _frame(con.sql(sql))
    except duckdb.Error as e:
        msg = f"refused or failed: {e}"
        raise SqlRefused(msg) from e
    finally:
        con.close()
