"""Issue 9, topic-to-site binding.

With the shipped ACL (deploy/mosquitto/acl) a plant user publishing to another site's topic is refused by
the broker and the engine never sees the message. With a misconfigured broker (anonymous, no ACL) the
engine's own check still refuses telemetry for a site that is not registered (`unknown_site`); which
*registered* site a message claims is then unverifiable: the broker is the only party that knows who
published (SECURITY.md)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import duckdb
import paho.mqtt.client as mqtt
import pytest
from enginekit import wait_until, write_config
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from publish import Publisher
from tlsbroker import REPO, SecureMosquitto

pytestmark = pytest.mark.integration

ACL = REPO / "deploy" / "mosquitto" / "acl"
T0 = 1_764_316_800_000
USERS = {"SZ-AL-0001": "pw-al1-9c1d", "SZ-AL-0002": "pw-al2-3b7e", "earlywarn": "pw-engine-51aa"}


class V5Publisher:
    """MQTT 5, so the broker's refusal comes back as the PUBACK reason code (3.1.1 only drops silently)."""

    def __init__(self, broker: SecureMosquitto, user: str) -> None:
        self.results: dict[int, str] = {}
        self._cv = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{user}", protocol=MQTTProtocolVersion.MQTTv5)
        self.c.username_pw_set(user, USERS[user])
        self.c.on_publish = self._on_publish
        up = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: up.set() if not rc.is_failure else None
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert up.wait(10), f"{user} could not connect"

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        with self._cv:
            self.results[mid] = str(rc)
            self._cv.notify_all()

    def publish(self, topic: str, value: float, ts: int) -> str:
        """Publish at QoS 1 and return the broker's reason code."""
        info = self.c.publish(topic, json.dumps({"tag": "tag_0", "ts": ts, "value": value}), qos=1)
        with self._cv:
            assert self._cv.wait_for(lambda: info.mid in self.results, 10)
            return self.results[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _store_rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _start_engine(cfg: Path):
    from earlywarn.cli import start_runner
    from earlywarn.config import load_config

    runner = start_runner(load_config(cfg))
    assert runner.ingest.wait_connected(10)
    return runner


def test_the_shipped_acl_refuses_a_plant_publishing_to_another_sites_topic(tmp_path: Path, monkeypatch) -> None:
    broker = SecureMosquitto(tmp_path / "broker", users=USERS, acl_file=ACL).start()
    monkeypatch.setenv("EW_ACL_USER", "earlywarn")
    monkeypatch.setenv("EW_ACL_PASS", USERS["earlywarn"])
    cfg = write_config(tmp_path / "engine", broker.url, client_id="ew-acl",
                       broker_extra='username_env = "EW_ACL_USER"\npassword_env = "EW_ACL_PASS"\n')
    runner = _start_engine(cfg)
    gw = None
    try:
        gw = V5Publisher(broker, "SZ-AL-0001")
        # forged: plant SZ-AL-0001 claims readings of SZ-AL-0002 (a registered site) and of the engine's topic
        assert gw.publish("ew/SZ-AL-0002/telemetry", 1.0, T0) == "Not authorized"
        assert gw.publish("ew/SZ-AL-0002/telemetry/gw1", 1.0, T0 + 1) == "Not authorized"
        assert gw.publish("ew/SZ-AL-0001/notices", 1.0, T0 + 2) == "Not authorized"
        # its own site, with and without extra levels: accepted
        assert gw.publish("ew/SZ-AL-0001/telemetry", 2.0, T0 + 3) == "Success"
        assert gw.publish("ew/SZ-AL-0001/telemetry/gw1/dev7", 3.0, T0 + 4) == "Success"
        wait_until(lambda: (runner.metrics.registry.get_sample_value("earlywarn_store_readings_total") or 0) >= 2,
                   30, "the plant's own readings stored")
    finally:
        if gw:
            gw.close()
        runner.stop()
        runner.engine.store.close()
        broker.stop()
    db = tmp_path / "engine" / "ew.duckdb"
    assert _store_rows(db, "SELECT site, epoch_ms(ts) FROM readings ORDER BY ts") == [
        ("SZ-AL-0001", T0 + 3), ("SZ-AL-0001", T0 + 4)]
    # the engine never saw the forged messages: not even as rejects
    assert _store_rows(db, "SELECT count(*) FROM rejects") == [(0,)]
    assert re.search(r"Denied PUBLISH from gw-SZ-AL-0001 .*ew/SZ-AL-0002/telemetry", broker.log_text())


def test_a_plant_user_receives_nothing_of_another_site(tmp_path: Path) -> None:
    broker = SecureMosquitto(tmp_path / "broker", users=USERS, acl_file=ACL).start()
    got: list[str] = []
    try:
        spy = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="spy", protocol=MQTTProtocolVersion.MQTTv5)
        spy.username_pw_set("SZ-AL-0002", USERS["SZ-AL-0002"])
        spy.on_message = lambda c, u, m: got.append(m.topic)
        subscribed = threading.Event()
        spy.on_subscribe = lambda *a: subscribed.set()
        spy.connect(broker.host, broker.port)
        spy.loop_start()
        spy.subscribe([("ew/#", 1)])
        assert subscribed.wait(10)
        gw = V5Publisher(broker, "SZ-AL-0001")
        engine = V5Publisher(broker, "earlywarn")
        assert gw.publish("ew/SZ-AL-0001/telemetry", 1.0, T0) == "Success"
        assert engine.publish("ew/SZ-AL-0001/notices", 1.0, T0) == "Success"
        assert engine.publish("ew/SZ-AL-0002/notices", 1.0, T0) == "Success"  # its own notice: delivered
        wait_until(lambda: "ew/SZ-AL-0002/notices" in got, 10, "the spy's own notice")
        gw.close()
        engine.close()
        spy.disconnect()
        spy.loop_stop()
    finally:
        broker.stop()
    # mosquitto grants the wildcard subscription but filters every message by the read ACL
    assert got == ["ew/SZ-AL-0002/notices"]


def test_misconfigured_broker_the_engine_still_rejects_unregistered_sites(tmp_path: Path, mosquitto) -> None:
    # anonymous, no ACL: anyone can publish anything
    cfg = write_config(tmp_path / "engine", mosquitto.url, client_id="ew-noacl")
    runner = _start_engine(cfg)
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="rogue")
    try:
        for i, site in enumerate(["NOT-REGISTERED", "sz-al-0001", "SZ-AL-00010", "..", "SZ-AL-0001 ", "SZ-AL-0001"]):
            pub.publish(f"ew/{site}/telemetry", json.dumps({"tag": "tag_0", "ts": T0 + i, "value": 1}).encode())
        pub.wait_all_acked()
        wait_until(lambda: (runner.metrics.registry.get_sample_value("earlywarn_store_readings_total") or 0) >= 1,
                   30, "the registered site's reading stored")
        wait_until(lambda: (runner.metrics.registry.get_sample_value("earlywarn_rejected_total",
                                                                     {"reason": "unknown_site"}) or 0) >= 4,
                   30, "four unknown_site rejects")
    finally:
        pub.close()
        runner.stop()
        runner.engine.store.close()
    db = tmp_path / "engine" / "ew.duckdb"
    assert _store_rows(db, "SELECT site FROM readings") == [("SZ-AL-0001",)]
    rejected = sorted(_store_rows(db, "SELECT topic, reason FROM rejects"))
    assert rejected == sorted([(f"ew/{s}/telemetry", "unknown_site") for s in ["NOT-REGISTERED", "sz-al-0001",
                                                                             "SZ-AL-00010", ".."]]
                              + [("ew/SZ-AL-0001 /telemetry", "bad_topic")])
