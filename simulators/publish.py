"""Outputs: replay files (NDJSON, CSV, Parquet) and a paced MQTT publisher (paho 2.x, QoS 1).

Replay files have the columns `site, tag, ts, value, quality` with `ts` in epoch ms, `value` a float
(booleans 1.0/0.0, so one column has one type) and `quality` one of good/uncertain/bad: the input format
of `earlywarn replay`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import polars as pl

from simulators.payload import Readings
from simulators.signals import QUALITY_LABELS

# ---------------------------------------------------------------------------------------------
# Replay files

REPLAY_SCHEMA = {"site": pl.String, "tag": pl.String, "ts": pl.Int64, "value": pl.Float64, "quality": pl.String}


def readings_frame(readings: Readings | Sequence[Readings]) -> pl.DataFrame:
    """One frame `site, tag, ts, value, quality` for one or several sites, sorted by (ts, site, tag order)."""
    items = [readings] if isinstance(readings, Readings) else list(readings)
    frames = []
    for r in items:
        tags = np.array(r.tags, dtype=object)
        labels = np.array(QUALITY_LABELS, dtype=object)
        frames.append(pl.DataFrame({
            "site": np.full(len(r), r.site, dtype=object),
            "tag": tags[r.tag_idx],
            "ts": r.ts_ms,
            "value": r.value,
            "quality": labels[r.quality],
        }, schema=REPLAY_SCHEMA))
    if not frames:
        return pl.DataFrame(schema=REPLAY_SCHEMA)
    df = pl.concat(frames, how="vertical")
    return df.sort("ts", maintain_order=True) if len(frames) > 1 else df


def write_ndjson(path: str | Path, readings: Readings | Sequence[Readings]) -> Path:
    path = Path(path)
    readings_frame(readings).write_ndjson(path)
    return path


def write_csv(path: str | Path, readings: Readings | Sequence[Readings]) -> Path:
    path = Path(path)
    readings_frame(readings).write_csv(path)
    return path


def write_parquet(path: str | Path, readings: Readings | Sequence[Readings]) -> Path:
    path = Path(path)
    readings_frame(readings).write_parquet(path, compression="zstd", statistics=True)
    return path


def write_replay(path: str | Path, readings: Readings | Sequence[Readings]) -> Path:
    """Write by extension: `.ndjson`/`.jsonl`, `.csv` or `.parquet`."""
    suffix = Path(path).suffix.lower()
    writers: dict[str, Callable[[str | Path, Any], Path]] = {
        ".ndjson": write_ndjson, ".jsonl": write_ndjson, ".csv": write_csv, ".parquet": write_parquet}
    if suffix not in writers:
        msg = f"{path}: unknown replay format {suffix!r} (use .ndjson, .jsonl, .csv or .parquet)"
        raise ValueError(msg)
    return writers[suffix](path, readings)


# ---------------------------------------------------------------------------------------------
# Pacing


class TokenBucket:
    """Token bucket on a monotonic clock: `take(n)` blocks until `n` tokens are available.

    It starts with just enough for one take (no initial burst that would flatter the measured rate) and
    holds at most `burst` tokens, enough to absorb sleep overshoot without letting a stall turn into a
    long catch-up burst.
    """

    def __init__(self, rate_per_s: float, burst: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate_per_s <= 0:
            msg = f"rate must be > 0, got {rate_per_s}"
            raise ValueError(msg)
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.clock, self.sleep = clock, sleep
        self.tokens = 0.0
        self.t = clock()

    def take(self, n: float) -> None:
        if n > self.burst:
            self.burst = float(n)
        while True:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= n:
                self.tokens -= n
                return
            self.sleep((n - self.tokens) / self.rate)


# ---------------------------------------------------------------------------------------------
# MQTT


@dataclass
class PublishStats:
    messages: int
    seconds: float
    acked: int
    drain_s: float


class MqttPublisher:
    """Publishes to one broker over `connections` paho clients (round-robin), QoS 1 by default.

    paho's send path runs in each client's network thread (`loop_start`); more than one connection helps
    only when a single client's thread is the bottleneck (many small messages).
    """

    def __init__(self, host: str, port: int, *, qos: int = 1, connections: int = 1, client_id_prefix: str = "ew-sim",
                 protocol: str = "5", keepalive_s: int = 30, max_inflight: int = 1000, max_pending: int = 20_000) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.host, self.port, self.qos = host, int(port), int(qos)
        self._clients: list[Any] = []
        self._connected = [threading.Event() for _ in range(max(1, connections))]
        self._lock = threading.Lock()
        self.published = 0
        self.acked = 0
        self.failed: list[str] = []
        self.max_pending = max_pending
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        for k in range(max(1, connections)):
            c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                            client_id=f"{client_id_prefix}-{k}-{id(self) & 0xFFFF:x}", protocol=proto)
            c.max_inflight_messages_set(max_inflight)
            c.max_queued_messages_set(0)  # unbounded: pacing, not the queue, limits the rate
            c.on_connect = self._on_connect_for(k)
            c.on_publish = self._on_publish
            self._clients.append(c)
        self._keepalive = keepalive_s
        self._rr = 0

    def _on_connect_for(self, k: int) -> Callable[..., None]:
        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None) -> None:
            if not getattr(reason_code, "is_failure", False):
                self._connected[k].set()
            else:
                self.failed.append(f"connect {k}: {reason_code}")
        return on_connect

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any = None, properties: Any = None) -> None:
        with self._lock:
            self.acked += 1

    def connect(self, timeout_s: float = 10.0) -> Self:
        for c in self._clients:
            c.connect(self.host, self.port, keepalive=self._keepalive)
            c.loop_start()
        deadline = time.monotonic() + timeout_s
        for ev in self._connected:
            if not ev.wait(max(deadline - time.monotonic(), 0.0)):
                self.close()
                msg = f"could not connect to mqtt://{self.host}:{self.port} within {timeout_s} s {self.failed}"
                raise ConnectionError(msg)
        return self

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message; blocks while `max_pending` messages await their PUBACK.

        Without that bound paho's queue would absorb any rate (the publish call only enqueues), the measured
        rate would be the enqueue rate rather than the wire rate, and past 65 535 pending messages paho's
        16-bit message ids collide ("queue full").
        """
        if self.published - self.acked >= self.max_pending:
            deadline = time.monotonic() + 60.0
            while self.published - self.acked >= self.max_pending:
                if time.monotonic() > deadline:
                    msg = f"no PUBACK for 60 s with {self.published - self.acked} messages pending"
                    raise TimeoutError(msg)
                time.sleep(0.0005)
        c = self._clients[self._rr]
        self._rr = (self._rr + 1) % len(self._clients)
        info = c.publish(topic, payload, qos=self.qos)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS and info.rc != self._mqtt.MQTT_ERR_NO_CONN:
            msg = f"publish failed: {self._mqtt.error_string(info.rc)}"
            raise RuntimeError(msg)
        self.published += 1
        if self.qos == 0:
            with self._lock:
                self.acked += 1

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every QoS 1 publish has its PUBACK. True when all are acknowledged."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.acked >= self.published:
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        for c in self._clients:
            try:
                c.disconnect()
            finally:
                c.loop_stop()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish_all(self, messages: Iterable[tuple[str, bytes]], *, rate_msgs_s: float | None = None,
                    drain_timeout_s: float = 60.0) -> PublishStats:
        """Publish `(topic, payload)` pairs in order, optionally paced at `rate_msgs_s`."""
        bucket = TokenBucket(rate_msgs_s, max(1.0, rate_msgs_s * 0.02)) if rate_msgs_s else None
        start = time.monotonic()
        n = 0
        for topic, payload in messages:
            if bucket is not None:
                bucket.take(1)
            self.publish(topic, payload)
            n += 1
        sent = time.monotonic()
        self.flush(drain_timeout_s)
        return PublishStats(n, sent - start, self.acked, time.monotonic() - sent)

    def publish_timed(self, messages: Iterable[Any], *, drain_timeout_s: float = 60.0,
                      on_message: Callable[[Any], None] | None = None) -> PublishStats:
        """Publish `TimedMessage`s (from `simulate_sites(...).messages()`) each at its `at_s` wall offset."""
        start = time.monotonic()
        n = 0
        for m in messages:
            delay = start + m.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.publish(m.topic, m.payload)
            n += 1
            if on_message is not None:
                on_message(m)
        sent = time.monotonic()
        self.flush(drain_timeout_s)
        return PublishStats(n, sent - start, self.acked, time.monotonic() - sent)
