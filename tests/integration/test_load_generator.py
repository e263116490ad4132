"""The load generator and the plant publisher against a real mosquitto (fixture `mosquitto` in
tests/conftest.py): the achieved rate is within 5 % of the requested one and every reading arrives."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from waiting import wait_until

from simulators.load import run_load
from simulators.publish import MqttPublisher
from simulators.run import run_scenario

pytestmark = pytest.mark.integration


class Counting:
    """A subscriber on `ew/+/telemetry/#` counting readings (and keeping payloads when asked)."""

    def __init__(self, host: str, port: int, *, keep: bool = False) -> None:
        self.readings = 0
        self.messages = 0
        self.payloads: Counter[bytes] = Counter()
        self.keep = keep
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"count-{id(self)}")
        self.c.on_connect = lambda c, u, f, rc, p=None: c.subscribe("ew/+/telemetry/#", qos=1)
        self.c.on_subscribe = lambda *a: self._subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(host, port)
        self.c.loop_start()
        assert self._subscribed.wait(10), "subscriber did not get its SUBACK"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        obj = json.loads(msg.payload)
        n = len(obj["readings"]) if "readings" in obj else 1
        with self._lock:
            self.readings += n
            self.messages += 1
            if self.keep:
                self.payloads[msg.payload] += 1

    def wait_for(self, readings: int, timeout_s: float = 15.0) -> int:
        """The readings counted once `readings` arrived or `timeout_s` passed (the caller checks the count)."""
        with contextlib.suppress(AssertionError):
            wait_until(lambda: self.readings >= readings, timeout_s, f"{readings} readings", interval_s=0.02)
        return self.readings

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_load_generator_rate_and_delivery(mosquitto: Any) -> None:
    sub = Counting(mosquitto.host, mosquitto.port)
    try:
        rep = run_load(mosquitto.host, mosquitto.port, sites=20, tags_per_site=50, rate_readings_s=20_000,
                       duration_s=3.0, readings_per_message=100, qos=1, seed=1)
        got = sub.wait_for(rep.readings)
    finally:
        sub.close()
    assert rep.readings == 60_000 and rep.messages == 600
    assert abs(rep.achieved_rate - 20_000) / 20_000 <= 0.05, rep
    assert rep.all_acked
    assert got == rep.readings


def test_plant_messages_arrive_byte_for_byte(mosquitto: Any) -> None:
    run = run_scenario("span_gas_test", seed=3)
    msgs, _ = run.messages()
    sub = Counting(mosquitto.host, mosquitto.port, keep=True)
    try:
        with MqttPublisher(mosquitto.host, mosquitto.port, qos=1) as pub:
            stats = pub.publish_all([(m.topic, m.payload) for m in msgs], rate_msgs_s=5000)
        sub.wait_for(len(run.readings()))
    finally:
        sub.close()
    assert stats.acked == stats.messages == len(msgs)
    assert sub.payloads == Counter(m.payload for m in msgs)


def test_load_generator_with_two_publisher_processes(mosquitto: Any) -> None:
    sub = Counting(mosquitto.host, mosquitto.port)
    try:
        rep = run_load(mosquitto.host, mosquitto.port, sites=4, tags_per_site=25, rate_readings_s=5_000,
                       duration_s=2.0, readings_per_message=10, qos=1, seed=2, processes=2)
        got = sub.wait_for(rep.readings)
    finally:
        sub.close()
    assert rep.connections == 2 and rep.readings == 10_000
    assert abs(rep.achieved_rate - 5_000) / 5_000 <= 0.05, rep
    assert got == rep.readings
