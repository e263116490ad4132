"""The documented broker configuration (deploy/mosquitto/mosquitto.conf + acl) starts as written, with only
its paths and ports moved into the test's folder: TLS listener with the password file and the ACL, the
engine ingests through it, anonymous clients are refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from brokers import free_port, mosquitto_binary, wait_for_port
from enginekit import EngineProc, new_metrics_port, readings_stats, wait_until, write_config
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from tlsbroker import REPO, make_ca, make_server_cert, write_password_file

pytestmark = pytest.mark.integration


def test_the_documented_mosquitto_conf_runs_and_the_engine_ingests_through_it(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca, ca_key, ca_cert = make_ca(pki, "deploy-ca")
    cert, key = make_server_cert(pki, ca_key, ca_cert)
    passwd = write_password_file(tmp_path / "passwd", {"earlywarn": "pw-eng-0a9b", "SZ-AL-0001": "pw-gw-c4d2"})
    tls_port, plain_port = free_port(), free_port()
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    # only paths, ports and the log destination change; every other line is used as shipped
    for old, new in {
        "/var/lib/mosquitto/": f"{tmp_path}/",
        "/etc/mosquitto/certs/ca.pem": str(ca), "/etc/mosquitto/certs/server.pem": str(cert),
        "/etc/mosquitto/certs/server.key": str(key), "/etc/mosquitto/passwd": str(passwd),
        "/etc/mosquitto/acl": str(REPO / "deploy" / "mosquitto" / "acl"),
        "listener 8883 0.0.0.0": f"listener {tls_port} 127.0.0.1", "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
        "log_dest syslog": f"log_dest file {tmp_path}/mosquitto.log",
    }.items():
        assert old in conf, old
        conf = conf.replace(old, new)
    assert re.search(r"^max_inflight_messages 1000$", conf, re.MULTILINE)
    if os.geteuid() == 0:
        conf = "user root\n" + conf  # as root mosquitto would drop to `mosquitto`, who cannot write tmp_path
    (tmp_path / "mosquitto.conf").write_text(conf)
    broker = subprocess.Popen([mosquitto_binary(), "-c", str(tmp_path / "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    eng = None
    try:
        wait_for_port("127.0.0.1", tls_port)
        wait_for_port("127.0.0.1", plain_port)
        # anonymous: refused on the plain listener
        anon = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=MQTTProtocolVersion.MQTTv5)
        refused = threading.Event()
        anon.on_connect = lambda c, u, f, rc, p: refused.set() if rc.is_failure else None
        anon.connect("127.0.0.1", plain_port)
        anon.loop_start()
        assert refused.wait(10)
        anon.loop_stop()
        # the engine over TLS with its user from the environment
        port = new_metrics_port()
        cfg = write_config(tmp_path / "engine", f"mqtts://127.0.0.1:{tls_port}", client_id="ew-deploy",
                           metrics_port=port,
                           broker_extra=f'ca_file = "{ca}"\nusername_env = "EW_D_USER"\npassword_env = "EW_D_PASS"\n')
        eng = EngineProc(cfg, tmp_path / "engine.log", port,
                         env={"EW_D_USER": "earlywarn", "EW_D_PASS": "pw-eng-0a9b"}).start()
        eng.wait_connected()
        gw = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw", protocol=MQTTProtocolVersion.MQTTv5)
        gw.username_pw_set("SZ-AL-0001", "pw-gw-c4d2")
        gw.tls_set(ca_certs=str(ca))
        gw.connect("127.0.0.1", tls_port)
        gw.loop_start()
        infos = [gw.publish("ew/SZ-AL-0001/telemetry", json.dumps({"tag": "tag_0", "ts": 1_764_316_800_000 + i,
                                                                   "value": 1}), qos=1) for i in range(100)]
        for info in infos:
            info.wait_for_publish(10)
        wait_until(lambda: eng.metric("earlywarn_store_readings_total") >= 100, 30, "100 readings stored")
        gw.disconnect()
        gw.loop_stop()
    finally:
        if eng is not None:
            eng.stop()
        broker.terminate()
        broker.wait(10)
    assert readings_stats(tmp_path / "engine" / "ew.duckdb") == (100, 100)
    assert "pw-eng-0a9b" not in eng.log_text()
