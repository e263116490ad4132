"""Decode stage: MQTT telemetry messages -> one columnar ReadingBatch plus the rejects (product.md §3).

Pure: no I/O and no clock reads (`now_ms` is handed in), so a replay decodes exactly as the live run did.

Two paths, one contract:

* **Fast path** (the hot path). The whole payload is decoded by msgspec straight into typed Structs whose
  field types and constraints *are* the contract (int `ts` within range, `q` a known literal, `value` a
  number/bool/null). If that succeeds, the message only needs a few C-level list checks (tags already seen,
  newest `ts` not in the future) and its columns are appended whole. No per-reading branches in Python;
  RFC 3339 strings are parsed (cached) only when a message has them.
* **Slow path** (the source of truth for reasons). Anything the fast path does not accept in one piece --
  a bad reading among good ones, NaN literals, garbage -- is decoded generically and every reading is
  validated on its own, so bad readings get their reason and good neighbours are kept.

The fast path only ever *accepts* a whole message or hands it to the slow path; it never produces a reject.
So the reasons have a single definition and a test can check both paths agree (`Decoder(fast=False)`).

One polars frame is built per `decode()` call, not per message.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Container, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import polars as pl
from msgspec import UNSET, Meta, UnsetType

from earlywarn.config import IngestConfig
from earlywarn.model import Quality, RawMessage, ReadingBatch, Reject

__all__ = [
    "REJECT_REASONS",
    "TS_MAX_MS",
    "TS_MIN_MS",
    "DecodeResult",
    "Decoder",
    "parse_rfc3339_ms",
    "site_of_topic",
]

# ---------------------------------------------------------------------------------------------
# Reasons. Stable snake_case: they are Prometheus label values and rows of the `rejects` table.

# message-level
BAD_TOPIC: Final = "bad_topic"
UNKNOWN_SITE: Final = "unknown_site"
PAYLOAD_TOO_LARGE: Final = "payload_too_large"
NOT_JSON: Final = "not_json"
TOO_DEEP: Final = "too_deep"
NOT_OBJECT: Final = "not_object"
BAD_READINGS: Final = "bad_readings"
DECODE_ERROR: Final = "decode_error"
# reading-level
BAD_READING: Final = "bad_reading"
MISSING_TAG: Final = "missing_tag"
BAD_TAG: Final = "bad_tag"
MISSING_TS: Final = "missing_ts"
BAD_TS: Final = "bad_ts"
TS_OUT_OF_RANGE: Final = "ts_out_of_range"
TS_IN_FUTURE: Final = "ts_in_future"
MISSING_VALUE: Final = "missing_value"
BAD_VALUE: Final = "bad_value"
NON_FINITE_VALUE: Final = "non_finite_value"
BAD_QUALITY: Final = "bad_quality"

#: Every reason decode can give, so metrics can pre-create the label values (a zero is information).
REJECT_REASONS: Final[tuple[str, ...]] = (
    BAD_TOPIC, UNKNOWN_SITE, PAYLOAD_TOO_LARGE, NOT_JSON, TOO_DEEP, NOT_OBJECT, BAD_READINGS, DECODE_ERROR,
    BAD_READING, MISSING_TAG, BAD_TAG, MISSING_TS, BAD_TS, TS_OUT_OF_RANGE, TS_IN_FUTURE, MISSING_VALUE,
    BAD_VALUE, NON_FINITE_VALUE, BAD_QUALITY,
)

# ---------------------------------------------------------------------------------------------
# Limits

#: 2000-01-01T00:00:00Z. Earlier is a clock that was never set, or seconds sent where ms are expected.
TS_MIN_MS: Final = 946_684_800_000
#: 9999-12-31T23:59:59.999Z. Later is absurd (e.g. microseconds sent where ms are expected).
TS_MAX_MS: Final = 253_402_300_799_999

EXCERPT_CHARS: Final = 200

# Quality codes as plain ints for the column lists (an IntEnum member per reading would cost more).
_QUALITY_CODES: Final[dict[str, int]] = {q.label: int(q) for q in Quality}
_GOOD: Final = int(Quality.GOOD)
_BAD: Final = int(Quality.BAD)

_TOPIC_RE = re.compile(r"ew/([A-Za-z0-9_.-]{1,64})/telemetry(?:/.*)?", re.DOTALL)
_TAG_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Groups: date, hour:minute, second, fraction, offset. The minute prefix and the offset go to a cached
# helper, because the readings of one message differ mostly in their seconds.
_RFC3339_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_BOM: Final = b"\xef\xbb\xbf"
_MISSING: Final = object()

#: Caches are bounded so a stream of junk topics or tags cannot grow memory without limit.
_CACHE_MAX: Final = 100_000


def site_of_topic(topic: str) -> str | None:
    """The site of a telemetry topic `ew/{site}/telemetry[/...]`, or None when the topic does not match.

    >>> site_of_topic("ew/SZ-AL-0001/telemetry/dev7"), site_of_topic("ew/a/b/telemetry")
    ('SZ-AL-0001', None)
    """
    m = _TOPIC_RE.fullmatch(topic) if isinstance(topic, str) else None
    return m.group(1) if m else None


@lru_cache(maxsize=4096)
def parse_rfc3339_ms(text: str) -> int | None:
    """An RFC 3339 timestamp WITH offset as UTC epoch ms, or None when it is not one.

    Fractions finer than a millisecond are truncated. A leap second (:60) counts as the next second,
    as POSIX time does. Cached because a batch often repeats one timestamp string.

    >>> parse_rfc3339_ms("2026-11-28T08:00:00.250+08:00"), parse_rfc3339_ms("2026-11-28T00:00:00.250Z")
    (1795824000250, 1795824000250)
    >>> parse_rfc3339_ms("2026-11-28T08:00:00") is None  # no offset: the instant is unknown
    True
    """
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        return None
    day, hour_minute, second, frac, offset = m.groups()
    minute_ms = _minute_utc_ms(day, hour_minute, offset)
    s = int(second)
    if minute_ms is None or s > 60:
        return None
    ts_ms = minute_ms + s * 1000
    if frac:
        ts_ms += int((frac + "00")[:3])
    return ts_ms


@lru_cache(maxsize=4096)
def _minute_utc_ms(day: str, hour_minute: str, offset: str) -> int | None:
    """UTC epoch ms of local minute `day` `hour_minute` at `offset` ("Z" or "+08:00"), None if invalid."""
    try:
        days = date.fromisoformat(day).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # month 13, Feb 30, year 0
        return None
    h, mi = int(hour_minute[:2]), int(hour_minute[3:])
    if h > 23 or mi > 59:
        return None
    ts_ms = ((days * 24 + h) * 60 + mi) * 60_000
    if offset in ("Z", "z"):
        return ts_ms
    oh, om = int(offset[1:3]), int(offset[4:])
    if oh > 23 or om > 59:
        return None
    offset_ms = (oh * 60 + om) * 60_000
    # +08:00 is 8 h ahead of UTC, so the UTC instant is 8 h earlier.
    return ts_ms - offset_ms if offset[0] == "+" else ts_ms + offset_ms


def _rfc3339_in_range(text: str) -> int | None:
    """parse_rfc3339_ms, but None also when outside [TS_MIN_MS, TS_MAX_MS] (the fast path's int bounds)."""
    ts_ms = parse_rfc3339_ms(text)
    return ts_ms if ts_ms is not None and TS_MIN_MS <= ts_ms <= TS_MAX_MS else None


# ---------------------------------------------------------------------------------------------
# Fast-path types. Their constraints are the contract; anything else fails and goes to the slow path.

_TsMs = Annotated[int, Meta(ge=TS_MIN_MS, le=TS_MAX_MS)]
_Q = Literal["good", "uncertain", "bad"]


class _FastReading(msgspec.Struct, gc=False):
    tag: str
    # `float` accepts JSON integers too; bool and null are their own JSON types, so no ambiguity.
    value: float | bool | None
    # UNSET, not None: an explicit `"ts": null` is a bad ts, not a missing one. A string is an RFC 3339
    # candidate, parsed (cached) after the typed decode.
    ts: _TsMs | str | UnsetType = UNSET
    q: _Q = "good"


class _FastMessage(msgspec.Struct, gc=False):
    readings: list[_FastReading] | UnsetType = UNSET
    tag: str | UnsetType = UNSET
    ts: _TsMs | str | UnsetType = UNSET
    value: float | bool | None | UnsetType = UNSET
    q: _Q = "good"


_FAST_DECODER = msgspec.json.Decoder(_FastMessage)
_GENERIC_DECODER = msgspec.json.Decoder()


# ---------------------------------------------------------------------------------------------
# Excerpts: always short, always valid text, never raise.


def _excerpt_bytes(payload: Any) -> str:
    try:
        head = bytes(payload[: EXCERPT_CHARS * 4])
        return head.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    except Exception:  # noqa: BLE001 - an excerpt is best effort; a reject must still be produced
        return "<unprintable>"


# Built once: json.dumps with non-default options builds an encoder per call, which dominated the cost
# of a message holding thousands of bad readings. allow_nan so a NaN reading's excerpt shows the NaN.
_EXCERPT_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=True, separators=(",", ":"), default=repr
)


def _excerpt_obj(obj: Any) -> str:
    try:
        text = _EXCERPT_ENCODER.encode(obj)
    except Exception:  # noqa: BLE001 - e.g. RecursionError on a deeply nested reading
        return "<unprintable>"
    # Lone surrogates (legal as JSON escapes) are not encodable; the rejects table needs valid UTF-8.
    return text[:EXCERPT_CHARS].encode("utf-8", errors="replace").decode("utf-8")


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodeResult:
    """What one `Decoder.decode()` call produced."""

    batch: ReadingBatch  #: valid readings, in message order
    rejects: list[Reject]  #: one per bad reading or bad message, in message order
    messages: int  #: messages looked at

    @property
    def readings(self) -> int:
        """Number of valid readings."""
        return len(self.batch)

    def reject_counts(self) -> Counter[str]:
        """Rejects by reason, ready for `earlywarn_rejected_total{reason}`."""
        return Counter(r.reason for r in self.rejects)


class _Columns:
    """Column lists being filled for one decode() call.

    The site column is kept as runs (one site and a count per message): a message's readings share it.
    `quality` holds the codes of `q`; a null value makes the quality bad, which `_build` applies to the
    whole column at once (a null value is the only NaN there: every accepted value is finite).
    """

    __slots__ = ("multi_at", "multi_n", "quality", "site_runs", "tag", "ts_ms", "value")

    def __init__(self) -> None:
        self.site_runs: list[str] = []  # one site per message with readings
        self.multi_at: list[int] = []  # the runs of more than one reading (index in site_runs) ...
        self.multi_n: list[int] = []  # ... and their lengths; every other run is one reading
        self.tag: list[str] = []
        self.ts_ms: list[int] = []
        self.value: list[float | bool | None] = []
        self.quality: list[int] = []


class Decoder:
    """Turns RawMessages into a ReadingBatch and Rejects. Keeps only caches between calls.

    Not thread-safe (the caches are plain dict/set): one Decoder per decoding thread.

    Example:
        >>> d = Decoder(known_sites={"s1"})
        >>> msg = RawMessage("ew/s1/telemetry", b'{"tag": "t", "ts": 1764316800250, "value": 0.25}')
        >>> r = d.decode([msg], now_ms=1764316800250)
        >>> r.batch.frame.row(0), r.rejects
        (('s1', 't', 1764316800250, 0.25, 0), [])
    """

    def __init__(
        self,
        *,
        known_sites: Container[str] | None,
        accept_unknown_sites: bool = False,
        max_future_ms: int = 300_000,
        max_payload_bytes: int = 1 << 20,
        fast: bool = True,
    ) -> None:
        """`known_sites=None` accepts every site. `fast=False` forces the slow path (tests compare both)."""
        self.known_sites = known_sites
        self._accept_all = accept_unknown_sites
        self.accept_unknown_sites = accept_unknown_sites or known_sites is None
        self.max_future_ms = int(max_future_ms)
        self.max_payload_bytes = int(max_payload_bytes)
        self.fast = fast
        # topic -> (site, None) or ("", message-level reason). Topics repeat; the regex and lookups need not.
        self._topics: dict[str, tuple[str, str | None]] = {}
        # Tags that passed the tag pattern. Tags repeat endlessly, so most readings cost one set lookup.
        self._good_tags: set[str] = set()

    @classmethod
    def from_config(cls, ingest: IngestConfig, known_sites: Container[str] | None) -> Decoder:
        """A decoder with the limits of the `[ingest]` config section."""
        return cls(
            known_sites=known_sites,
            accept_unknown_sites=ingest.accept_unknown_sites,
            max_future_ms=ingest.max_future_ms,
            max_payload_bytes=ingest.max_payload_bytes,
        )

    # -- public -----------------------------------------------------------------------------

    def decode(self, messages: Sequence[RawMessage], now_ms: int) -> DecodeResult:
        """Decode `messages`; `now_ms` is the engine clock, for the `ts_in_future` check. Never raises."""
        cols = _Columns()
        rejects: list[Reject] = []
        ts_limit_ms = int(now_ms) + self.max_future_ms
        max_payload_bytes = self.max_payload_bytes
        fast = self.fast
        topics = self._topics
        count = 0
        # The per-message steps are inlined here (not a method per step) because for single-reading
        # messages the Python overhead per message is most of the cost.
        for msg in messages:
            count += 1
            try:
                site, reason = topics.get(msg.topic) or self._site(msg.topic)
                if reason is None:
                    payload = msg.payload
                    # Checked before parsing: a huge payload must cost nothing.
                    if len(payload) > max_payload_bytes:
                        reason = PAYLOAD_TOO_LARGE
                    elif not (fast and self._fast(site, payload, ts_limit_ms, cols)):
                        self._slow(msg, site, ts_limit_ms, cols, rejects)
                if reason is not None:
                    rejects.append(self._message_reject(msg, reason))
            except Exception:  # noqa: BLE001 - one poisoned message must not stop the others
                rejects.append(self._message_reject(msg, DECODE_ERROR))
        return DecodeResult(batch=self._build(cols), rejects=rejects, messages=count)

    def set_known_sites(self, known_sites: Container[str] | None) -> None:
        """Change the registered sites (e.g. after the sites file was reloaded); forgets cached topics."""
        self.known_sites = known_sites
        self.accept_unknown_sites = self._accept_all or known_sites is None
        self._topics.clear()

    # -- per message --------------------------------------------------------------------------

    def _site(self, topic: str) -> tuple[str, str | None]:
        """(site, None) or ("", reason) for a topic, cached."""
        hit = self._topics.get(topic)
        if hit is not None:
            return hit
        site = site_of_topic(topic)
        known = self.known_sites
        if site is None:
            hit = ("", BAD_TOPIC)
        elif not self.accept_unknown_sites and known is not None and site not in known:
            hit = ("", UNKNOWN_SITE)
        else:
            hit = (site, None)
        if len(self._topics) >= _CACHE_MAX:
            self._topics.clear()
        self._topics[topic] = hit
        return hit

    def _learn_tags(self, tags: list[str]) -> bool:
        """True when every tag matches the tag pattern; remembers the good ones."""
        good = self._good_tags
        for tag in tags:
            if tag not in good:
                if not _TAG_RE.fullmatch(tag):
                    return False
                if len(good) >= _CACHE_MAX:
                    good.clear()
                good.add(tag)
        return True

    def _fast(self, site: str, payload: bytes, ts_limit_ms: int, cols: _Columns) -> bool:
        """Append the whole message and return True, or return False (nothing appended) for the slow path."""
        try:
            m = _FAST_DECODER.decode(payload)
        except Exception:  # noqa: BLE001 - anything the typed decode refuses is judged by the slow path
            return False
        # msgspec has checked every type; these are `Any` because mypy cannot narrow `x is UNSET`.
        rs: Any = m.readings
        tag: Any
        ts_ms: Any
        value: Any
        if rs is UNSET:  # a single reading
            tag, ts_ms, value = m.tag, m.ts, m.value
            if type(ts_ms) is str:
                ts_ms = _rfc3339_in_range(ts_ms)
            if tag is UNSET or ts_ms is UNSET or ts_ms is None or value is UNSET or ts_ms > ts_limit_ms:
                return False
            if tag not in self._good_tags and not self._learn_tags([tag]):
                return False
            cols.site_runs.append(site)
            cols.tag.append(tag)
            cols.ts_ms.append(ts_ms)
            cols.value.append(value)
            cols.quality.append(_QUALITY_CODES[m.q])
            return True

        n = len(rs)
        if n == 0:
            return True
        # Each comprehension is a tight C-level loop; the checks below are whole-list operations.
        tags = [r.tag for r in rs]
        if not self._good_tags.issuperset(tags) and not self._learn_tags(tags):
            return False
        ts_list: list[Any] = [r.ts for r in rs]
        # Common case first: every reading has an integer ts, and max() over ints is all it takes. max()
        # raises on a mix of int, str and UNSET (or returns a str / UNSET when all are that), which sends
        # the message to the careful handling below.
        try:
            newest_ms: Any = max(ts_list)
        except TypeError:
            newest_ms = None
        if type(newest_ms) is not int:
            if UNSET in ts_list:
                batch_ts_ms: Any = m.ts
                if type(batch_ts_ms) is str:
                    batch_ts_ms = _rfc3339_in_range(batch_ts_ms)
                if batch_ts_ms is UNSET or batch_ts_ms is None:
                    return False
                ts_list = [batch_ts_ms if t is UNSET else t for t in ts_list]
            try:
                newest_ms = max(ts_list)
            except TypeError:
                newest_ms = ""
            if type(newest_ms) is str:
                ts_list = [t if type(t) is int else _rfc3339_in_range(t) for t in ts_list]
                if None in ts_list:
                    return False
                newest_ms = max(ts_list)
        if newest_ms > ts_limit_ms:
            return False
        qs = [r.q for r in rs]
        if n > 1:
            cols.multi_at.append(len(cols.site_runs))
            cols.multi_n.append(n)
        cols.site_runs.append(site)
        cols.tag += tags
        cols.ts_ms += ts_list
        cols.value += [r.value for r in rs]
        if qs.count("good") == n:
            cols.quality += [_GOOD] * n
        else:
            codes = _QUALITY_CODES
            cols.quality += [codes[q] for q in qs]
        return True

    def _slow(
        self, msg: RawMessage, site: str, ts_limit_ms: int, cols: _Columns, rejects: list[Reject]
    ) -> None:
        """Generic decode and per-reading validation: the definition of every reason."""
        payload = msg.payload
        if payload[:3] == _BOM:
            # RFC 8259 §8.1 lets a parser ignore a BOM; Windows gateways send one. Dropping it loses nothing.
            payload = payload[3:]
        obj, reason = _parse_generic(payload)
        if reason is not None:
            rejects.append(self._message_reject(msg, reason))
            return
        if not isinstance(obj, dict):
            rejects.append(self._message_reject(msg, NOT_OBJECT))
            return
        if "readings" in obj:
            readings = obj["readings"]
            if not isinstance(readings, list):
                rejects.append(self._message_reject(msg, BAD_READINGS))
                return
            batch_ts = obj.get("ts", _MISSING)
        else:
            readings = [obj]
            batch_ts = _MISSING

        # Collected locally and appended at the end, so an unexpected error (-> decode_error) leaves no
        # half of this message behind.
        msg_rejects: list[Reject] = []
        tags: list[str] = []
        ts_list: list[int] = []
        values: list[float | None] = []
        quality: list[int] = []
        for r in readings:
            out = self._check_reading(r, batch_ts, ts_limit_ms)
            if isinstance(out, str):
                msg_rejects.append(Reject(msg.received_ms, msg.topic, out, _excerpt_obj(r)))
            else:
                tag, ts_ms, value, q = out
                tags.append(tag)
                ts_list.append(ts_ms)
                values.append(value)
                quality.append(q)
        rejects += msg_rejects
        n = len(tags)
        if n > 1:
            cols.multi_at.append(len(cols.site_runs))
            cols.multi_n.append(n)
        if n:
            cols.site_runs.append(site)
        cols.tag += tags
        cols.ts_ms += ts_list
        cols.value += values
        cols.quality += quality

    def _check_reading(
        self, r: Any, batch_ts: Any, ts_limit_ms: int
    ) -> str | tuple[str, int, float | None, int]:
        """(tag, ts_ms, value, quality) of a valid reading, or the reason it is rejected."""
        if not isinstance(r, dict):
            return BAD_READING
        tag = r.get("tag", _MISSING)
        if tag is _MISSING:
            return MISSING_TAG
        if type(tag) is not str or not (tag in self._good_tags or self._learn_tags([tag])):
            return BAD_TAG

        ts = r.get("ts", batch_ts)
        if ts is _MISSING:
            return MISSING_TS
        if type(ts) is int:  # `type is`, not isinstance: a bool is not a timestamp
            ts_ms: int | None = ts
        elif type(ts) is str:
            ts_ms = parse_rfc3339_ms(ts)
        else:
            ts_ms = None  # float, bool, null, array, object
        if ts_ms is None:
            return BAD_TS
        if ts_ms < TS_MIN_MS or ts_ms > TS_MAX_MS:
            return TS_OUT_OF_RANGE
        if ts_ms > ts_limit_ms:
            return TS_IN_FUTURE

        if "value" not in r:
            return MISSING_VALUE
        v = r["value"]
        value: float | None
        if v is None:
            value = None
        elif v is True or v is False:
            value = 1.0 if v else 0.0
        elif type(v) is float:
            if not math.isfinite(v):
                return NON_FINITE_VALUE
            value = v
        elif type(v) is int:
            try:
                value = float(v)
            except OverflowError:  # an integer literal beyond float range is infinite for every consumer
                return NON_FINITE_VALUE
        else:
            return BAD_VALUE

        q = r.get("q", "good")
        if type(q) is not str or q not in _QUALITY_CODES:
            return BAD_QUALITY
        return tag, ts_ms, value, (_BAD if value is None else _QUALITY_CODES[q])

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _message_reject(msg: Any, reason: str) -> Reject:
        try:
            received_ms, topic = int(msg.received_ms), str(msg.topic)
        except Exception:  # noqa: BLE001 - not even a RawMessage; still a reject, never a raise
            received_ms, topic = 0, "<unknown>"
        return Reject(received_ms, topic, reason, _excerpt_bytes(getattr(msg, "payload", b"")))

    @staticmethod
    def _build(cols: _Columns) -> ReadingBatch:
        if not cols.tag:
            return ReadingBatch.empty()
        # Every value was validated (ASCII site and tag, ts_ms within int64, value float/bool/None), so the
        # conversions cannot fail on any input; the property tests hold us to that. Numbers go through numpy
        # (bool -> 1.0/0.0, None -> NaN -> null), the site column is one gather of the per-message runs.
        n_runs = len(cols.site_runs)
        if not cols.multi_at:  # single-reading messages: one run per reading
            site = pl.Series(cols.site_runs, dtype=pl.String)
        elif n_runs == 1:
            site = pl.repeat(cols.site_runs[0], cols.multi_n[0], dtype=pl.String, eager=True)
        else:
            counts = np.ones(n_runs, dtype=np.int64)
            counts[cols.multi_at] = cols.multi_n
            site = pl.Series(cols.site_runs, dtype=pl.String).gather(
                np.repeat(np.arange(n_runs, dtype=np.uint32), counts)
            )
        value = np.array(cols.value, dtype=np.float64)
        null = np.isnan(value)
        quality = np.array(cols.quality, dtype=np.int8)
        if null.any():
            quality[null] = _BAD
        return ReadingBatch(
            pl.DataFrame(
                [
                    site.alias("site"),
                    pl.Series("tag", cols.tag, dtype=pl.String),
                    pl.Series("ts_ms", cols.ts_ms, dtype=pl.Int64),
                    pl.Series("value", value, nan_to_null=True),
                    pl.Series("quality", quality),
                ]
            )
        )


def _parse_generic(payload: bytes) -> tuple[Any, str | None]:
    """(object, None) or (None, message-level reason)."""
    try:
        return _GENERIC_DECODER.decode(payload), None
    except RecursionError:
        return None, TOO_DEEP
    except Exception:  # noqa: BLE001, S110 - msgspec refuses NaN literals, huge numbers, bad UTF-8: try stdlib
        pass
    # stdlib json accepts NaN/Infinity literals and numbers beyond float range, so such readings get their
    # own reason (non_finite_value) and their good neighbours are kept. Decode UTF-8 strictly ourselves:
    # json.loads(bytes) would also guess UTF-16/32, which the contract does not allow.
    try:
        text = payload.decode("utf-8")
    except (UnicodeDecodeError, AttributeError):
        return None, NOT_JSON
    try:
        return json.loads(text), None
    except RecursionError:
        return None, TOO_DEEP
    except ValueError:  # JSONDecodeError, and the int-digits limit of int()
        return None, NOT_JSON
