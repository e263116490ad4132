"""Issues 4 and 5 end to end: a live engine on a real mosquitto, alarms through the HTTP API over loopback,
notices on MQTT with acknowledge links, roles enforced per site."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import waiting
from brokers import free_port
from paho.mqtt.enums import CallbackAPIVersion
from publish import Publisher

pytestmark = pytest.mark.integration

TOKENS = {
    "plant-al1": ("plant", 'sites = ["SZ-AL-0001"]'),
    "plant-al2": ("plant", 'sites = ["SZ-AL-0002"]'),
    "sup-wj": ("supervisor", 'districts = ["wujiang"]'),
    "analyst": ("analyst", ""),
}


def sha(t: str) -> str:
    return hashlib.sha256(t.encode()).hexdigest()


@pytest.fixture
def engine(tmp_path: Path, mosquitto, monkeypatch):
    from earlywarn.app import start_runner
    from earlywarn.config import load_config

    monkeypatch.setenv("EARLYWARN_LINK_SECRET", "s" * 40)
    port = free_port()
    (tmp_path / "sites.toml").write_text(
        '[[site]]\nid = "SZ-AL-0001"\nplant = "aluminum"\ndistrict = "wujiang"\n'
        '[[site.contacts]]\ntier = "plant"\nname = "Li"\nemail = "li@plant.example"\n'
        '[[site]]\nid = "SZ-AL-0002"\nplant = "aluminum"\ndistrict = "wujiang"\n'
    )
    tokens = "".join(
        f'[[http.tokens]]\nname = "{n}"\nrole = "{r}"\nsha256 = "{sha(n)}"\n{extra}\n' for n, (r, extra) in TOKENS.items()
    )
    (tmp_path / "ew.toml").write_text(
        f'[broker]\nurl = "{mosquitto.url}"\nclient_id = "ew-api"\n[store]\npath = "ew.duckdb"\n'
        f'[rules]\nsites = "sites.toml"\n[metrics]\nlisten = ""\n'
        f'[notify]\ngroup_wait = "200ms"\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n{tokens}'
    )
    runner = start_runner(load_config(tmp_path / "ew.toml"))
    assert runner.ingest.wait_connected(10)
    yield runner, f"http://127.0.0.1:{port}"
    runner.stop()
    runner.api_server.stop()
    runner.engine.store.close()


@pytest.fixture
def notices(mosquitto):
    """Every notice published on ew/+/notices, as parsed JSON."""
    got: list[dict] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="notice-sub")
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    sub.subscribe("ew/+/notices", 1)
    assert subscribed.wait(5)
    yield got
    sub.disconnect()
    sub.loop_stop()


def wait_for(pred, timeout_s=20.0, what="condition"):
    return waiting.wait_until(pred, timeout_s, what)


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def power(pub: Publisher, site: str, ok: bool, ts_ms: int) -> None:
    pub.publish(f"ew/{site}/telemetry", json.dumps({"tag": "power_ok", "ts": ts_ms, "value": ok}).encode())


def alarm_of(url: str, token: str, site: str, rule: str = "power_loss") -> dict | None:
    r = httpx.get(f"{url}/api/alarms", params={"site": site}, headers=h(token))
    assert r.status_code == 200, r.text
    return next((a for a in r.json()["alarms"] if a["rule_id"] == rule), None)


def test_alarm_close_out_through_the_api_with_roles(engine, mosquitto, notices) -> None:
    _, url = engine
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="plant-gw")
    now = int(time.time() * 1000)
    try:
        power(pub, "SZ-AL-0001", True, now - 3000)
        power(pub, "SZ-AL-0001", False, now - 2000)
        power(pub, "SZ-AL-0002", False, now - 2000)
        a1 = wait_for(lambda: alarm_of(url, "sup-wj", "SZ-AL-0001"), what="alarm at AL-0001")
        a2 = wait_for(lambda: alarm_of(url, "sup-wj", "SZ-AL-0002"), what="alarm at AL-0002")
        assert a1["state"] == "active_unack" and a1["severity"] == "orange"

        # a plant token sees its own site only: the other site's alarm does not exist for it
        assert alarm_of(url, "plant-al1", "SZ-AL-0002") is None
        assert httpx.get(f"{url}/api/alarms/{a2['alarm_id']}", headers=h("plant-al1")).status_code == 404
        assert httpx.post(f"{url}/api/alarms/{a2['alarm_id']}/ack", json={}, headers=h("plant-al1")).status_code == 404
        # no token, a wrong token
        assert httpx.get(f"{url}/api/alarms").status_code == 401
        assert httpx.get(f"{url}/api/alarms", headers=h("guess")).status_code == 401
        # analysts read but do not act
        assert httpx.get(f"{url}/api/alarms/{a1['alarm_id']}", headers=h("analyst")).status_code == 200
        assert httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/ack", json={}, headers=h("analyst")).status_code == 403
        # plants may not shelve
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/shelve", json={"duration": "1h", "reason": "x"},
                       headers=h("plant-al1"))
        assert r.status_code == 403

        # closing an active alarm is refused with its state
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/close", json={"disposition": "real_handled"},
                       headers=h("plant-al1"))
        assert r.status_code == 409 and r.json()["state"] == "active_unack"
        # bad bodies name the field
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/close", json={"disposition": "because"}, headers=h("plant-al1"))
        assert r.status_code == 422 and r.json()["field"] == "disposition"
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/ack", content=b"[1,2", headers=h("plant-al1"))
        assert r.status_code == 422
        r = httpx.post(f"{url}/api/alarms/{a2['alarm_id']}/shelve", json={"duration": "soon", "reason": "x"},
                       headers=h("sup-wj"))
        assert r.status_code == 422 and r.json()["field"] == "duration"

        # ack -> clear -> close
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/ack", json={"note": "on my way"}, headers=h("plant-al1"))
        assert r.status_code == 200 and r.json()["state"] == "active_ack" and r.json()["acked_by"] == "plant-al1"
        power(pub, "SZ-AL-0001", True, now - 1000)
        wait_for(lambda: alarm_of(url, "plant-al1", "SZ-AL-0001")["state"] == "cleared_ack", what="cleared")
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/close", json={"disposition": "other"}, headers=h("plant-al1"))
        assert r.status_code == 422 and r.json()["field"] == "note"
        r = httpx.post(f"{url}/api/alarms/{a1['alarm_id']}/close",
                       json={"disposition": "real_handled", "note": "breaker reset"}, headers=h("plant-al1"))
        assert r.status_code == 200, r.text
        closed = r.json()
        assert closed["state"] == "closed" and closed["disposition"] == "real_handled"
        assert closed["closed_by"] == "plant-al1"
        # the supervisor shelves the other one
        r = httpx.post(f"{url}/api/alarms/{a2['alarm_id']}/shelve", json={"duration": "30m", "reason": "breaker work"},
                       headers=h("sup-wj"))
        assert r.status_code == 200 and r.json()["shelve_reason"] == "breaker work"

        show = httpx.get(f"{url}/api/alarms/{a1['alarm_id']}", headers=h("plant-al1")).json()
        kinds = [e["kind"] for e in show["events"]]
        assert kinds[:1] == ["raised"] and "acked" in kinds and "cleared" in kinds and kinds[-1] == "closed"

        # the raised notice reached MQTT with the contract's fields and an acknowledge link
        n = wait_for(lambda: next((x for x in notices if x["site"] == "SZ-AL-0001"), None), what="a notice")
        assert n["reason"] == "raised" and n["tier"] == "plant"
        assert {"notice_id", "site", "reason", "tier", "sent_at", "alarms"} <= set(n)
        al = next(x for x in n["alarms"] if x["alarm_id"] == a1["alarm_id"])
        assert al["rule_id"] == "power_loss" and al["severity"] == "orange" and al["value"] == 0.0
        assert {"alarm_id", "rule_id", "tag", "severity", "state", "raised_at", "value", "message"} <= set(al)
    finally:
        pub.close()


def _links(notices: list[dict]) -> list[str]:
    out = [n["ack_url"] for n in notices if n.get("ack_url")]
    return out + [a["ack_url"] for n in notices for a in n.get("alarms", []) if a.get("ack_url")]


def test_acknowledge_link_from_a_notice(engine, mosquitto, notices) -> None:
    _, url = engine
    pub = Publisher(mosquitto.host, mosquitto.port, client_id="plant-gw2")
    now = int(time.time() * 1000)
    try:
        power(pub, "SZ-AL-0001", False, now - 2000)
        a = wait_for(lambda: alarm_of(url, "sup-wj", "SZ-AL-0001"), what="alarm")
        link = wait_for(lambda: next(iter(_links(notices)), None), what="an acknowledge link in the notice")
        assert link.startswith(url + "/ack/")
        token = link.rsplit("/", 1)[1]
        # tampered: one character changed -> refused, nothing changes
        bad = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert httpx.post(f"{url}/ack/{bad}").status_code == 403
        assert alarm_of(url, "sup-wj", "SZ-AL-0001")["state"] == "active_unack"
        # the page first, then the one-click acknowledgement
        assert httpx.get(link).status_code == 200
        r = httpx.post(link)
        assert r.status_code == 200, r.text
        assert a["alarm_id"] in [x["alarm_id"] for x in r.json()["acknowledged"]]
        acked = alarm_of(url, "sup-wj", "SZ-AL-0001")
        assert acked["state"] == "active_ack" and "notice" in acked["acked_by"]
    finally:
        pub.close()
