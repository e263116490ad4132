"""Test-side MQTT publisher: QoS 1, persistent session, waits until the broker has acknowledged everything."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence

import paho.mqtt.client as mqtt
import waiting
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

T0_MS = 1_764_316_800_000  # 2025-11-28T08:00:00Z


class Publisher:
    def __init__(self, host: str, port: int, client_id: str = "test-publisher") -> None:
        self.acked = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)  # unlimited: keep everything while the broker is away
        self.client.reconnect_delay_set(1, 2)
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise TimeoutError("publisher could not connect")
        self.sent = 0

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: object, props: object) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)
        self.sent += 1

    def publish_many(self, messages: Iterable[tuple[str, bytes]]) -> None:
        for t, p in messages:
            self.publish(t, p)

    def wait_all_acked(self, timeout_s: float = 120.0) -> None:
        try:
            waiting.wait_until(lambda: self.acked >= self.sent, timeout_s, "the broker's PUBACKs", interval_s=0.02)
        except AssertionError:
            raise TimeoutError(f"broker acknowledged {self.acked} of {self.sent} messages") from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def telemetry_messages(
    sites: Sequence[str], n_readings: int, *, batch_size: int = 100, single_share: float = 0.5,
    tags: int = 10, start_ms: int = T0_MS,
) -> list[tuple[str, bytes]]:
    """`n_readings` distinct readings, the first `single_share` as single payloads, the rest in batches."""
    out: list[tuple[str, bytes]] = []
    keys = [(sites[i % len(sites)], f"tag_{(i // len(sites)) % tags}", start_ms + i) for i in range(n_readings)]
    n_single = int(n_readings * single_share)
    for site, tag, ts in keys[:n_single]:
        out.append((f"ew/{site}/telemetry", json.dumps({"tag": tag, "ts": ts, "value": ts % 1000 / 10}).encode()))
    rest = keys[n_single:]
    by_site: dict[str, list[tuple[str, int]]] = {}
    for site, tag, ts in rest:
        by_site.setdefault(site, []).append((tag, ts))
    for site, items in by_site.items():
        for off in range(0, len(items), batch_size):
            chunk = items[off : off + batch_size]
            payload = {"ts": chunk[0][1], "readings": [{"tag": t, "ts": ts, "value": ts % 1000 / 10} for t, ts in chunk]}
            out.append((f"ew/{site}/telemetry/gw1", json.dumps(payload).encode()))
    return out
