"""Issue 9, security: TLS to the broker with a self-signed CA, credentials from the environment, a wrong CA
refused visibly, and no secret in any log line (the engine runs as a real subprocess; its whole output is
grepped)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from enginekit import EngineProc, metric, new_metrics_port, readings_stats, wait_until, write_config
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from tlsbroker import SecureMosquitto, make_ca, make_server_cert

pytestmark = pytest.mark.integration

ENGINE_PASSWORD = "eng-S3cr3t-7f1c9a"  # distinctive, so a grep cannot miss it
PLANT_PASSWORD = "plant-S3cr3t-44be02"
T0 = 1_764_316_800_000


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "pki"
    ca, ca_key, ca_cert = make_ca(d, "ew-test-ca")
    cert, key = make_server_cert(d, ca_key, ca_cert)
    other_ca, _, _ = make_ca(d, "some-other-ca")
    return {"ca": ca, "cert": cert, "key": key, "other_ca": other_ca}


@pytest.fixture
def tls_broker(tmp_path: Path, pki: dict[str, Path]):
    b = SecureMosquitto(tmp_path / "broker", users={"engine": ENGINE_PASSWORD, "plant1": PLANT_PASSWORD},
                        tls=(pki["ca"], pki["cert"], pki["key"])).start()
    yield b
    b.stop()


class TlsPublisher:
    """A plant gateway: QoS 1 over TLS with its own user."""

    def __init__(self, broker: SecureMosquitto, ca: Path, user: str, password: str) -> None:
        self.acked = 0
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{user}", protocol=MQTTProtocolVersion.MQTTv311)
        self.c.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.c.username_pw_set(user, password)
        self.c.max_inflight_messages_set(1000)
        self.c.on_publish = lambda *a: self._inc()
        self._lock = threading.Lock()
        ok = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: ok.set() if not rc.is_failure else None
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        assert ok.wait(10), "the TLS publisher could not connect"

    def _inc(self) -> None:
        with self._lock:
            self.acked += 1

    def publish_readings(self, site: str, n: int) -> None:
        for i in range(n):
            self.c.publish(f"ew/{site}/telemetry", json.dumps({"tag": "tag_0", "ts": T0 + i, "value": 1.0}), qos=1)
        wait_until(lambda: self.acked >= n, 30, "broker acknowledged the publishes")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _engine(tmp_path: Path, broker: SecureMosquitto, ca: Path, password: str) -> EngineProc:
    port = new_metrics_port()
    cfg = write_config(
        tmp_path / "engine", broker.url, metrics_port=port, client_id="ew-tls",
        broker_extra=f'ca_file = "{ca}"\nusername_env = "EW_TEST_BROKER_USER"\npassword_env = "EW_TEST_BROKER_PASS"\n',
    )
    # -v: DEBUG logging, the most talkative the engine gets; the secret must not appear even there
    return EngineProc(cfg, tmp_path / "engine.log", port, args=["-v"],
                      env={"EW_TEST_BROKER_USER": "engine", "EW_TEST_BROKER_PASS": password})


def test_engine_ingests_over_tls_with_credentials_from_the_environment(tmp_path: Path, tls_broker, pki) -> None:
    eng = _engine(tmp_path, tls_broker, pki["ca"], ENGINE_PASSWORD).start()
    pub = None
    try:
        eng.wait_connected()
        pub = TlsPublisher(tls_broker, pki["ca"], "plant1", PLANT_PASSWORD)
        pub.publish_readings("SZ-AL-0001", 500)
        wait_until(lambda: eng.metric("earlywarn_store_readings_total") >= 500, 60, "500 readings stored")
    finally:
        if pub:
            pub.close()
        assert eng.stop() == 0
    assert readings_stats(tmp_path / "engine" / "ew.duckdb") == (500, 500)
    log = eng.log_text()
    assert "connected to 127.0.0.1" in log
    assert ENGINE_PASSWORD not in log
    # nor in the config (it names the variable) nor in the store
    assert ENGINE_PASSWORD.encode() not in (tmp_path / "engine" / "earlywarn.toml").read_bytes()
    assert ENGINE_PASSWORD.encode() not in (tmp_path / "engine" / "ew.duckdb").read_bytes()
    # the broker saw a TLS client authenticated as `engine`
    assert "u'engine'" in tls_broker.log_text() or "engine" in tls_broker.log_text()


def test_a_wrong_ca_fails_to_connect_visibly_and_never_logs_the_password(tmp_path: Path, tls_broker, pki) -> None:
    eng = _engine(tmp_path, tls_broker, pki["other_ca"], ENGINE_PASSWORD).start()
    try:
        wait_until(lambda: "cannot connect" in eng.log_text(), 30, "the engine to log why it cannot connect")
        # several reconnect attempts (reconnect_max 2 s): never connected
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert eng.metric("earlywarn_ingest_broker_connected") in (0.0, -1.0)
            time.sleep(0.2)
    finally:
        eng.stop()
    log = eng.log_text()
    assert "certificate verify failed" in log.lower(), log[-2000:]
    assert ENGINE_PASSWORD not in log


def test_a_wrong_password_is_refused_by_the_broker_visibly_and_never_logged(tmp_path: Path, tls_broker, pki) -> None:
    wrong = "wrong-S3cr3t-0d5e11"
    eng = _engine(tmp_path, tls_broker, pki["ca"], wrong).start()
    try:
        wait_until(lambda: "refused the connection" in eng.log_text(), 30, "the engine to log the refusal")
        assert metric(eng.port, "earlywarn_ingest_broker_connected") in (0.0, -1.0)
    finally:
        eng.stop()
    log = eng.log_text()
    assert "not authorized" in log.lower() or "bad user name or password" in log.lower(), log[-2000:]
    assert wrong not in log and ENGINE_PASSWORD not in log
