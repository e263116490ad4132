"""Issue 2 acceptance: a lossless telemetry path from a real mosquitto to a real DuckDB file.

Every test starts its own mosquitto on a free port (tests/brokers.py) and writes DuckDB in tmp_path.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import waiting
from brokers import Mosquitto, free_port
from publish import T0_MS, Publisher, telemetry_messages

pytestmark = pytest.mark.integration

SITES = ["SZ-HC-0001", "SZ-DU-0001", "SZ-AL-0001", "SZ-AL-0002"]


def write_config(tmp_path: Path, broker: Mosquitto, *, metrics_port: int | None = None, client_id: str = "ew-test",
                 extra: str = "") -> Path:
    (tmp_path / "sites.toml").write_text(
        "".join(
            f'[[site]]\nid = "{s}"\nname = "{s}"\nplant = "{p}"\ndistrict = "wujiang"\n\n'
            for s, p in zip(SITES, ["hazchem", "dust", "aluminum", "aluminum"])
        )
    )
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    for plant in ("hazchem", "dust", "aluminum"):
        # one plain rule per plant: these tests are about the lossless path, not about rules
        (rules / f"{plant}.toml").write_text(
            f'plant = "{plant}"\n[[tag]]\nname = "tag_0"\n[[rule]]\nid = "tag_0_h"\nkind = "threshold"\n'
            'tag = "tag_0"\nop = ">"\nlimit = 99.0\nseverity = "blue"\nmessage = "tag_0 high"\n'
        )
    cfg = tmp_path / "earlywarn.toml"
    cfg.write_text(
        f'[broker]\nurl = "{broker.url}"\nclient_id = "{client_id}"\nreconnect_min = "1s"\nreconnect_max = "2s"\n'
        '[store]\npath = "ew.duckdb"\n'
        '[rules]\nsites = "sites.toml"\ndir = "rules"\n'
        '[http]\nlisten = ""\n'
        f'[metrics]\nlisten = "{"127.0.0.1:%d" % metrics_port if metrics_port else ""}"\n'
        '[ingest]\nmax_future = "3650d"\n'
        + extra
    )
    return cfg


def stored_sample(runner) -> float:
    return runner.metrics.registry.get_sample_value("earlywarn_store_readings_total") or 0.0


def wait_until(pred, timeout_s: float, what: str) -> None:
    waiting.wait_until(pred, timeout_s, what)


def readings_stats(db: Path) -> tuple[int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        total, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (site, tag, ts)) FROM readings"
        ).fetchone()
    finally:
        con.close()
    return total, distinct


def start_engine(cfg_path: Path):
    from earlywarn.app import start_runner
    from earlywarn.config import load_config

    runner = start_runner(load_config(cfg_path))
    assert runner.ingest.wait_connected(10)
    return runner


def test_100k_readings_mixed_payloads_with_redeliveries_are_stored_exactly_once(tmp_path: Path, mosquitto) -> None:
    cfg = write_config(tmp_path, mosquitto)
    runner = start_engine(cfg)
    msgs = telemetry_messages(SITES, 100_000, single_share=0.2)
    rng = random.Random(1)
    dup = rng.sample(range(len(msgs)), k=max(1, len(msgs) // 100))  # 1 % of messages published twice
    stream = list(msgs)
    for i in dup:
        stream.insert(rng.randrange(i, len(stream) + 1), msgs[i])
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        pub.publish_many(stream)
        pub.wait_all_acked()
        wait_until(lambda: stored_sample(runner) >= 100_000, 120, "100 000 readings stored")
        # the memory an operator watches: the whole process, and DuckDB's bounded share of it
        reg = runner.metrics.registry
        assert (reg.get_sample_value("process_resident_memory_bytes") or 0) > 50 * 2**20
        assert 0 < (reg.get_sample_value("earlywarn_store_memory_bytes") or 0) < 2**30
    finally:
        pub.close()
        runner.stop()
        runner.engine.store.close()
    total, distinct = readings_stats(tmp_path / "ew.duckdb")
    assert (total, distinct) == (100_000, 100_000)


def test_good_readings_kept_and_each_bad_one_rejected_with_its_reason(tmp_path: Path, mosquitto) -> None:
    cfg = write_config(tmp_path, mosquitto)
    runner = start_engine(cfg)
    good_and_bad = {
        "ts": T0_MS,
        "readings": [
            {"tag": "a", "value": 1.0},
            {"tag": "b", "value": "high"},
            {"tag": "c", "ts": "yesterday", "value": 1},
            {"value": 2.0},
            {"tag": "d", "value": 3.5, "q": "uncertain"},
        ],
    }
    malformed = [
        b'{"tag": "x", "ts": 1764316800000, "value": ',  # truncated
        b"\x00\xff\xfe garbage",
        b"[1, 2, 3]",
        b'{"tag": "x", "ts": 1764316800000, "value": NaN}',
        b'{"tag": "x", "ts": 1764316800000, "value": Infinity}',
        b'{"tag": null, "ts": 1764316800000, "value": 1}',
        b'{"tag": "x", "ts": 99999999999999999, "value": 1}',
        b'{"tag": "x", "ts": "2026-13-45T99:00:00Z", "value": 1}',
        b'{"tag": "x", "ts": true, "value": 1}',
        b'{"tag": "x", "ts": 1764316800000, "value": {"a": 1}}',
        b'{"tag": "x", "ts": 1764316800000, "value": 1, "q": "excellent"}',
        b'{"readings": "nope"}',
        b"[" * 100_000,
        b'{"tag": "' + b"x" * 300 + b'", "ts": 1764316800000, "value": 1}',
        b'{"tag": "bad tag!", "ts": 1764316800000, "value": 1}',
        b"",
        b'"just a string"',
        b'{"tag": "x", "value": 1}',
        b'{"tag": "x", "ts": 1764316800000}',
        b'{"ts": 1764316800000, "readings": [1, "two", null]}',
        b"\xef\xbb\xbf{}",
        b'{"tag": "x", "ts": 1764316800000.5, "value": 1}',
    ]
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        pub.publish("ew/SZ-HC-0001/telemetry", json.dumps(good_and_bad).encode())
        for p in malformed:
            pub.publish("ew/SZ-HC-0001/telemetry", p)
        pub.publish("ew/SZ-HC-0001/telemetry", b"{" + b'"k": 1, ' * 200_000 + b'"tag": "x"}')  # > 1 MiB
        pub.publish("ew/NOT-A-SITE/telemetry", b'{"tag": "x", "ts": 1764316800000, "value": 1}')
        # the engine keeps going: a good reading after all of that is stored
        pub.publish("ew/SZ-HC-0001/telemetry", json.dumps({"tag": "after", "ts": T0_MS + 5, "value": 7}).encode())
        pub.wait_all_acked()
        wait_until(lambda: stored_sample(runner) >= 3, 30, "the good readings")
        time.sleep(0.3)
        assert runner.error is None
    finally:
        pub.close()
        runner.stop()
        runner.engine.store.close()
    con = duckdb.connect(str(tmp_path / "ew.duckdb"), read_only=True)
    tags = sorted(r[0] for r in con.execute("SELECT tag FROM readings").fetchall())
    reasons = [r[0] for r in con.execute("SELECT reason FROM rejects").fetchall()]
    con.close()
    assert tags == ["a", "after", "d"]
    for reason in ("bad_value", "bad_ts", "missing_tag", "not_json", "payload_too_large", "unknown_site",
                   "non_finite_value"):
        assert reason in reasons, (reason, reasons)
    assert len(reasons) >= 3 + len(malformed)


def _metrics_value(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _spawn_engine(cfg: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "earlywarn", "run", "--config", str(cfg)],
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, env=env,
    )


def test_kill_9_mid_stream_then_restart_loses_nothing_and_duplicates_nothing(tmp_path: Path, mosquitto) -> None:
    mport = free_port()
    cfg = write_config(tmp_path, mosquitto, metrics_port=mport, client_id="ew-kill")
    log_path = tmp_path / "engine.log"
    proc = _spawn_engine(cfg, log_path)
    wait_until(lambda: _metrics_value(mport, "earlywarn_ingest_broker_connected") == 1.0, 30, "engine connected")
    msgs = telemetry_messages(SITES, 200_000, single_share=0.05)
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        half = len(msgs) // 2
        pub.publish_many(msgs[:half])
        wait_until(lambda: _metrics_value(mport, "earlywarn_store_readings_total") > 2_000, 60, "some readings stored")
        pub.publish_many(msgs[half:])
        wait_until(lambda: _metrics_value(mport, "earlywarn_store_readings_total") > 20_000, 60, "more stored")
        proc.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, acks pending
        proc.wait(10)
        pub.wait_all_acked()
        proc = _spawn_engine(cfg, log_path)
        wait_until(lambda: _metrics_value(mport, "earlywarn_store_readings_total") >= 0, 30, "engine restarted")
        # after the restart the counter starts at 0; wait on the file's contents instead
        def all_stored() -> bool:
            return _metrics_value(mport, "earlywarn_ingest_queue_messages") == 0 and _metrics_value(
                mport, "earlywarn_ingest_broker_connected") == 1.0
        wait_until(all_stored, 60, "engine idle")
        time.sleep(2)
    finally:
        pub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    total, distinct = readings_stats(tmp_path / "ew.duckdb")
    assert distinct == 200_000, log_path.read_text()[-3000:]
    assert total == 200_000


def test_broker_stopped_10s_and_restarted_loses_nothing(tmp_path: Path, mosquitto) -> None:
    cfg = write_config(tmp_path, mosquitto, client_id="ew-restart")
    runner = start_engine(cfg)
    msgs = telemetry_messages(SITES, 30_000, single_share=0.1)
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="pub-restart")
    try:
        third = len(msgs) // 3
        pub.publish_many(msgs[:third])
        mosquitto.stop()
        pub.publish_many(msgs[third : 2 * third])  # queued by the publisher while the broker is away
        time.sleep(10)
        mosquitto.start()
        pub.publish_many(msgs[2 * third :])
        pub.wait_all_acked(timeout_s=120)
        wait_until(lambda: stored_sample(runner) >= 30_000, 120, "every reading stored after the restart")
        assert runner.metrics.registry.get_sample_value("earlywarn_ingest_reconnects_total") >= 1
    finally:
        pub.close()
        runner.stop()
        runner.engine.store.close()
    assert readings_stats(tmp_path / "ew.duckdb") == (30_000, 30_000)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[broker]\nurll = "mqtt://x:1"\n', "broker.urll"),
        ('[ingest]\nbatch_max_readings = "many"\n', "ingest.batch_max_readings"),
        ('[store]\npath = 5\n', "store.path"),
        ('[nonsense]\n', "nonsense"),
        ('[broker]\nurl = "mqtt://u:secret@host:1883"\n', "broker.url"),
    ],
)
def test_bad_config_fails_at_start_naming_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    r = subprocess.run(
        [sys.executable, "-m", "earlywarn", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert str(cfg) in r.stderr and key in r.stderr
    assert "secret" not in r.stderr  # never echo a credential


def test_stock_inflight_window_of_20_does_not_stall_the_stream(tmp_path: Path, mosquitto_default_window) -> None:
    """Acks wait for the commit of a batch; with mosquitto's default window of 20 unacknowledged messages the
    idle flush must keep the stream moving instead of waiting for a full batch."""
    broker = mosquitto_default_window
    cfg = write_config(tmp_path, broker, client_id="ew-w20")
    runner = start_engine(cfg)
    msgs = telemetry_messages(SITES, 5_000, single_share=1.0)
    pub = Publisher(broker.host, broker.port, client_id="pub-w20")
    try:
        t0 = time.monotonic()
        pub.publish_many(msgs)
        pub.wait_all_acked()
        wait_until(lambda: stored_sample(runner) >= 5_000, 60, "5 000 single readings through a window of 20")
        elapsed = time.monotonic() - t0
    finally:
        pub.close()
        runner.stop()
        runner.engine.store.close()
    assert readings_stats(tmp_path / "ew.duckdb") == (5_000, 5_000)
    assert elapsed < 60
