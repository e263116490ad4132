"""Fuzz target: the payload decoder. Any topic and payload gives readings and/or rejects, never an exception
or a hang, and whatever it accepts obeys the telemetry contract (product.md §3)."""

from __future__ import annotations

import json
import math
import re

import pytest
from fuzzkit import EXAMPLES, FUZZ, corpus, count, mutate, mutations, time_limit
from hypothesis import given
from hypothesis import strategies as st

from earlywarn.decode import Decoder
from earlywarn.model import RawMessage

NOW_MS = 1_764_316_800_000
SITES = frozenset({"S1", "S-2.x"})
TAG_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
MAX_PAYLOAD = 4096  # small, so that the size limit itself is exercised

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["2026-11-28T08:00:00.250+08:00", "2026-11-28T08:00:00Z", "2026-13-45T99:00:00Z", "good",
                     "bad", "uncertain", "t", "é", "\x00", "1764316800000"]),
    st.integers(min_value=NOW_MS - 10**9, max_value=NOW_MS + 10**9),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["tag", "ts", "value", "q", "readings", "x"]), inner,
                                            max_size=5)),
    max_leaves=8,
)
readings = st.fixed_dictionaries(
    {}, optional={"tag": json_values, "ts": json_values, "value": json_values, "q": json_values, "extra": json_values}
)
messages = st.one_of(
    readings,
    st.fixed_dictionaries({"readings": st.one_of(st.lists(readings, max_size=4), json_values)},
                          optional={"ts": json_values}),
    json_values,
)


def _dumps(obj: object) -> bytes:
    # allow_nan: NaN / Infinity literals are exactly what a broken gateway sends
    return json.dumps(obj, allow_nan=True).encode()


payloads = st.one_of(
    st.binary(max_size=300),
    messages.map(_dumps),
    st.builds(lambda b, cut: b[:cut], messages.map(_dumps), st.integers(0, 200)),  # truncated JSON
    st.builds(lambda n: b"[" * n + b"]" * (n // 2), st.integers(0, 5000)),  # deep nesting
    st.builds(lambda n: b'{"tag":"t","ts":1764316800000,"value":1,"pad":"' + b"x" * n + b'"}',
              st.integers(MAX_PAYLOAD - 80, MAX_PAYLOAD + 10)),  # around the size limit
)
topics = st.one_of(
    st.sampled_from(["ew/S1/telemetry", "ew/S-2.x/telemetry/gw/1", "ew/NOPE/telemetry", "ew//telemetry",
                     "ew/S1", "ew/S1/notices", "", "ew/+/telemetry", "ew/S1/telemetry/" + "a/" * 200]),
    st.text(max_size=80),
)


def check(decoder: Decoder, msgs: list[RawMessage]) -> None:
    with time_limit():
        res = decoder.decode(msgs, NOW_MS)
    frame = res.batch.frame
    assert res.messages == len(msgs)
    for site, tag, ts_ms, value, quality in frame.iter_rows():
        assert site in SITES
        assert TAG_RE.match(tag)
        assert ts_ms <= NOW_MS + decoder.max_future_ms
        assert value is None or math.isfinite(value)
        assert quality in (0, 1, 2)
    for r in res.rejects:
        assert isinstance(r.reason, str) and r.reason
        assert len(r.payload) <= 1000  # an excerpt, never a whole hostile payload


@FUZZ.__class__(FUZZ, max_examples=max(50, EXAMPLES // 20))
@given(st.lists(st.tuples(topics, payloads), min_size=1, max_size=4), st.booleans())
def test_any_message_gives_readings_or_rejects(items: list[tuple[str, bytes]], fast: bool) -> None:
    d = Decoder(known_sites=SITES, max_payload_bytes=MAX_PAYLOAD, fast=fast)
    check(d, [RawMessage(t, p, i + 1) for i, (t, p) in enumerate(items)])
    count("decode", len(items))


SEEDS = [
    b'{"tag": "cw_pressure_mpa", "ts": 1764316800250, "value": 0.25}',
    b'{"tag": "a", "ts": "2026-11-28T08:00:00.250+08:00", "value": true, "q": "uncertain"}',
    (b'{"ts": 1764316800000, "readings": [{"tag": "a", "value": 1.0}, {"tag": "b", "ts": 1764316800001, '
     b'"value": null, "q": "bad"}, {"tag": "c", "ts": "2026-11-28T00:00:00Z", "value": -3e5}]}'),
]


@FUZZ
@given(st.sampled_from(SEEDS), mutations, st.sampled_from(["ew/S1/telemetry", "ew/NOPE/telemetry/x"]),
       st.booleans())
def test_mutated_payloads_give_readings_or_rejects(seed: bytes, ops: list, topic: str, fast: bool) -> None:
    d = Decoder(known_sites=SITES, max_payload_bytes=MAX_PAYLOAD, fast=fast)
    check(d, [RawMessage(topic, mutate(seed, ops), 1)])
    count("decode")


@pytest.mark.parametrize("path", corpus("decode"), ids=lambda p: p.name)
def test_decode_corpus_regressions(path) -> None:
    # each file: first line the topic, the rest the payload bytes
    topic, _, payload = path.read_bytes().partition(b"\n")
    for fast in (True, False):
        check(Decoder(known_sites=SITES, max_payload_bytes=MAX_PAYLOAD, fast=fast),
              [RawMessage(topic.decode("utf-8", "replace"), payload, 1)])
