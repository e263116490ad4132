"""Transport faults between a plant gateway and the broker, each switchable (domain.md §4 realism notes).

Applied per site (one gateway) to that site's messages in upload order:

- upload jitter 0..`jitter_max_s`: the gateway's queue is FIFO, so jitter delays messages but never reorders
  them on its own (`publish_ms = max(ts + delay, previous publish_ms)`);
- duplicates (QoS 1 redelivery): the same bytes again, 0.1–2 s later;
- out-of-order: a message overtaken by the next 1–5 messages;
- gateway outages `[start_ms, end_ms)`: nothing is published inside; the backlog flushes at `end_ms` with the
  original timestamps, a few ms apart;
- malformed messages: *extra* messages (the good one is still sent) that are truncated JSON, NaN/Infinity
  values, a bad or absurd `ts`, a missing tag, a non-object, invalid UTF-8, or an empty payload.

Every fault is recorded in a `TransportLog`, so tests and ground truth know exactly what was done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simulators.payload import Message
from simulators.signals import rng_for

MALFORMED_KINDS = ("truncated", "nan_value", "infinity_value", "bad_ts", "ts_out_of_range", "missing_tag",
                   "not_object", "bad_utf8", "empty", "string_value")


@dataclass(frozen=True)
class TransportFaults:
    """Switches and rates. The defaults are the domain's realism figures; `TransportFaults.none()` is clean."""

    jitter_max_s: float = 3.0
    duplicate_rate: float = 0.005
    out_of_order_rate: float = 0.001
    malformed_rate: float = 0.0
    outages_ms: tuple[tuple[int, int], ...] = ()  # absolute epoch ms windows `[start, end)`
    flush_spacing_ms: int = 2

    @classmethod
    def none(cls) -> TransportFaults:
        return cls(jitter_max_s=0.0, duplicate_rate=0.0, out_of_order_rate=0.0, malformed_rate=0.0)

    @classmethod
    def realistic(cls, malformed_rate: float = 0.0005) -> TransportFaults:
        return cls(malformed_rate=malformed_rate)


@dataclass
class TransportLog:
    """What the transport did to one site's messages."""

    site: str
    sent: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    held_in_outage: int = 0
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (publish_ms, kind)
    outages_ms: list[tuple[int, int]] = field(default_factory=list)


def _malform(payload: bytes, kind: str, rnd: float) -> bytes:
    s = payload.decode()
    if kind == "truncated":
        return payload[: max(1, int(len(payload) * (0.2 + 0.6 * rnd)))]
    if kind == "nan_value":
        return re.sub(r'"value":[^,}]+', '"value":NaN', s, count=1).encode()
    if kind == "infinity_value":
        return re.sub(r'"value":[^,}]+', '"value":-Infinity', s, count=1).encode()
    if kind == "bad_ts":
        return re.sub(r'"ts":\d+', '"ts":"yesterday at noon"', s, count=1).encode()
    if kind == "ts_out_of_range":
        return re.sub(r'"ts":\d+', '"ts":99999999999999999', s, count=1).encode()
    if kind == "missing_tag":
        return re.sub(r'"tag":"[^"]*",', "", s, count=1).encode()
    if kind == "not_object":
        return b"[" + payload + b"]"
    if kind == "bad_utf8":
        return payload[:8] + b"\xff\xfe\xc3" + payload[8:]
    if kind == "empty":
        return b""
    if kind == "string_value":
        return re.sub(r'"value":[^,}]+', '"value":"12.5 MPa"', s, count=1).encode()
    msg = f"unknown malformed kind {kind!r}; known: {MALFORMED_KINDS}"
    raise ValueError(msg)


def apply(messages: list[Message], faults: TransportFaults, *, site: str, seed: int) -> tuple[list[Message], TransportLog]:
    """The messages as the broker would receive them, in publish order, plus the log of faults."""
    rng = rng_for(seed, site, "transport")
    log = TransportLog(site, outages_ms=[tuple(o) for o in faults.outages_ms])
    n = len(messages)
    if n == 0:
        return [], log
    # Draw every random number up front, in fixed amounts, so switching one fault off does not shift the
    # random stream of another (each switch changes only its own effect).
    delay_ms = rng.uniform(0.0, faults.jitter_max_s * 1000.0, size=n) if faults.jitter_max_s > 0 else None
    dup_u, dup_delay = rng.random(n), rng.uniform(100, 2000, size=n)
    ooo_u, ooo_k = rng.random(n), rng.integers(1, 6, size=n)
    mal_u, mal_kind, mal_r = rng.random(n), rng.integers(0, len(MALFORMED_KINDS), size=n), rng.random(n)

    # 1. jitter through a FIFO queue
    pub = [m.publish_ms for m in messages]
    if delay_ms is not None:
        last = -(2**62)
        for i in range(n):
            p = max(int(pub[i] + delay_ms[i]), last)
            pub[i] = p
            last = p
    # 2. out-of-order: message i is overtaken by the next k messages
    keyed: list[tuple[int, int, Message]] = []
    for i, m in enumerate(messages):
        p = pub[i]
        if faults.out_of_order_rate > 0 and ooo_u[i] < faults.out_of_order_rate and i + 1 < n:
            j = min(i + int(ooo_k[i]), n - 1)
            p = pub[j] + 1
            log.out_of_order += 1
        keyed.append((p, i, m))
    # 3. duplicates and malformed extras
    extra: list[tuple[int, int, Message]] = []
    for p, i, m in keyed:
        if faults.duplicate_rate > 0 and dup_u[i] < faults.duplicate_rate:
            extra.append((p + int(dup_delay[i]), i, m))
            log.duplicates += 1
        if faults.malformed_rate > 0 and mal_u[i] < faults.malformed_rate:
            kind = MALFORMED_KINDS[int(mal_kind[i])]
            extra.append((p, i, Message(p, m.topic, _malform(m.payload, kind, float(mal_r[i])))))
            log.malformed.append((p, kind))
    keyed += extra
    keyed.sort(key=lambda x: (x[0], x[1]))
    # 4. gateway outages: hold everything due inside a window; on reconnect the backlog goes out first,
    #    a few ms apart, with its original payloads (original timestamps), and live data queues behind it.
    if faults.outages_ms:
        windows = sorted(faults.outages_ms)
        gate = -(2**62)  # the gateway's queue is busy flushing until this instant
        flushed: list[tuple[int, int, Message]] = []
        for p, i, m in keyed:
            w = next(((wa, wb) for wa, wb in windows if wa <= p < wb), None)
            if w is not None:
                p_new = max(w[1], gate)
                gate = p_new + faults.flush_spacing_ms
                log.held_in_outage += 1
            elif p < gate:
                p_new = gate
                gate = p_new + faults.flush_spacing_ms
            else:
                p_new = p
            flushed.append((p_new, i, m))
        keyed = flushed
    out = [Message(p, m.topic, m.payload) for p, _, m in keyed]
    log.sent = len(out)
    return out, log
