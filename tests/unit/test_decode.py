"""Decode stage: every accepted form, every reject reason, mixed messages, RFC 3339 conversions.

Every table runs on both paths (`fast=True` and the slow path alone, `fast=False`), so the fast path can
only ever accept what the slow path -- the definition of the reasons -- accepts, in the same way.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

import earlywarn.decode as decode_mod
from earlywarn.config import IngestConfig
from earlywarn.decode import (
    REJECT_REASONS,
    TS_MAX_MS,
    TS_MIN_MS,
    Decoder,
    DecodeResult,
    parse_rfc3339_ms,
    site_of_topic,
)
from earlywarn.model import READING_SCHEMA, Quality, RawMessage

NOW_MS = 1_795_824_000_000  # 2026-11-28T00:00:00Z
T0 = NOW_MS - 60_000
TOPIC = "ew/s1/telemetry"
G, U, B = int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD)


@pytest.fixture(params=[True, False], ids=["fast", "slow"])
def decoder(request: pytest.FixtureRequest) -> Decoder:
    return Decoder(known_sites={"s1", "s2", "SZ-AL-0001"}, fast=request.param)


def _payload(p: Any) -> bytes:
    if isinstance(p, bytes):
        return p
    if isinstance(p, str):
        return p.encode()
    return json.dumps(p).encode()


def run(decoder: Decoder, payload: Any, topic: str = TOPIC, now_ms: int = NOW_MS) -> DecodeResult:
    return decoder.decode([RawMessage(topic, _payload(payload), mid=7, received_ms=123)], now_ms)


def rows(result: DecodeResult) -> list[tuple[Any, ...]]:
    return result.batch.frame.rows()


def reasons(result: DecodeResult) -> list[str]:
    return [r.reason for r in result.rejects]


# ---------------------------------------------------------------------------------------------
# Accepted forms

ACCEPTED: list[tuple[str, Any, list[tuple[str, int, float | None, int]]]] = [
    ("single float", {"tag": "t", "ts": T0, "value": 0.25}, [("t", T0, 0.25, G)]),
    ("single int value", {"tag": "t", "ts": T0, "value": 3}, [("t", T0, 3.0, G)]),
    ("negative and exponent", {"tag": "t", "ts": T0, "value": -1.5e-3}, [("t", T0, -1.5e-3, G)]),
    ("true is 1", {"tag": "t", "ts": T0, "value": True}, [("t", T0, 1.0, G)]),
    ("false is 0", {"tag": "t", "ts": T0, "value": False}, [("t", T0, 0.0, G)]),
    ("null is bad", {"tag": "t", "ts": T0, "value": None}, [("t", T0, None, B)]),
    ("null with q good is bad", {"tag": "t", "ts": T0, "value": None, "q": "good"}, [("t", T0, None, B)]),
    ("q good", {"tag": "t", "ts": T0, "value": 1, "q": "good"}, [("t", T0, 1.0, G)]),
    ("q uncertain", {"tag": "t", "ts": T0, "value": 1, "q": "uncertain"}, [("t", T0, 1.0, U)]),
    ("q bad", {"tag": "t", "ts": T0, "value": 1, "q": "bad"}, [("t", T0, 1.0, B)]),
    ("extra fields ignored", {"tag": "t", "ts": T0, "value": 1, "unit": "MPa", "x": [[1]]},
     [("t", T0, 1.0, G)]),
    ("field order free", {"value": 2, "q": "bad", "ts": T0, "tag": "t"}, [("t", T0, 2.0, B)]),
    ("tag charset", {"tag": "A.z_0:9-x", "ts": T0, "value": 1}, [("A.z_0:9-x", T0, 1.0, G)]),
    ("tag 128 chars", {"tag": "a" * 128, "ts": T0, "value": 1}, [("a" * 128, T0, 1.0, G)]),
    ("ts at lower bound", {"tag": "t", "ts": TS_MIN_MS, "value": 1}, [("t", TS_MIN_MS, 1.0, G)]),
    ("ts at future limit", {"tag": "t", "ts": NOW_MS + 300_000, "value": 1},
     [("t", NOW_MS + 300_000, 1.0, G)]),
    ("rfc3339 Z", {"tag": "t", "ts": "2026-11-27T23:59:00Z", "value": 1}, [("t", T0, 1.0, G)]),
    ("rfc3339 +08:00", {"tag": "t", "ts": "2026-11-28T07:59:00.000+08:00", "value": 1}, [("t", T0, 1.0, G)]),
    ("rfc3339 -05:30", {"tag": "t", "ts": "2026-11-27T18:29:00.5-05:30", "value": 1},
     [("t", T0 + 500, 1.0, G)]),
    ("rfc3339 lower-case", {"tag": "t", "ts": "2026-11-27t23:59:00z", "value": 1}, [("t", T0, 1.0, G)]),
    ("batch", {"ts": T0, "readings": [{"tag": "a", "value": 1}, {"tag": "b", "value": 2, "q": "bad"}]},
     [("a", T0, 1.0, G), ("b", T0, 2.0, B)]),
    ("batch own ts wins",
     {"ts": T0, "readings": [{"tag": "a", "ts": T0 - 5, "value": 1}, {"tag": "a", "value": 2}]},
     [("a", T0 - 5, 1.0, G), ("a", T0, 2.0, G)]),
    ("batch without batch ts", {"readings": [{"tag": "a", "ts": T0, "value": 1}]}, [("a", T0, 1.0, G)]),
    ("batch rfc3339 ts inherited", {"ts": "2026-11-27T23:59:00Z", "readings": [{"tag": "a", "value": 1}]},
     [("a", T0, 1.0, G)]),
    ("batch bad batch ts unused", {"ts": "yesterday", "readings": [{"tag": "a", "ts": T0, "value": 1}]},
     [("a", T0, 1.0, G)]),
    ("batch mixed values", {"ts": T0, "readings": [
        {"tag": "a", "value": True}, {"tag": "a", "value": None, "q": "uncertain"},
        {"tag": "a", "value": 7}]},
     [("a", T0, 1.0, G), ("a", T0, None, B), ("a", T0, 7.0, G)]),
    ("batch keeps order, no dedup", {"readings": [
        {"tag": "a", "ts": T0, "value": 1}, {"tag": "a", "ts": T0 - 9, "value": 2},
        {"tag": "a", "ts": T0, "value": 1}]},
     [("a", T0, 1.0, G), ("a", T0 - 9, 2.0, G), ("a", T0, 1.0, G)]),
    ("empty readings list is no reading and no reject", {"ts": T0, "readings": []}, []),
    ("UTF-8 BOM ignored", b"\xef\xbb\xbf" + json.dumps({"tag": "t", "ts": T0, "value": 1}).encode(),
     [("t", T0, 1.0, G)]),
    ("whitespace around", b"\r\n\t " + json.dumps({"tag": "t", "ts": T0, "value": 1}).encode() + b" \n",
     [("t", T0, 1.0, G)]),
]


@pytest.mark.parametrize(("name", "payload", "expected"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(decoder: Decoder, name: str, payload: Any, expected: list[tuple[Any, ...]]) -> None:
    result = run(decoder, payload)
    assert result.rejects == []
    assert rows(result) == [("s1", *e) for e in expected]
    assert result.messages == 1


def test_topic_with_more_levels_and_site_from_topic_only(decoder: Decoder) -> None:
    payload = {"tag": "t", "ts": T0, "value": 1, "site": "s2"}
    result = run(decoder, payload, topic="ew/SZ-AL-0001/telemetry/gw-3/line/7")
    assert rows(result) == [("SZ-AL-0001", "t", T0, 1.0, G)]


def test_frame_has_reading_schema(decoder: Decoder) -> None:
    result = run(decoder, {"tag": "t", "ts": T0, "value": True})
    assert result.batch.frame.schema == pl.Schema(READING_SCHEMA)
    empty = decoder.decode([], NOW_MS)
    assert empty.batch.frame.schema == pl.Schema(READING_SCHEMA)
    assert (len(empty.batch), empty.rejects, empty.messages) == (0, [], 0)


# ---------------------------------------------------------------------------------------------
# Message-level rejects

DEEP = b"[" * 100_000
MESSAGE_REJECTS: list[tuple[str, Any, str]] = [
    ("empty payload", b"", "not_json"),
    ("truncated object", b'{"tag": "t", "ts": 1795823940000, "val', "not_json"),
    ("truncated batch", b'{"ts": 1795823940000, "readings": [{"tag": "a", "value": 1},', "not_json"),
    ("binary garbage", bytes(range(256)), "not_json"),
    ("gzip bytes", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", "not_json"),
    ("invalid UTF-8 in string", b'{"tag": "t\xff", "ts": 1795823940000, "value": 1}', "not_json"),
    ("overlong UTF-8", b'{"tag": "\xc0\xaf", "ts": 1795823940000, "value": 1}', "not_json"),
    ("UTF-16 JSON", json.dumps({"tag": "t", "ts": T0, "value": 1}).encode("utf-16"), "not_json"),
    ("single quotes", b"{'tag': 't', 'ts': 1795823940000, 'value': 1}", "not_json"),
    ("trailing comma", b'{"tag": "t", "ts": 1795823940000, "value": 1,}', "not_json"),
    ("two documents", b'{"tag": "t", "ts": 1795823940000, "value": 1}{}', "not_json"),
    ("plain text", b"pressure=0.25", "not_json"),
    ("top-level array", b'[{"tag": "t", "ts": 1795823940000, "value": 1}]', "not_object"),
    ("top-level string", b'"hello"', "not_object"),
    ("top-level number", b"42", "not_object"),
    ("top-level null", b"null", "not_object"),
    ("top-level NaN", b"NaN", "not_object"),  # our fallback parser takes the literal; still not an object
    ("readings object", {"ts": T0, "readings": {"tag": "a", "value": 1}}, "bad_readings"),
    ("readings string", {"ts": T0, "readings": "a=1"}, "bad_readings"),
    ("readings null", {"ts": T0, "readings": None}, "bad_readings"),
    ("deep open arrays", DEEP, "too_deep"),
    ("deep closed arrays", b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    ("deep objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too_deep"),
    ("deep in an extra field", b'{"tag": "t", "ts": 1795823940000, "value": 1, "x": ' + DEEP, "too_deep"),
    ("deep in value", b'{"tag": "t", "ts": 1795823940000, "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "too_deep"),
]


@pytest.mark.parametrize(("name", "payload", "reason"), MESSAGE_REJECTS, ids=[c[0] for c in MESSAGE_REJECTS])
def test_message_rejects(decoder: Decoder, name: str, payload: Any, reason: str) -> None:
    raw = _payload(payload)
    result = run(decoder, raw)
    assert reasons(result) == [reason]
    assert len(result.batch) == 0
    rej = result.rejects[0]
    assert (rej.received_ms, rej.topic) == (123, TOPIC)
    assert len(rej.payload) <= 200
    assert rej.payload == raw[:200].decode("utf-8", errors="replace")[:200]


def test_payload_too_large_is_checked_before_parsing() -> None:
    d = Decoder(known_sites=None, max_payload_bytes=1000)
    ok = json.dumps({"tag": "t", "ts": T0, "value": 1}).encode().ljust(1000)
    big = b"{" + b" " * 1000  # would be not_json if it were parsed
    result = d.decode([RawMessage(TOPIC, ok), RawMessage(TOPIC, big)], NOW_MS)
    assert reasons(result) == ["payload_too_large"]
    assert len(result.batch) == 1
    assert len(result.rejects[0].payload) == 200


def test_default_max_payload_is_one_mib(decoder: Decoder) -> None:
    filler = "x" * (1 << 20)
    assert reasons(run(decoder, {"tag": "t", "ts": T0, "value": 1, "pad": filler})) == ["payload_too_large"]


@pytest.mark.parametrize(
    "topic",
    [
        "ew/s1/telemetr", "ew//telemetry", "xx/s1/telemetry", "EW/s1/telemetry", "ew/s 1/telemetry",
        "ew/s1", "ew/s1/notices", "/ew/s1/telemetry", "ew/s1/telemetryX", "ew/a/b/telemetry",
        "ew/" + "a" * 65 + "/telemetry", "ew/s+/telemetry", "ew/s#/telemetry", "ew/s\u00e9/telemetry", "",
    ],
)
def test_bad_topic(decoder: Decoder, topic: str) -> None:
    result = run(decoder, {"tag": "t", "ts": T0, "value": 1}, topic=topic)
    assert reasons(result) == ["bad_topic"]
    assert result.rejects[0].topic == topic


def test_site_pattern_limits() -> None:
    assert site_of_topic("ew/" + "a" * 64 + "/telemetry") == "a" * 64
    assert site_of_topic("ew/a.b_c-9/telemetry/") == "a.b_c-9"
    assert site_of_topic("ew/s1/telemetry\n") is None


def test_unknown_site(decoder: Decoder) -> None:
    result = run(decoder, {"tag": "t", "ts": T0, "value": 1}, topic="ew/intruder/telemetry")
    assert reasons(result) == ["unknown_site"]


def test_unknown_site_accepted_when_configured() -> None:
    for d in (Decoder(known_sites={"s1"}, accept_unknown_sites=True), Decoder(known_sites=None)):
        msg = RawMessage("ew/new-site/telemetry", b'{"tag":"t","ts":%d,"value":1}' % T0)
        result = d.decode([msg], NOW_MS)
        assert rows(result) == [("new-site", "t", T0, 1.0, G)]


# ---------------------------------------------------------------------------------------------
# Reading-level rejects (each in a single-reading message and inside a batch beside a good reading)

READING_REJECTS: list[tuple[str, Any, str]] = [
    ("number reading", 5, "bad_reading"),
    ("string reading", "t=1", "bad_reading"),
    ("null reading", None, "bad_reading"),
    ("list reading", ["t", T0, 1], "bad_reading"),
    ("missing tag", {"ts": T0, "value": 1}, "missing_tag"),
    ("empty object", {}, "missing_tag"),
    ("null tag", {"tag": None, "ts": T0, "value": 1}, "bad_tag"),
    ("number tag", {"tag": 12, "ts": T0, "value": 1}, "bad_tag"),
    ("empty tag", {"tag": "", "ts": T0, "value": 1}, "bad_tag"),
    ("tag with space", {"tag": "cw pressure", "ts": T0, "value": 1}, "bad_tag"),
    ("tag with slash", {"tag": "a/b", "ts": T0, "value": 1}, "bad_tag"),
    ("tag with newline", {"tag": "a\n", "ts": T0, "value": 1}, "bad_tag"),
    ("tag non-ASCII", {"tag": "\u538b\u529b", "ts": T0, "value": 1}, "bad_tag"),
    ("tag 129 chars", {"tag": "a" * 129, "ts": T0, "value": 1}, "bad_tag"),
    ("missing ts", {"tag": "t", "value": 1}, "missing_ts"),
    ("null ts", {"tag": "t", "ts": None, "value": 1}, "bad_ts"),
    ("bool ts", {"tag": "t", "ts": True, "value": 1}, "bad_ts"),
    ("float ts", {"tag": "t", "ts": float(T0), "value": 1}, "bad_ts"),
    ("fractional ts", {"tag": "t", "ts": T0 + 0.5, "value": 1}, "bad_ts"),
    ("numeric string ts", {"tag": "t", "ts": str(T0), "value": 1}, "bad_ts"),
    ("rfc3339 without offset", {"tag": "t", "ts": "2026-11-27T23:59:00", "value": 1}, "bad_ts"),
    ("date only", {"tag": "t", "ts": "2026-11-27", "value": 1}, "bad_ts"),
    ("month 13", {"tag": "t", "ts": "2026-13-01T00:00:00Z", "value": 1}, "bad_ts"),
    ("february 30", {"tag": "t", "ts": "2026-02-30T00:00:00Z", "value": 1}, "bad_ts"),
    ("hour 24", {"tag": "t", "ts": "2026-11-27T24:00:00Z", "value": 1}, "bad_ts"),
    ("offset +24:00", {"tag": "t", "ts": "2026-11-27T23:00:00+24:00", "value": 1}, "bad_ts"),
    ("offset without colon", {"tag": "t", "ts": "2026-11-27T23:00:00+0800", "value": 1}, "bad_ts"),
    ("basic iso format", {"tag": "t", "ts": "20261127T230000Z", "value": 1}, "bad_ts"),
    ("unicode digits", {"tag": "t", "ts": "\u0662026-11-27T23:00:00Z", "value": 1}, "bad_ts"),
    ("garbage ts string", {"tag": "t", "ts": "yesterday", "value": 1}, "bad_ts"),
    ("object ts", {"tag": "t", "ts": {"ms": T0}, "value": 1}, "bad_ts"),
    ("ts zero", {"tag": "t", "ts": 0, "value": 1}, "ts_out_of_range"),
    ("negative ts", {"tag": "t", "ts": -T0, "value": 1}, "ts_out_of_range"),
    ("ts in seconds", {"tag": "t", "ts": T0 // 1000, "value": 1}, "ts_out_of_range"),
    ("ts in microseconds", {"tag": "t", "ts": T0 * 1000, "value": 1}, "ts_out_of_range"),
    ("ts beyond int64", {"tag": "t", "ts": 10**30, "value": 1}, "ts_out_of_range"),
    ("ts before 2000", {"tag": "t", "ts": TS_MIN_MS - 1, "value": 1}, "ts_out_of_range"),
    ("rfc3339 before 2000", {"tag": "t", "ts": "1999-12-31T23:59:59.999Z", "value": 1}, "ts_out_of_range"),
    ("ts after 9999", {"tag": "t", "ts": TS_MAX_MS + 1, "value": 1}, "ts_out_of_range"),
    ("far-future ts", {"tag": "t", "ts": NOW_MS + 86_400_000, "value": 1}, "ts_in_future"),
    ("ts 1 ms too far ahead", {"tag": "t", "ts": NOW_MS + 300_001, "value": 1}, "ts_in_future"),
    ("rfc3339 in future", {"tag": "t", "ts": "2026-11-28T09:00:00+08:00", "value": 1}, "ts_in_future"),
    ("missing value", {"tag": "t", "ts": T0}, "missing_value"),
    ("string value", {"tag": "t", "ts": T0, "value": "0.25"}, "bad_value"),
    ("list value", {"tag": "t", "ts": T0, "value": [0.25]}, "bad_value"),
    ("object value", {"tag": "t", "ts": T0, "value": {"v": 1}}, "bad_value"),
    ("NaN value", '{"tag": "t", "ts": %d, "value": NaN}' % T0, "non_finite_value"),
    ("Infinity value", '{"tag": "t", "ts": %d, "value": Infinity}' % T0, "non_finite_value"),
    ("-Infinity value", '{"tag": "t", "ts": %d, "value": -Infinity}' % T0, "non_finite_value"),
    ("overflowing float", '{"tag": "t", "ts": %d, "value": 1e400}' % T0, "non_finite_value"),
    ("overflowing int", '{"tag": "t", "ts": %d, "value": 1%s}' % (T0, "0" * 400), "non_finite_value"),
    ("q upper case", {"tag": "t", "ts": T0, "value": 1, "q": "GOOD"}, "bad_quality"),
    ("q unknown", {"tag": "t", "ts": T0, "value": 1, "q": "excellent"}, "bad_quality"),
    ("q number", {"tag": "t", "ts": T0, "value": 1, "q": 0}, "bad_quality"),
    ("q null", {"tag": "t", "ts": T0, "value": 1, "q": None}, "bad_quality"),
    ("q list", {"tag": "t", "ts": T0, "value": 1, "q": ["good"]}, "bad_quality"),
]


# A non-object at the top level is a message fault (not_object, see MESSAGE_REJECTS), not bad_reading.
SINGLE_REJECTS = [c for c in READING_REJECTS if c[2] != "bad_reading"]


@pytest.mark.parametrize(("name", "reading", "reason"), SINGLE_REJECTS, ids=[c[0] for c in SINGLE_REJECTS])
def test_reading_rejects_single(decoder: Decoder, name: str, reading: Any, reason: str) -> None:
    result = run(decoder, reading)
    assert reasons(result) == [reason]
    assert len(result.batch) == 0
    assert result.rejects[0].received_ms == 123


def _embed(reading: Any) -> str:
    """The reading's JSON text (raw text readings, e.g. with NaN, are kept verbatim)."""
    return reading if isinstance(reading, str) and reading.startswith("{") else json.dumps(reading)


@pytest.mark.parametrize(("name", "reading", "reason"), READING_REJECTS, ids=[c[0] for c in READING_REJECTS])
def test_reading_rejects_in_batch_keep_neighbours(
    decoder: Decoder, name: str, reading: Any, reason: str
) -> None:
    good_a = {"tag": "a", "ts": T0, "value": 1}
    good_b = {"tag": "b", "ts": T0 + 1, "value": 2}
    text = '{"readings": [%s, %s, %s]}' % (json.dumps(good_a), _embed(reading), json.dumps(good_b))
    result = run(decoder, text)
    assert reasons(result) == [reason]
    assert rows(result) == [("s1", "a", T0, 1.0, G), ("s1", "b", T0 + 1, 2.0, G)]
    excerpt = result.rejects[0].payload
    assert len(excerpt) <= 200
    if not isinstance(reading, str):
        assert excerpt == json.dumps(reading, ensure_ascii=False, separators=(",", ":"))[:200]


def test_batch_ts_faults_apply_to_readings_that_inherit_it(decoder: Decoder) -> None:
    for batch_ts, reason in [(None, "bad_ts"), (True, "bad_ts"), (1.5, "bad_ts"), ("noon", "bad_ts"),
                             (5, "ts_out_of_range"), (NOW_MS + 10**9, "ts_in_future")]:
        payload = {"ts": batch_ts, "readings": [{"tag": "a", "value": 1}, {"tag": "b", "ts": T0, "value": 2}]}
        result = run(decoder, payload)
        assert reasons(result) == [reason], batch_ts
        assert rows(result) == [("s1", "b", T0, 2.0, G)]


def test_batch_without_any_ts(decoder: Decoder) -> None:
    result = run(decoder, {"readings": [{"tag": "a", "value": 1}, {"tag": "a", "ts": T0, "value": 2}]})
    assert reasons(result) == ["missing_ts"]
    assert rows(result) == [("s1", "a", T0, 2.0, G)]


def test_reject_excerpt_is_short_and_valid_text(decoder: Decoder) -> None:
    long_tag = "x" * 5000
    result = run(decoder, {"readings": [{"tag": long_tag, "ts": T0, "value": 1}]})
    assert reasons(result) == ["bad_tag"]
    assert len(result.rejects[0].payload) == 200
    # a lone surrogate escape is legal JSON but not encodable; the excerpt must still be valid UTF-8
    result = run(decoder, '{"readings": [{"tag": "\\ud800", "ts": %d, "value": 1}]}' % T0)
    assert reasons(result) == ["bad_tag"]
    result.rejects[0].payload.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Many messages


def test_mixed_messages_keep_the_good_ones(decoder: Decoder) -> None:
    msgs = [
        RawMessage(TOPIC, b'{"tag": "a", "ts": %d, "value": 1}' % T0, mid=1, received_ms=10),
        RawMessage(TOPIC, b"\x00\x01garbage", mid=2, received_ms=11),
        RawMessage("ew/nobody/telemetry", b'{"tag": "a", "ts": %d, "value": 1}' % T0, mid=3, received_ms=12),
        RawMessage("ew/s2/telemetry/dev", b'{"ts": %d, "readings": [{"tag": "b", "value": NaN}, '
                   b'{"tag": "c", "value": 3}, {"tag": "d", "value": "x"}]}' % T0, mid=4, received_ms=13),
        RawMessage(TOPIC, b'{"tag": "e", "ts": "2026-11-28T07:59:00+08:00", "value": false}',
                   mid=5, received_ms=14),
        RawMessage(TOPIC, b"[" * 50_000, mid=6, received_ms=15),
        RawMessage(TOPIC, b'{"tag": "f", "ts": %d, "value": 6, "q": "uncertain"}' % T0,
                   mid=7, received_ms=16),
    ]
    result = decoder.decode(msgs, NOW_MS)
    assert result.messages == 7
    assert rows(result) == [
        ("s1", "a", T0, 1.0, G),
        ("s2", "c", T0, 3.0, G),
        ("s1", "e", T0, 0.0, G),
        ("s1", "f", T0, 6.0, U),
    ]
    assert [(r.received_ms, r.reason) for r in result.rejects] == [
        (11, "not_json"), (12, "unknown_site"), (13, "non_finite_value"), (13, "bad_value"), (15, "too_deep"),
    ]
    assert result.rejects[2].topic == "ew/s2/telemetry/dev"
    assert result.reject_counts() == {"not_json": 1, "unknown_site": 1, "non_finite_value": 1, "bad_value": 1,
                                      "too_deep": 1}


def test_unexpected_error_becomes_decode_error_and_the_rest_go_on(decoder: Decoder,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    good = RawMessage(TOPIC, b'{"tag": "a", "ts": %d, "value": 1}' % T0)
    not_bytes = RawMessage(TOPIC, None)  # type: ignore[arg-type]
    result = decoder.decode([good, not_bytes, good], NOW_MS)
    assert reasons(result) == ["decode_error"]
    assert len(result.batch) == 2

    original = Decoder._check_reading

    def explode(self: Decoder, r: Any, batch_ts: Any, ts_limit_ms: int) -> Any:
        if isinstance(r, dict) and r.get("tag") == "boom":
            msg = "a bug"
            raise RuntimeError(msg)
        return original(self, r, batch_ts, ts_limit_ms)

    monkeypatch.setattr(Decoder, "_check_reading", explode)
    boom = RawMessage(
        TOPIC, b'{"readings": [{"tag": "a", "ts": %d, "value": 9}, {"tag": 5}, {"tag": "boom"}]}' % T0
    )
    result = decoder.decode([good, boom, good], NOW_MS)
    assert reasons(result) == ["decode_error"]
    # the half-decoded message left nothing behind: neither its good reading nor its bad_tag reject
    assert rows(result) == [("s1", "a", T0, 1.0, G)] * 2


def test_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_mod, "_CACHE_MAX", 10)
    d = Decoder(known_sites=None)
    msgs = [
        RawMessage(f"ew/s{i}/telemetry", b'{"tag": "t%d", "ts": %d, "value": 1}' % (i, T0)) for i in range(50)
    ]
    result = d.decode(msgs, NOW_MS)
    assert len(result.batch) == 50
    assert len(d._topics) <= 10 and len(d._good_tags) <= 10


def test_reasons_are_stable_snake_case() -> None:
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS) == 19
    assert all(r.replace("_", "").isalpha() and r.islower() for r in REJECT_REASONS)


def test_from_config() -> None:
    cfg = IngestConfig(max_future_ms=1000, max_payload_bytes=64, accept_unknown_sites=True)
    d = Decoder.from_config(cfg, known_sites={"s1"})
    assert (d.max_future_ms, d.max_payload_bytes, d.accept_unknown_sites) == (1000, 64, True)
    msg = RawMessage("ew/zz/telemetry", b'{"tag":"t","ts":%d,"value":1}' % (NOW_MS + 1001))
    result = d.decode([msg], NOW_MS)
    assert reasons(result) == ["ts_in_future"]


# ---------------------------------------------------------------------------------------------
# RFC 3339


def _oracle_ms(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    assert dt.tzinfo is not None
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("text", "expected_utc"),
    [
        ("2026-11-28T08:00:00.250+08:00", "2026-11-28T00:00:00.250Z"),
        ("2026-11-28T00:00:00.250Z", "2026-11-28T00:00:00.250Z"),
        ("2026-11-28T05:30:00+05:30", "2026-11-28T00:00:00Z"),
        ("2026-11-27T19:00:00-05:00", "2026-11-28T00:00:00Z"),
        ("2026-11-28T00:00:00-00:00", "2026-11-28T00:00:00Z"),
        ("2026-01-01T07:00:00+08:00", "2025-12-31T23:00:00Z"),  # crosses a year boundary
        ("2028-02-29T23:30:00-01:00", "2028-03-01T00:30:00Z"),  # leap day
        ("2026-11-28 08:00:00+08:00", "2026-11-28T00:00:00Z"),  # RFC 3339 allows a space
        ("2026-11-28T00:00:00.1Z", "2026-11-28T00:00:00.100Z"),
        ("2026-11-28T00:00:00.123999Z", "2026-11-28T00:00:00.123Z"),  # truncated, not rounded
        ("2026-11-28T00:00:00.999999999+14:00", "2026-11-27T10:00:00.999Z"),
    ],
)
def test_rfc3339_conversions(text: str, expected_utc: str) -> None:
    assert parse_rfc3339_ms(text) == _oracle_ms(expected_utc)


def test_rfc3339_leap_second_counts_as_next_second() -> None:
    assert parse_rfc3339_ms("2016-12-31T23:59:60Z") == _oracle_ms("2017-01-01T00:00:00Z")


@pytest.mark.parametrize(
    "text",
    ["2026-11-28T08:00:00", "2026-11-28", "2026-11-28T08:00Z", "2026-11-28T08:00:00.Z",
     "2026-11-28T08:00:00+8:00", "2026-11-28T08:00:00+08", "0000-01-01T00:00:00Z", "2026-11-28T08:00:61Z",
     " 2026-11-28T08:00:00Z", "2026-11-28T08:00:00Z ", "2026-11-28T08:00:00ZZ", "+2026-11-28T08:00:00Z", ""],
)
def test_rfc3339_refused(text: str) -> None:
    assert parse_rfc3339_ms(text) is None


def test_value_column_is_exact(decoder: Decoder) -> None:
    vals = [0.1, 1e-300, -0.0, 1.7976931348623157e308, 123456789012345678, 5e-324]
    payload = {"ts": T0, "readings": [{"tag": "a", "value": v} for v in vals]}
    got = run(decoder, payload).batch.frame["value"].to_list()
    assert got == [float(v) for v in vals]
    assert math.copysign(1.0, got[2]) == -1.0


def test_big_integers_convert_like_python(decoder: Decoder) -> None:
    vals = [2**53 + 1, 10**25 + 1, -(2**63) - 1, 123456789012345678901234567890]
    payload = {"ts": T0, "readings": [{"tag": "a", "value": v} for v in vals]}
    assert run(decoder, payload).batch.frame["value"].to_list() == [float(v) for v in vals]


def test_duplicate_keys_last_wins_on_both_paths(decoder: Decoder) -> None:
    text = '{"tag": "a", "tag": "b", "ts": %d, "value": 1, "value": 2}' % T0
    assert rows(run(decoder, text)) == [("s1", "b", T0, 2.0, G)]
    text = '{"tag": "a", "ts": %d, "value": 1, "value": "x"}' % T0
    assert reasons(run(decoder, text)) == ["bad_value"]


def test_message_level_rfc3339_ts_on_single_and_batch(decoder: Decoder) -> None:
    single = {"tag": "t", "ts": "2026-11-28T07:59:00+08:00", "value": 1}
    batch = {"ts": "2026-11-28T07:59:00+08:00",
             "readings": [{"tag": "a", "value": 1}, {"tag": "b", "value": 2}]}
    result = decoder.decode([RawMessage(TOPIC, _payload(single)), RawMessage(TOPIC, _payload(batch))], NOW_MS)
    assert rows(result) == [("s1", "t", T0, 1.0, G), ("s1", "a", T0, 1.0, G), ("s1", "b", T0, 2.0, G)]
    early = {"ts": "1999-12-31T23:00:00-02:00", "readings": [{"tag": "a", "value": 1}]}  # 2000-01-01T01:00Z
    assert reasons(run(decoder, early)) == []
    early["ts"] = "2000-01-01T07:59:59.999+08:00"  # 1999-12-31T23:59:59.999Z
    assert reasons(run(decoder, early)) == ["ts_out_of_range"]


def test_set_known_sites_forgets_cached_topics(decoder: Decoder) -> None:
    msg = RawMessage("ew/new/telemetry", b'{"tag": "t", "ts": %d, "value": 1}' % T0)
    assert reasons(decoder.decode([msg], NOW_MS)) == ["unknown_site"]
    decoder.set_known_sites({"s1", "new"})
    assert len(decoder.decode([msg], NOW_MS).batch) == 1
    decoder.set_known_sites({"s1"})
    assert reasons(decoder.decode([msg], NOW_MS)) == ["unknown_site"]
    decoder.set_known_sites(None)
    assert len(decoder.decode([msg], NOW_MS).batch) == 1


def test_clean_input_never_takes_the_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard for the benchmark's premise: well-formed messages are decoded on the typed fast path."""

    def no_slow(*args: Any) -> None:
        msg = "slow path taken"
        raise AssertionError(msg)

    monkeypatch.setattr(Decoder, "_slow", no_slow)
    d = Decoder(known_sites={"s1"})
    clean = [
        {"tag": "t", "ts": T0, "value": 0.25},
        {"tag": "t", "ts": "2026-11-28T07:59:00.000+08:00", "value": None, "q": "uncertain"},
        {"ts": T0,
         "readings": [{"tag": "a", "value": 1}, {"tag": "b", "ts": T0 - 1, "value": True, "q": "bad"}]},
        {"ts": "2026-11-27T23:59:00Z", "readings": [{"tag": "a", "value": 1.5, "unit": "MPa"}]},
        {"readings": [{"tag": "a", "ts": "2026-11-27T23:59:00Z", "value": 1},
                      {"tag": "a", "ts": T0, "value": 2}]},
        {"ts": T0, "readings": []},
    ]
    result = d.decode([RawMessage(TOPIC, _payload(p)) for p in clean], NOW_MS)
    assert result.rejects == []
    assert len(result.batch) == 7


def test_reading_level_rfc3339_mixed_with_integers(decoder: Decoder) -> None:
    payload = {"ts": T0, "readings": [
        {"tag": "a", "ts": "2026-11-28T07:59:00.001+08:00", "value": 1},
        {"tag": "b", "value": 2},
        {"tag": "c", "ts": T0 + 2, "value": 3},
        {"tag": "d", "ts": "2026-11-27T23:59:00.003Z", "value": 4},
    ]}
    assert rows(run(decoder, payload)) == [
        ("s1", "a", T0 + 1, 1.0, G), ("s1", "b", T0, 2.0, G),
        ("s1", "c", T0 + 2, 3.0, G), ("s1", "d", T0 + 3, 4.0, G),
    ]
    all_strings = {"readings": [{"tag": "a", "ts": "2026-11-27T23:59:00Z", "value": 1},
                                {"tag": "a", "ts": "2026-11-28T09:00:00+08:00", "value": 2},
                                {"tag": "a", "ts": "2026-11-27T23:59:00", "value": 3}]}
    result = run(decoder, all_strings)
    assert rows(result) == [("s1", "a", T0, 1.0, G)]
    assert reasons(result) == ["ts_in_future", "bad_ts"]
