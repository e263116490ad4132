"""Issue 4: open alarms, their timers and the rule state survive a kill -9 of the engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
import waiting
from brokers import free_port
from publish import Publisher

pytestmark = pytest.mark.integration


def _spawn(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "earlywarn", "run", "--config", str(cfg)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=dict(os.environ))


def _wait(pred, timeout_s: float, what: str):
    return waiting.wait_until(pred, timeout_s, what, interval_s=0.1, ignore=(httpx.HTTPError,))


def _power_alarms(url: str) -> list[dict]:
    return [a for a in httpx.get(f"{url}/api/alarms", params={"site": "SZ-AL-0001"}).json()["alarms"]
            if a["rule_id"] == "power_loss"]


def test_open_alarm_keeps_id_deadlines_and_tier_across_kill_9(tmp_path: Path, mosquitto) -> None:
    port = free_port()
    (tmp_path / "sites.toml").write_text('[[site]]\nid = "SZ-AL-0001"\nplant = "aluminum"\ndistrict = "wujiang"\n')
    cfg = tmp_path / "ew.toml"
    cfg.write_text(
        f'[broker]\nurl = "{mosquitto.url}"\nclient_id = "ew-restart-alarms"\n[store]\npath = "ew.duckdb"\n'
        f'checkpoint_interval = "1s"\n[rules]\nsites = "sites.toml"\n[metrics]\nlisten = ""\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        # a short acknowledgement deadline so escalation happens within the test
        '[alarms]\nreminder_interval = "1h"\n[alarms.deadlines.orange]\nack = "3s"\nclose = "1h"\n'
    )
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "engine.log"
    proc = _spawn(cfg, log)
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="gw-restart")
    try:
        _wait(lambda: httpx.get(f"{url}/health").json()["broker_connected"], 30, "engine up")
        now = int(time.time() * 1000)
        pub.publish("ew/SZ-AL-0001/telemetry", json.dumps({"tag": "power_ok", "ts": now, "value": False}).encode())
        first = _wait(lambda: _power_alarms(url), 20, "the alarm")[0]
        escalated = _wait(lambda: [a for a in _power_alarms(url) if a["escalation_tier"] != "plant"], 20,
                          "escalation at the ack deadline")[0]
        assert escalated["alarm_id"] == first["alarm_id"]
        time.sleep(1.5)  # let a rule-state checkpoint pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # the condition persists while the engine is down: more power_ok = false readings
        for k in range(1, 4):
            pub.publish("ew/SZ-AL-0001/telemetry",
                        json.dumps({"tag": "power_ok", "ts": now + k * 100, "value": False}).encode())
        pub.wait_all_acked()
        proc = _spawn(cfg, log)
        _wait(lambda: httpx.get(f"{url}/health").json()["broker_connected"], 30, "engine back")
        time.sleep(2)
        after = _power_alarms(url)
        assert [a["alarm_id"] for a in after] == [first["alarm_id"]], after  # same alarm, no duplicate
        a = after[0]
        assert a["state"] == "active_unack" and a["raised_at"] == first["raised_at"]
        tiers = ["plant", "township", "county", "city"]
        assert tiers.index(a["escalation_tier"]) >= tiers.index(escalated["escalation_tier"])
        show = httpx.get(f"{url}/api/alarms/{a['alarm_id']}").json()
        kinds = [e["kind"] for e in show["events"]]
        assert kinds.count("raised") == 1 and "reactivated" not in kinds
        # one escalated event per tier climbed: nothing fired twice across the restart
        assert kinds.count("escalated") == tiers.index(a["escalation_tier"])
    finally:
        pub.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    con = duckdb.connect(str(tmp_path / "ew.duckdb"), read_only=True)
    n = con.execute("SELECT count(*) FROM alarms WHERE rule_id = 'power_loss'").fetchone()[0]
    readings = con.execute("SELECT count(*) FROM readings WHERE tag = 'power_ok'").fetchone()[0]
    con.close()
    assert n == 1 and readings == 4
