"""Decode properties: never raises, valid readings round-trip exactly, splitting calls changes nothing,
and the fast path always agrees with the slow path (the definition of the reasons)."""

from __future__ import annotations

import itertools
import json
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from earlywarn.decode import TS_MIN_MS, Decoder, DecodeResult
from earlywarn.model import READING_SCHEMA, Quality, RawMessage

NOW_MS = 1_795_824_000_000  # 2026-11-28T00:00:00Z
SITES = ["s1", "SZ-AL-0001", "a.b_c-9"]
TOPIC = "ew/s1/telemetry"
SETTINGS = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decoders() -> list[Decoder]:
    return [Decoder(known_sites=set(SITES), fast=True), Decoder(known_sites=set(SITES), fast=False)]


def check_result(result: DecodeResult, n_messages: int) -> None:
    assert result.messages == n_messages
    assert result.batch.frame.schema == pl.Schema(READING_SCHEMA)
    for r in result.rejects:
        assert isinstance(r.reason, str) and r.reason
        assert len(r.payload) <= 200
        r.payload.encode("utf-8")  # storable text


def same(a: DecodeResult, b: DecodeResult) -> None:
    assert a.batch.frame.equals(b.batch.frame)
    assert a.rejects == b.rejects
    assert a.messages == b.messages


# ---------------------------------------------------------------------------------------------
# Never raises

topics = st.one_of(
    st.sampled_from([f"ew/{s}/telemetry" for s in SITES] + ["ew/x/telemetry", "bad"]), st.text()
)


@settings(SETTINGS, max_examples=200)
@given(payloads=st.lists(st.binary(max_size=300), max_size=5), topic=topics)
def test_never_raises_on_arbitrary_bytes(payloads: list[bytes], topic: str) -> None:
    msgs = [RawMessage(topic, p) for p in payloads]
    fast, slow = (d.decode(msgs, NOW_MS) for d in decoders())
    check_result(fast, len(msgs))
    same(fast, slow)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Values shaped like readings, so the generator reaches the per-reading checks, not just not_object.
field_values = st.one_of(
    json_values,
    st.integers(min_value=TS_MIN_MS - 10, max_value=NOW_MS + 10**6),
    st.sampled_from(["good", "bad", "uncertain", "GOOD", "t1", "a b", "2026-11-27T23:00:00+08:00",
                     "2026-11-27T23:00:00", "Infinity"]),
)
reading_like = st.dictionaries(st.sampled_from(["tag", "ts", "value", "q", "x"]), field_values, max_size=5)
message_like = st.one_of(
    json_values,
    reading_like,
    st.fixed_dictionaries({"readings": st.one_of(st.lists(st.one_of(reading_like, json_values), max_size=6),
                                                 json_values)},
                          optional={"ts": field_values}),
)


@SETTINGS
@given(values=st.lists(message_like, max_size=5))
def test_never_raises_on_arbitrary_json(values: list[Any]) -> None:
    msgs = [RawMessage("ew/s1/telemetry", json.dumps(v, allow_nan=True).encode()) for v in values]
    fast, slow = (d.decode(msgs, NOW_MS) for d in decoders())
    check_result(fast, len(msgs))
    same(fast, slow)
    # every message is accounted for: readings kept or rejects produced (or an empty readings list)
    assert all(q in (0, 1, 2) for q in fast.batch.frame["quality"].to_list())


# ---------------------------------------------------------------------------------------------
# Round trip

TAG_ALPHABET = string.ascii_letters + string.digits + "_.:-"
tags = st.text(alphabet=TAG_ALPHABET, min_size=1, max_size=128)
ts_ms = st.integers(min_value=TS_MIN_MS, max_value=NOW_MS + 300_000)
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53),
                   st.booleans(), st.none())
qualities = st.sampled_from([None, "good", "uncertain", "bad"])
offsets_min = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59)


@st.composite
def readings(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[str, int, float | None, int]]:
    """A valid reading as sent, and the row it must become (without the site)."""
    tag, ts, value, q = draw(tags), draw(ts_ms), draw(values), draw(qualities)
    sent: dict[str, Any] = {"tag": tag, "value": value}
    if draw(st.booleans()):
        sent["ts"] = ts
    else:  # the same instant as RFC 3339 in some local offset
        off = timedelta(minutes=draw(offsets_min))
        local = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ts)
        sent["ts"] = local.astimezone(timezone(off)).isoformat(timespec="milliseconds")
        if off == timedelta(0) and draw(st.booleans()):
            sent["ts"] = sent["ts"].replace("+00:00", "Z")
    if q is not None:
        sent["q"] = q
    if draw(st.booleans()):
        sent["extra"] = draw(json_values)
    quality = Quality.BAD if value is None else Quality[(q or "good").upper()]
    return sent, (tag, ts, None if value is None else float(value), int(quality))


@st.composite
def messages(draw: st.DrawFn) -> tuple[RawMessage, list[tuple[Any, ...]]]:
    site = draw(st.sampled_from(SITES))
    topic = f"ew/{site}/telemetry" + draw(st.sampled_from(["", "/dev1", "/a/b/c"]))
    if draw(st.booleans()):
        sent, row = draw(readings())
        return RawMessage(topic, json.dumps(sent).encode()), [(site, *row)]
    items = draw(st.lists(readings(), max_size=8))
    batch_ts = draw(ts_ms)
    body = []
    rows = []
    for sent, row in items:
        if draw(st.integers(0, 3)) == 0:  # inherit the batch ts
            sent = {k: v for k, v in sent.items() if k != "ts"}
            row = (row[0], batch_ts, *row[2:])
        body.append(sent)
        rows.append((site, *row))
    return RawMessage(topic, json.dumps({"ts": batch_ts, "readings": body}).encode()), rows


@SETTINGS
@given(msgs=st.lists(messages(), max_size=8))
def test_valid_readings_round_trip_exactly(msgs: list[tuple[RawMessage, list[tuple[Any, ...]]]]) -> None:
    raw = [m for m, _ in msgs]
    expected = [row for _, rows in msgs for row in rows]
    for d in decoders():
        result = d.decode(raw, NOW_MS)
        assert result.rejects == []
        assert result.batch.frame.rows() == expected


@SETTINGS
@given(msgs=st.lists(st.one_of(messages().map(lambda m: m[0]),
                               message_like.map(lambda v: RawMessage(TOPIC, json.dumps(v).encode()))),
                     max_size=10),
       cuts=st.lists(st.integers(0, 10), max_size=4))
def test_split_calls_concatenate(msgs: list[RawMessage], cuts: list[int]) -> None:
    whole = Decoder(known_sites=set(SITES)).decode(msgs, NOW_MS)
    bounds = sorted({0, len(msgs), *(min(c, len(msgs)) for c in cuts)})
    d = Decoder(known_sites=set(SITES))  # one decoder across calls: its caches must not change results
    parts = [d.decode(msgs[a:b], NOW_MS) for a, b in itertools.pairwise(bounds)]
    frame = pl.concat([p.batch.frame for p in parts]) if parts else whole.batch.frame.clear()
    assert frame.equals(whole.batch.frame)
    assert [r for p in parts for r in p.rejects] == whole.rejects
    assert sum(p.messages for p in parts) == whole.messages
